"""Nesterov momentum and Adam: the C path against the reference per step and over epochs of
sgd, and both against an independent statement of PyTorch's update equations (written out
below in long double, as torch.optim documents them), and against torch itself when it is
installed.  Then the optimizer's state: Adam's step count, the switch between rules, copies
and pickles, and the arguments' validation."""
import copy
import pickle

import numpy as np
import pytest

import cbackprop
from cbackprop import reference

SIZES = [7, 9, 6, 4]
KW = dict(activations=["tanh", "sigmoid", "sigmoid"], cost="cross-entropy", init="default")
# (optimizer, keyword arguments of the public methods), with and without L2
RULES = [
    ("nesterov", dict(mu=0.7)),
    ("adam", dict()),
    ("adam", dict(betas=(0.8, 0.99), eps=1e-6)),
]


class TorchShadow:
    """PyTorch's torch.optim.SGD(nesterov=True) and torch.optim.Adam, as their documentation
    states the algorithms, in np.longdouble, following a network (same parameters,
    activations, cost and generator), with weight_decay = lmbda / n on the weights only
    (network2 does not decay biases).  Gradients from conftest's long-double backprop."""

    def __init__(self, net, ld_trace, optimizer, mu=0.0, betas=(0.9, 0.999), eps=1e-8):
        ld = np.longdouble
        self.params = [np.asarray(w, dtype=ld) for w in net.weights] + [np.asarray(b, dtype=ld) for b in net.biases]
        self.L = len(net.weights)
        self.acts, self.cost, self.trace = net.activations, net.cost_name, ld_trace
        self.optimizer, self.mu, self.betas, self.eps = optimizer, ld(mu), betas, ld(eps)
        self.buf = [None] * len(self.params)           # SGD's momentum_buffer
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0
        self._rng = copy.deepcopy(net._rng)

    @property
    def weights(self):
        return self.params[:self.L]

    @property
    def biases(self):
        return self.params[self.L:]

    def step(self, X, Y, lr, lmbda=0.0, n=None):
        ld = np.longdouble
        nb, nw = self.trace(self.weights, self.biases, self.acts, self.cost, X, Y)[3:]
        grads = list(nw) + list(nb)
        lr, wd = ld(lr), (ld(lmbda) / ld(n) if lmbda else ld(0))
        self.t += 1
        for i, (p, g) in enumerate(zip(self.params, grads)):
            decay = wd if i < self.L else ld(0)
            g = g + decay * p
            if self.optimizer == "nesterov":       # SGD(momentum=mu, dampening=0, nesterov=True)
                self.buf[i] = g.copy() if self.buf[i] is None else self.mu * self.buf[i] + g
                g = g + self.mu * self.buf[i]
                p -= lr * g
            else:                                  # Adam(betas, eps), amsgrad=False
                b1, b2 = ld(self.betas[0]), ld(self.betas[1])
                self.m[i] = b1 * self.m[i] + (1 - b1) * g
                self.v[i] = b2 * self.v[i] + (1 - b2) * g * g
                m_hat = self.m[i] / (1 - b1 ** self.t)
                v_hat = self.v[i] / (1 - b2 ** self.t)
                p -= lr * m_hat / (np.sqrt(v_hat) + self.eps)

    def sgd(self, X, Y, epochs, mbs, eta, lmbda=0.0):
        n = X.shape[0]
        for _ in range(epochs):
            perm = self._rng.permutation(n)
            for k in range(0, n, mbs):
                rows = perm[k:k + mbs]
                self.step(X[rows], Y[rows], eta, lmbda, n)


def make(cls, dtype, seed=0, **kw):
    return cls(SIZES, dtype=dtype, seed=seed, **{**KW, **kw})


def data(m, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, SIZES[0])), rng.random((m, SIZES[-1]))


