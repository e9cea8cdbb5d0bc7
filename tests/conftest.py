"""Shared tolerances and helpers (exposed as fixtures: in importlib mode tests cannot
import helper modules from tests/)."""
import copy

import numpy as np
import pytest

# C path vs reference, per dtype.  rtol is relative to each entry; entries near zero (e.g.
# gradients of saturated sigmoids, deep layers) are compared with an absolute tolerance
# atol = atol_scale * max|desired| of the array, i.e. relative to the array's own scale.
# float32: a gradient entry 1e-6 of its array's largest one carries float32 rounding of the
# large terms it was summed from, so entrywise 1e-5 cannot hold for it.  Measured normwise
# (max|fast - ref| / max|ref|) on [301,257,129,10], [784,30,10], [17,33,15,9,5] with m = 1,
# 10, 32: 2.6e-7 .. 3.8e-6, the same order as the float32 reference's own error against a
# float64 computation on the same values (2.1e-7 .. 4.8e-6).
TOL = {
    np.float64: dict(rtol=1e-12, atol_scale=1e-14),
    np.float32: dict(rtol=1e-5, atol_scale=1e-5),
}


def _close(actual, desired, dtype, what="", rtol=None, atol_scale=None):
    t = TOL[np.dtype(dtype).type]
    rtol = t["rtol"] if rtol is None else rtol
    atol_scale = t["atol_scale"] if atol_scale is None else atol_scale
    desired = np.asarray(desired)
    atol = atol_scale * (float(np.abs(desired).max()) if desired.size else 0.0)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol, err_msg=what)


@pytest.fixture
def assert_close():
    """assert_close(actual, desired, dtype, what='') with the per-dtype tolerances above."""
    return _close


@pytest.fixture
def assert_params_close():
    """Every weight and bias of two networks, C path (actual) vs reference (desired)."""
    def check(fast, ref, dtype, **kw):
        for l, (a, d) in enumerate(zip(fast.weights, ref.weights), start=1):
            _close(a, d, dtype, f"weights of layer {l}", **kw)
        for l, (a, d) in enumerate(zip(fast.biases, ref.biases), start=1):
            _close(a, d, dtype, f"biases of layer {l}", **kw)
    return check


@pytest.fixture
def batch():
    """batch(sizes, m, seed) -> X in [0, 1) of shape (m, n_0), Y in [0, 1) of shape (m, n_L)."""
    def make(sizes, m, seed=0):
        rng = np.random.default_rng(seed)
        return rng.random((m, sizes[0])), rng.random((m, sizes[-1]))
    return make


@pytest.fixture
def exact_gradient():
    """exact_gradient(weights, biases, X, Y) -> (nabla_b, nabla_w) of a sigmoid network with
    the quadratic cost, in long double (_ld_trace)."""
    def exact(weights, biases, X, Y):
        return _ld_trace(weights, biases, ("sigmoid",) * len(weights), "quadratic", X, Y)[3:]
    return exact


def _central_differences(net, X, Y, h):
    """(dC/db, dC/dw) for every parameter by (C(p + h) - C(p - h)) / 2h, on net's own
    parameter arrays (restored after each entry), as lists of arrays in net's layer order."""
    grads_b, grads_w = [], []
    for params, grads in ((net.biases, grads_b), (net.weights, grads_w)):
        for p in params:
            g = np.empty_like(p)
            for idx in np.ndindex(p.shape):
                keep = p[idx]
                p[idx] = keep + h
                c_plus = net.cost(X, Y)
                p[idx] = keep - h
                c_minus = net.cost(X, Y)
                p[idx] = keep
                g[idx] = (c_plus - c_minus) / (2 * h)
            grads.append(g)
    return grads_b, grads_w


@pytest.fixture
def central_differences():
    """central_differences(net, X, Y, h) -> (grads_b, grads_w) by central differences."""
    return _central_differences


@pytest.fixture
def tol():
    """The per-dtype tolerances: tol[np.float64] -> dict(rtol=..., atol_scale=...)."""
    return TOL


@pytest.fixture
def exact_shadow():
    """exact_shadow(net) -> a long-double twin to train alongside net (see _LDShadow)."""
    return _LDShadow


# ---- an independent long-double implementation: the "truth" trajectories are measured
# against (the reference's own distance from it is the rounding slack allowed) -------------

def _ld_act(name, z):
    if name == "sigmoid":
        with np.errstate(over="ignore"):
            return 1 / (1 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.where(z > 0, z, 0)
    if name == "identity":
        return z
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _ld_prime(name, z, a):
    return {"sigmoid": lambda: a * (1 - a), "tanh": lambda: 1 - a * a,
            "relu": lambda: (z > 0).astype(z.dtype), "identity": lambda: np.ones_like(z)}[name]()


def _ld_trace(weights, biases, acts, cost, X, Y):
    """z, a, delta, nabla_b, nabla_w of the batch-average cost in np.longdouble (80-bit on
    x86-64), computed from the given (already rounded) parameters and data."""
    ld = np.longdouble
    W = [np.asarray(w, dtype=ld) for w in weights]
    X, Y = np.asarray(X, dtype=ld), np.asarray(Y, dtype=ld)
    m = X.shape[0]
    A, Z = [X], []
    for w, b, f in zip(W, biases, acts):
        Z.append(A[-1] @ w.T + np.asarray(b, dtype=ld))
        A.append(_ld_act(f, Z[-1]))
    a, z, out = A[-1], Z[-1], acts[-1]
    g = a - Y                                   # dC_x/da for the quadratic cost
    if cost == "cross-entropy":                 # sigmoid: dC_x/dz = a - y
        delta = a - Y
    elif cost == "log-likelihood":              # dC_x/dz_k = -sum_j y_j (delta_jk - a_k)
        delta = a * Y.sum(axis=1, keepdims=True) - Y
    elif out == "softmax":                      # Jacobian diag(a) - a a^T applied to g
        delta = a * g - a * (a * g).sum(axis=1, keepdims=True)
    else:
        delta = g * _ld_prime(out, z, a)
    delta = delta / m
    D, nb, nw = [None] * len(W), [None] * len(W), [None] * len(W)
    for l in range(len(W) - 1, -1, -1):
        D[l] = delta
        nb[l] = delta.sum(axis=0)
        nw[l] = delta.T @ A[l]
        if l:
            delta = (delta @ W[l]) * _ld_prime(acts[l - 1], Z[l - 1], A[l])
    return Z, A, D, nb, nw


class _LDShadow:
    """Follows a network in np.longdouble: same parameters, activations, cost and generator
    state; update_mini_batch / sgd with lmbda and mu as chapter 3 states them."""

    def __init__(self, net):
        ld = np.longdouble
        self.W = [np.asarray(w, dtype=ld) for w in net.weights]
        self.B = [np.asarray(b, dtype=ld) for b in net.biases]
        self.acts, self.cost = net.activations, net.cost_name
        self.vW = [np.zeros_like(w) for w in self.W]
        self.vB = [np.zeros_like(b) for b in self.B]
        self._rng = copy.deepcopy(net._rng)

    @property
    def weights(self):
        return self.W

    @property
    def biases(self):
        return self.B

    def gradient(self, X, Y):
        return _ld_trace(self.W, self.B, self.acts, self.cost, X, Y)[3:]

    def update_mini_batch(self, X, Y, eta, lmbda=0.0, n=None, mu=0.0):
        ld = np.longdouble
        nb, nw = self.gradient(X, Y)
        eta, mu = ld(eta), ld(mu)
        decay = eta * ld(lmbda) / ld(n) if lmbda else ld(0)
        if mu:
            for w, v, g in zip(self.W, self.vW, nw):
                v[...] = mu * v - eta * g - decay * w
                w += v
            for b, v, g in zip(self.B, self.vB, nb):
                v[...] = mu * v - eta * g
                b += v
        else:
            self.W = [(1 - decay) * w - eta * g for w, g in zip(self.W, nw)]
            self.B = [b - eta * g for b, g in zip(self.B, nb)]

    def sgd(self, X, Y, epochs, mbs, eta, lmbda=0.0, mu=0.0):
        n = X.shape[0]
        for _ in range(epochs):
            perm = self._rng.permutation(n)
            for k in range(0, n, mbs):
                rows = perm[k:k + mbs]
                self.update_mini_batch(X[rows], Y[rows], eta, lmbda, n, mu)


# C path vs reference after training (as test_crosscheck.py): the base per-dtype tolerance
# plus 8x the rounding noise of the reference, measured as its distance from the long-double
# shadow of the same steps.  One reference run is one draw of that noise, and a lucky draw
# can be 10x below the typical one: float32 tanh-tanh-quadratic with momentum (the most
# chaotic combination) once gave |C - shadow| 5e-5..2e-4 (plain..avx512) against
# |ref - shadow| 5e-6.  So the noise is the largest of two draws: the reference, and a second
# reference started one ulp away in every parameter (`nudged`; 1.4e-4 in that case).
# (Reversing the rows of each mini-batch is no second draw: the per-row work dominates the
# rounding and does not change.)  Measured over 10 seeds x 28 combinations x 3 modes, float32
# and float64, with the "default" weights as drawn and once more scaled by 1/sqrt(n_in)
# (2940 trajectories): the factor needed on top of the base tolerance reached 292 with the
# reference as the only draw, and at most 2.1 with both, so 8 leaves a 4x margin.  The
# reference itself must stay near the shadow (an independent check of its decay and
# momentum): measured max |ref - shadow| / max|ref| 3.4e-13 (float64) and 2.9e-4 (float32),
# bounds 1e-10 and 1e-2.
TRAJECTORY_BASE = {np.float64: dict(rtol=1e-12, atol_scale=1e-13),
                   np.float32: dict(rtol=1e-5, atol_scale=1e-5)}
SHADOW_MAX = {np.float64: 1e-10, np.float32: 1e-2}


def _check_trajectory(fast, ref, shadow, dtype, what="", noise=(), bound_reference=True):
    """fast against ref with the slack above; with bound_reference, also the reference (and
    each noise draw) against the shadow within SHADOW_MAX (measured for the cases of
    test_chapter3.py and test_crosscheck.py's fixed cases)."""
    base = TRAJECTORY_BASE[dtype]
    for name in ("weights", "biases"):
        arrays = zip(getattr(fast, name), getattr(ref, name), getattr(shadow, name),
                     *[getattr(n, name) for n in noise])
        for l, (a, d, t, *others) in enumerate(arrays, start=1):
            scale = float(np.abs(d).max())
            slack = 0.0
            for x in [d] + others:
                dist = float(np.abs(x.astype(np.longdouble) - t).max())
                assert not bound_reference or dist <= SHADOW_MAX[dtype] * scale, (
                    f"{what}: reference {name} of layer {l} is {dist:.3g} from the long-double shadow")
                slack = max(slack, dist)
            atol = base["atol_scale"] * scale + 8 * slack
            np.testing.assert_allclose(a, d, rtol=base["rtol"], atol=atol,
                                       err_msg=f"{what}: {name} of layer {l}")


@pytest.fixture
def ld_trace():
    """ld_trace(weights, biases, acts, cost, X, Y) -> (z, a, delta, nabla_b, nabla_w) in
    long double (see _ld_trace)."""
    return _ld_trace


@pytest.fixture
def check_trajectory():
    """check_trajectory(fast, ref, shadow, dtype, what="", noise=()) (see _check_trajectory)."""
    return _check_trajectory