def opt_kwargs(rule, kw):
    out = dict(optimizer=rule, **kw)
    shadow = dict(mu=kw.get("mu", 0.0), betas=kw.get("betas", (0.9, 0.999)), eps=kw.get("eps", 1e-8))
    return out, shadow


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("lmbda", [0.0, 3.0])
@pytest.mark.parametrize("rule,kw", RULES)
def test_steps_match_reference_and_pytorchs_equations(rule, kw, lmbda, dtype, ld_trace, check_trajectory):
    """20 update_mini_batch steps: C vs reference within the trajectory slack, and the
    reference within SHADOW_MAX of PyTorch's equations in long double."""
    fast, ref = make(cbackprop.Network, dtype), make(reference.Network, dtype)
    kwargs, skw = opt_kwargs(rule, kw)
    shadow = TorchShadow(ref, ld_trace, rule, **skw)
    X, Y = data(60)
    for k in range(20):
        rows = slice(3 * k, 3 * k + 3)
        for net in (fast, ref):
            net.update_mini_batch(X[rows], Y[rows], 0.05, lmbda=lmbda, n=60, **kwargs)
        shadow.step(X[rows], Y[rows], 0.05, lmbda, 60)
    check_trajectory(fast, ref, shadow, dtype, f"{rule} {kw} lmbda={lmbda}")
    if rule == "adam":
        assert fast._engine.adam_steps == ref._counters()[0] == 20


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("rule,kw", RULES)
def test_sgd_epochs_match_reference_and_pytorchs_equations(rule, kw, dtype, ld_trace, check_trajectory):
    fast, ref = make(cbackprop.Network, dtype, seed=3), make(reference.Network, dtype, seed=3)
    kwargs, skw = opt_kwargs(rule, kw)
    shadow = TorchShadow(ref, ld_trace, rule, **skw)
    X, Y = data(53, seed=4)
    hf = fast.sgd(X, Y, 3, 8, 0.02, lmbda=2.0, monitor_training_cost=True, **kwargs)
    hr = ref.sgd(X, Y, 3, 8, 0.02, lmbda=2.0, monitor_training_cost=True, **kwargs)
    shadow.sgd(X, Y, 3, 8, 0.02, lmbda=2.0)
    check_trajectory(fast, ref, shadow, dtype, f"{rule} {kw}")
    np.testing.assert_allclose([r["training_cost"] for r in hf], [r["training_cost"] for r in hr],
                               rtol=1e-10 if dtype == np.float64 else 1e-4)
    if rule == "adam":                       # one Adam step per mini-batch: 3 epochs of 7
        assert fast._engine.adam_steps == ref._counters()[0] == 21


def test_one_step_equals_the_textbook_formulas_exactly_enough():
    """One Adam step and one Nesterov step from zero state in float64, the reference and the
    C path against the closed forms (t = 1: m_hat = g, v_hat = g^2, so the step is
    -eta g / (|g| + eps); Nesterov's first step is -eta (1 + mu) g - decay w (1 + mu))."""
    X, Y = data(5)
    for cls in (cbackprop.Network, reference.Network):
        net = make(cls, np.float64)
        w0 = [w.copy() for w in net.weights]
        g = net.backprop(X, Y)[1]
        net.update_mini_batch(X, Y, 0.01, optimizer="adam")
        for w, a, d in zip(net.weights, w0, g):
            np.testing.assert_allclose(w, a - 0.01 * d / (np.abs(d) + 1e-8), rtol=1e-13, atol=1e-15)
        net = make(cls, np.float64)
        net.update_mini_batch(X, Y, 0.1, optimizer="nesterov", mu=0.5, lmbda=1.0, n=10)
        for w, a, d in zip(net.weights, w0, g):
            np.testing.assert_allclose(w, a - 1.5 * (0.1 * d + 0.01 * a), rtol=1e-13, atol=1e-15)


def test_torch_itself_when_installed():
    torch = pytest.importorskip("torch")
    X, Y = data(12)
    for rule, kw in RULES:
        net = make(reference.Network, np.float64)
        fast = make(cbackprop.Network, np.float64)
        params = [torch.tensor(p.copy(), requires_grad=True) for p in net.weights + net.biases]
        L = len(net.weights)
        groups = [{"params": params[:L], "weight_decay": 2.0 / 12}, {"params": params[L:], "weight_decay": 0.0}]
        if rule == "adam":
            opt = torch.optim.Adam(groups, lr=0.01, betas=kw.get("betas", (0.9, 0.999)), eps=kw.get("eps", 1e-8))
        else:
            opt = torch.optim.SGD(groups, lr=0.01, momentum=kw["mu"], nesterov=True)
        for _ in range(5):
            nb, nw = net.backprop(X, Y)
            for p, g in zip(params, nw + nb):
                p.grad = torch.tensor(g)
            opt.step()
            for n_ in (net, fast):
                n_.update_mini_batch(X, Y, 0.01, lmbda=2.0, n=12, optimizer=rule, **kw)
        for p, a, b in zip(params, net.weights + net.biases, fast.weights + fast.biases):
            np.testing.assert_allclose(a, p.detach().numpy(), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(b, p.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", [cbackprop.Network, reference.Network])
def test_apply_gradient_takes_the_rule_of_update_mini_batch(cls, assert_params_close):
    X, Y = data(12)
    for rule, kw in RULES:
        a, b = make(cls, np.float64), make(cls, np.float64)
        for k in range(3):
            a.update_mini_batch(X[4 * k:4 * k + 4], Y[4 * k:4 * k + 4], 0.05, lmbda=1.0, n=12, optimizer=rule, **kw)
            b.accumulate_gradient(X[4 * k:4 * k + 2], Y[4 * k:4 * k + 2])
            b.accumulate_gradient(X[4 * k + 2:4 * k + 4], Y[4 * k + 2:4 * k + 4])
            b.apply_gradient(0.05, lmbda=1.0, n=12, optimizer=rule, **kw)
        assert_params_close(b, a, np.float64)
        assert a._counters()[0] == b._counters()[0] == (3 if rule == "adam" else 0)


@pytest.mark.parametrize("cls", [cbackprop.Network, reference.Network])
def test_switching_between_momentum_and_adam_starts_the_new_state_from_zero(cls):
    """Adam's first moment and the momentum velocity share the engine's buffer: a switch
    zeroes it (and Adam's step count), so that each rule starts as from scratch; momentum and
    Nesterov share the velocity (the same convention)."""
    X, Y = data(8)
    net, fresh = make(cls, np.float64), make(cls, np.float64)
    net.update_mini_batch(X, Y, 0.1, mu=0.9)
    net.update_mini_batch(X, Y, 0.1, optimizer="nesterov", mu=0.9)
    assert np.abs(net._velocity()[0]).max() > 0
    fresh.weights, fresh.biases = net.weights, net.biases
    for n_ in (net, fresh):
        n_.update_mini_batch(X, Y, 0.01, optimizer="adam")
        n_.update_mini_batch(X, Y, 0.01, optimizer="adam")
    assert net._counters()[0] == fresh._counters()[0] == 2
    for a, b in zip(net.weights + net._moments(), fresh.weights + fresh._moments()):
        np.testing.assert_array_equal(a, b)
    net.update_mini_batch(X, Y, 0.1, mu=0.5)        # back to momentum: the velocity restarts
    fresh2 = make(cls, np.float64)
    fresh2.weights, fresh2.biases = fresh.weights, fresh.biases
    fresh2.update_mini_batch(X, Y, 0.1, mu=0.5)
    for a, b in zip(net.weights + net._velocity(), fresh2.weights + fresh2._velocity()):
        np.testing.assert_array_equal(a, b)
    assert net._counters()[0] == 0


@pytest.mark.parametrize("cls", [cbackprop.Network, reference.Network])
@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_copies_carry_adams_state(cls, how):
    X, Y = data(30)
    net = make(cls, np.float32, seed=5)
    net.sgd(X, Y, 2, 7, 0.01, optimizer="adam", betas=(0.85, 0.995))
    other = pickle.loads(pickle.dumps(net)) if how == "pickle" else copy.deepcopy(net)
    assert other._counters() == net._counters() == (10.0, 2)
    for n_ in (net, other):
        n_.sgd(X, Y, 1, 7, 0.01, optimizer="adam", betas=(0.85, 0.995))
    for a, b in zip(net.weights + net.biases + net._moments() + net._velocity(),
                    other.weights + other.biases + other._moments() + other._velocity()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cls", [cbackprop.Network, reference.Network])
def test_adam_ignores_the_weight_decay_factor_rule(cls):
    """The factor 1 - eta lmbda / n must stay positive for SGD's multiplicative decay; Adam
    adds (lmbda / n) w to the gradient instead, so the rule does not apply."""
    X, Y = data(4)
    net = make(cls, np.float64)
    with pytest.raises(ValueError, match="weight decay factor"):
        net.update_mini_batch(X, Y, 2.0, lmbda=1.0, n=2)
    net.update_mini_batch(X, Y, 2.0, lmbda=1.0, n=2, optimizer="adam")
    assert all(np.isfinite(w).all() for w in net.weights)


@pytest.mark.parametrize("cls", [cbackprop.Network, reference.Network])
@pytest.mark.parametrize("kwargs,error,match", [
    (dict(optimizer="rmsprop"), ValueError, r"optimizer must be one of \('sgd', 'nesterov', 'adam'\).*'rmsprop'"),
    (dict(optimizer=1), TypeError, r"optimizer must be one of .* got 1"),
    (dict(optimizer="nesterov"), ValueError, r"optimizer='nesterov' needs momentum mu > 0"),
    (dict(optimizer="adam", mu=0.9), ValueError, r"optimizer='adam' takes no momentum mu .* got mu=0.9"),
    (dict(optimizer="adam", betas=(0.9, 1.0)), ValueError, r"betas\[1\] must lie in \[0, 1.0\), got 1.0"),
    (dict(optimizer="adam", betas=(-0.1, 0.9)), ValueError, r"betas\[0\] must be a finite number >= 0, got -0.1"),
    (dict(optimizer="adam", betas=0.9), TypeError, r"betas must be a pair of numbers .* got 0.9"),
    (dict(optimizer="adam", betas=(0.9,)), ValueError, r"betas must be a pair .* got 1 values"),
    (dict(optimizer="adam", eps=0.0), ValueError, r"eps must be a finite number > 0, got 0.0"),
    (dict(optimizer="adam", eps=1e-300), ValueError, r"eps must be at least .* normal float32 number, got 1e-300"),
    (dict(optimizer="adam", eps="1e-8"), TypeError, r"eps must be a real number, got '1e-8'"),
])
def test_bad_optimizer_arguments_are_refused_and_change_nothing(cls, kwargs, error, match):
    X, Y = data(6)
    net = make(cls, np.float32)
    before = copy.deepcopy(net)
    for call in (lambda: net.update_mini_batch(X, Y, 0.1, **kwargs),
                 lambda: net.sgd(X, Y, 1, 3, 0.1, **kwargs)):
        with pytest.raises(error, match=match):
            call()
    net.accumulate_gradient(X, Y)
    with pytest.raises(error, match=match):
        net.apply_gradient(0.1, **kwargs)
    net.zero_gradient()
    for a, b in zip(net.weights + net.biases, before.weights + before.biases):
        np.testing.assert_array_equal(a, b)
    assert net._counters() == before._counters() and not net._velocity() and not net._moments()


def test_divergence_with_adam_restores_the_moments():
    """A divergence in an Adam epoch leaves the parameters, both moments and the step count
    as they were before the mini-batch that made a parameter non-finite (the replay)."""
    X, Y = data(40)
    X[25:] = 1e308                          # rows whose gradient overflows when their turn comes
    for cls in (cbackprop.Network, reference.Network):
        net = make(cls, np.float64, seed=2, activations=["relu", "relu", "sigmoid"], init="large")
        with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match=r"mini-batch (\d+) of 8") as info:
            net.sgd(X, Y, 1, 5, 0.01, optimizer="adam")
        k = info.value.mini_batch
        assert net._counters()[0] == k - 1
        assert all(np.isfinite(a).all() for a in net.weights + net._moments() + net._velocity())
