"""Dropout (chapter 3): the masks' generator (Philox4x32-10 against Random123's known answers,
NumPy against the engine's bits), the C path against the reference and a long-double
statement with the same masks, bitwise the same for any thread count, the reference's
gradient with a fixed mask against central finite differences, the masks' statistics, what
dropout leaves alone, the seed, copies, the divergence search, and validation."""
import copy
import pickle

import numpy as np
import pytest

import cbackprop
from cbackprop import _core, _dropout, reference

# Random123's known-answer vectors for philox4x32_R(10, ctr, key) (kat_vectors)
KNOWN = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
         ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
         ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
          (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]

SIZES = [6, 8, 7, 3]
KW = dict(activations=["sigmoid", "tanh", "sigmoid"], cost="cross-entropy", init="default")


@pytest.mark.parametrize("ctr,key,want", KNOWN)
def test_philox_known_answers(ctr, key, want):
    assert tuple(int(w) for w in _dropout.philox4x32(ctr, key)) == want
    assert tuple(_core.philox4x32(list(ctr), list(key))) == want


def test_numpy_bits_equal_the_engines():
    rng = np.random.default_rng(0)
    for _ in range(20):
        seed = int(rng.integers(0, 2**63)) * 2 + int(rng.integers(0, 2))
        rnd, batch = int(rng.integers(0, 2**40)), int(rng.integers(0, 2**30))
        layer = int(rng.integers(1, 256))
        rows, units = rng.integers(0, 2**32, 4), rng.integers(0, 2**32, 5)
        got = _dropout.dropout_bits(seed, rnd, batch, layer, rows[:, None].astype(np.uint64),
                                    units[None, :].astype(np.uint64))
        want = [[_core.dropout_bits(seed, rnd, batch, layer, int(i), int(j)) for j in units] for i in rows]
        np.testing.assert_array_equal(got, np.array(want, dtype=np.uint32))


# ---- a long-double statement with the same masks ----------------------------------------------
def _act(name, z):
    return {"sigmoid": lambda: 1 / (1 + np.exp(-z)), "tanh": lambda: np.tanh(z)}[name]()


def _prime(name, a):
    return a * (1 - a) if name == "sigmoid" else 1 - a * a


class DropoutShadow:
    """network2's SGD with L2 (no momentum) in np.longdouble, dropping the units the masks of
    cbackprop._dropout say: layer l + 1 sees a^l (.) keep^l; BP2 through the mask; BP4 on the
    kept activations; cross-entropy output (delta^L = a - y)."""

    def __init__(self, net):
        ld = np.longdouble
        self.W = [np.asarray(w, dtype=ld) for w in net.weights]
        self.B = [np.asarray(b, dtype=ld) for b in net.biases]
        self.acts, self.rates, self.seed = net.activations, net.dropout, net.dropout_seed
        self.dtype, self.round = net.dtype, 0
        self._rng = copy.deepcopy(net._rng)

    @property
    def weights(self):
        return self.W

    @property
    def biases(self):
        return self.B

    def keep(self, m, batch):
        return [np.asarray(_dropout.dropout_keep(self.seed, self.round, batch, l, m, n, p, self.dtype),
                           dtype=np.longdouble) if p else None
                for l, (n, p) in enumerate(zip([w.shape[0] for w in self.W[:-1]], self.rates), start=1)]

    def step(self, X, Y, eta, lmbda, n, batch):
        ld = np.longdouble
        X, Y, m = np.asarray(X, dtype=ld), np.asarray(Y, dtype=ld), X.shape[0]
        keep = self.keep(m, batch)
        A, seen = [], [X]
        for l, (w, b, f) in enumerate(zip(self.W, self.B, self.acts)):
            A.append(_act(f, seen[-1] @ w.T + b))
            seen.append(A[-1] * keep[l] if l < len(keep) and keep[l] is not None else A[-1])
        delta = (A[-1] - Y) / m
        grads = [None] * len(self.W)
        for l in range(len(self.W) - 1, -1, -1):
            grads[l] = (delta.T @ seen[l], delta.sum(axis=0))
            if l:
                delta = delta @ self.W[l]
                if keep[l - 1] is not None:
                    delta = delta * keep[l - 1]
                delta = delta * _prime(self.acts[l - 1], A[l - 1])
        decay = ld(eta) * ld(lmbda) / ld(n)
        for l, (gw, gb) in enumerate(grads):
            self.W[l] = (1 - decay) * self.W[l] - ld(eta) * gw
            self.B[l] = self.B[l] - ld(eta) * gb

    def update_mini_batch(self, X, Y, eta, lmbda, n):
        self.step(X, Y, eta, lmbda, n, 0)
        self.round += 1

    def sgd(self, X, Y, epochs, mbs, eta, lmbda):
        n = X.shape[0]
        for _ in range(epochs):
            perm = self._rng.permutation(n)
            for k, lo in enumerate(range(0, n, mbs)):
                rows = perm[lo:lo + mbs]
                self.step(X[rows], Y[rows], eta, lmbda, n, k)
            self.round += 1


def make(cls, dtype=np.float64, seed=0, dropout=(0.5, 0.3), sizes=SIZES, **kw):
    return cls(sizes, dtype=dtype, seed=seed, dropout=dropout, **{**KW, **kw})


def data(m, n_in=6, n_out=3, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, n_in)), rng.random((m, n_out))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("sizes", [SIZES, [6, 256, 512, 3]], ids=str)   # (padded rows: net.c cbp_ld)
def test_steps_match_reference_and_the_masked_statement(dtype, sizes, check_trajectory):
    fast, ref = make(cbackprop.Network, dtype, sizes=sizes), make(reference.Network, dtype, sizes=sizes)
    shadow = DropoutShadow(ref)
    X, Y = data(40)
    for k in range(10):
        rows = slice(4 * k, 4 * k + 4)
        for net in (fast, ref, shadow):
            net.update_mini_batch(X[rows], Y[rows], 0.5, lmbda=1.0, n=40)
        for l, (a, b) in enumerate(zip(fast._engine.dropout_keep(4), ref.dropout_masks(4, k)), start=1):
            np.testing.assert_array_equal(a, b, err_msg=f"keep^{l} of step {k}")
    check_trajectory(fast, ref, shadow, dtype, "dropout steps")
    assert fast._engine.dropout_round == ref._counters()[1] == 10


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("rates", [(0.5, 0.3), (0.0, 0.8), 0.25])
def test_sgd_epochs_match_reference_and_the_masked_statement(dtype, rates, check_trajectory):
    fast, ref = make(cbackprop.Network, dtype, seed=7, dropout=rates), make(reference.Network, dtype, seed=7,
                                                                            dropout=rates)
    shadow = DropoutShadow(ref)
    X, Y = data(43, seed=2)
    for net in (fast, ref):
        net.sgd(X, Y, 3, 5, 0.3, lmbda=2.0)
    shadow.sgd(X, Y, 3, 5, 0.3, 2.0)
    check_trajectory(fast, ref, shadow, dtype, f"dropout {rates}")
    last = 43 - 8 * 5            # the last mini-batch of the last epoch: rows 40..42, k = 8
    for a, b in zip(fast._engine.dropout_keep(last), ref.dropout_masks(last, 2, 8)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("sizes", [[120, 400, 300, 10], [120, 512, 256, 10]], ids=str)
def test_masks_and_parameters_are_bitwise_the_same_on_1_2_and_3_threads(sizes):
    # ([120, 512, 256, 10]: float32 rows of 512 are padded in the workspace, net.c: cbp_ld)
    rng = np.random.default_rng(5)
    X = rng.standard_normal((256, 120))
    labels = rng.integers(0, 10, 256)
    results, used = [], []
    for threads in (1, 2, 3):
        net = make(cbackprop.Network, np.float32, seed=4, dropout=[0.5, 0.2], sizes=sizes,
                   activations=["relu", "tanh", "softmax"], cost="log-likelihood")
        net.num_threads = threads
        net.sgd(X, labels, 2, 64, 0.05, mu=0.5)
        used.append(net._engine.last_epoch_threads)
        results.append([a.copy() for a in net.weights + net.biases] +
                       [k.copy() for k in net._engine.dropout_keep(64)])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)
    assert used[0] == 1 and all(u >= 1 for u in used)    # (a loaded machine may start fewer)


def test_reference_gradient_with_fixed_masks_matches_finite_differences():
    """BP1-BP4 with BP2 through the masks, against central differences of the cost of the
    thinned network (float64, every parameter)."""
    net = make(reference.Network, np.float64, seed=3, dropout=(0.4, 0.6))
    X, Y = data(5, seed=8)
    keep = net.dropout_masks(5, round=3, batch=2)
    assert all(k is not None and (k == 0).any() and (k > 0).any() for k in keep)
    nabla_b, nabla_w = net.backprop_with_masks(X, Y, keep)
    h = 1e-6
    for params, grads in ((net.biases, nabla_b), (net.weights, nabla_w)):
        for p, g in zip(params, grads):
            fd = np.empty_like(p)
            for idx in np.ndindex(p.shape):
                saved = p[idx]
                p[idx] = saved + h
                c_plus = net.cost_with_masks(X, Y, keep)
                p[idx] = saved - h
                c_minus = net.cost_with_masks(X, Y, keep)
                p[idx] = saved
                fd[idx] = (c_plus - c_minus) / (2 * h)
            np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)
    # a dropped unit gets no gradient on its incoming weights from this batch's rows
    plain = net.backprop(X, Y)
    assert not all(np.allclose(a, b) for a, b in zip(plain[1], nabla_w))


def test_the_step_descends_the_gradient_with_the_masks_of_its_round():
    """update_mini_batch with dropout is w <- w - eta nabla_w(masks of round r, batch 0)."""
    for cls in (cbackprop.Network, reference.Network):
        net, twin = make(cls, np.float64, seed=2), make(reference.Network, np.float64, seed=2)
        X, Y = data(6, seed=3)
        net.update_mini_batch(X, Y, 0.5)          # round 0
        net.update_mini_batch(X, Y, 0.5)          # round 1
        for r in (0, 1):
            nb, nw = twin.backprop_with_masks(X, Y, twin.dropout_masks(6, round=r))
            twin.weights = [w - 0.5 * g for w, g in zip(twin.weights, nw)]
            twin.biases = [b - 0.5 * g for b, g in zip(twin.biases, nb)]
        for a, b in zip(net.weights + net.biases, twin.weights + twin.biases):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_masks_drop_the_rate_and_scale_the_kept_units(p):
    m, n = 400, 500
    keep = _dropout.dropout_keep(12345, 3, 7, 1, m, n, p, np.float32)
    dropped = float((keep == 0).mean())
    assert abs(dropped - p) < 5 * np.sqrt(p * (1 - p) / (m * n))         # 5 sigma of a binomial
    assert set(np.unique(keep)) == {np.float32(0), np.float32(1 / (1 - p))}
    # rows, units, layers, mini-batches and rounds each get their own masks
    for args in ((12345, 3, 7, 2), (12345, 3, 8, 1), (12345, 4, 7, 1), (12346, 3, 7, 1)):
        other = _dropout.dropout_keep(args[0], args[1], args[2], args[3], m, n, p, np.float32)
        assert 0.3 * p * (1 - p) < float(((other == 0) != (keep == 0)).mean()) < 3 * p * (1 - p)


@pytest.mark.parametrize("cls", [cbackprop.Network, reference.Network])
def test_inference_and_backprop_use_the_whole_network(cls):
    with_dropout, without = make(cls, dropout=0.5), make(cls, dropout=None)
    X, Y = data(9)
    labels = np.arange(9) % 3
    assert with_dropout.dropout == (0.5, 0.5) and without.dropout == (0.0, 0.0)
    np.testing.assert_array_equal(with_dropout.feedforward(X), without.feedforward(X))
    np.testing.assert_array_equal(with_dropout.predict(X), without.predict(X))
    assert with_dropout.evaluate(X, labels) == without.evaluate(X, labels)
    assert with_dropout.cost(X, Y) == without.cost(X, Y)
    for a, b in zip(sum(with_dropout.backprop(X, Y), []), sum(without.backprop(X, Y), [])):
        np.testing.assert_array_equal(a, b)
    assert with_dropout.layer_speeds(X, Y) == without.layer_speeds(X, Y)


def test_rate_zero_is_no_dropout_and_trains_bitwise_as_without():
    X, Y = data(20)
    a, b = make(cbackprop.Network, dropout=[0.0, 0.0]), make(cbackprop.Network, dropout=None)
    assert a._engine.dropout is None
    for net in (a, b):
        net.sgd(X, Y, 2, 4, 0.5)
    for x, y in zip(a.weights, b.weights):
        np.testing.assert_array_equal(x, y)


def test_the_masks_seed_comes_from_the_networks_seed():
    a, b = make(cbackprop.Network, seed=11), make(reference.Network, seed=11)
    assert a.dropout_seed == b.dropout_seed == _dropout.mask_seed(11)
    assert a.dropout_seed == int(np.random.SeedSequence(11, spawn_key=(0x64726F70,)).generate_state(1, np.uint64)[0])
    assert make(cbackprop.Network, seed=12).dropout_seed != a.dropout_seed
    assert make(cbackprop.Network, seed=None).dropout_seed != make(cbackprop.Network, seed=None).dropout_seed
    # the generator of the initial parameters and shuffles is the one a network without dropout has
    c = make(cbackprop.Network, seed=11, dropout=None)
    for x, y in zip(a.weights, c.weights):
        np.testing.assert_array_equal(x, y)
    assert a._rng.bit_generator.state == c._rng.bit_generator.state


@pytest.mark.parametrize("cls", [cbackprop.Network, reference.Network])
@pytest.mark.parametrize("how", ["pickle", "deepcopy", "copy"])
def test_copies_continue_with_the_same_masks(cls, how):
    X, Y = data(30)
    net = make(cls, seed=None)
    net.sgd(X, Y, 2, 7, 0.4, mu=0.3)
    net.update_mini_batch(X[:5], Y[:5], 0.4)
    other = {"pickle": lambda n: pickle.loads(pickle.dumps(n)), "deepcopy": copy.deepcopy,
             "copy": copy.copy}[how](net)
    assert (other.dropout, other.dropout_seed, other._counters()) == (net.dropout, net.dropout_seed, net._counters())
    assert net._counters()[1] == 3
    for n_ in (net, other):
        n_.sgd(X, Y, 1, 7, 0.4, mu=0.3)
        n_.update_mini_batch(X[:5], Y[:5], 0.4)
    for a, b in zip(net.weights + net.biases, other.weights + other.biases):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cls", [cbackprop.Network, reference.Network])
def test_load_takes_dropout(cls, tmp_path):
    net = make(cls, seed=3)
    net.save(tmp_path / "net.npz")
    loaded = cls.load(tmp_path / "net.npz", seed=3, dropout=(0.5, 0.3))
    assert loaded.dropout == (0.5, 0.3) and loaded.dropout_seed == net.dropout_seed
    X, Y = data(10)
    for n_ in (net, loaded):
        n_.update_mini_batch(X, Y, 0.5)
    for a, b in zip(net.weights, loaded.weights):
        np.testing.assert_array_equal(a, b)


def test_divergence_with_dropout_is_found_by_bisection():
    """Mini-batch k of an epoch with dropout cannot be replayed alone: the epoch's prefixes
    are, and both paths name the same mini-batch and keep the parameters from before it,
    which equal a prefix epoch of k - 1 mini-batches from the epoch's start."""
    X, Y = data(60, seed=5)
    X[37] = 1e308                                  # its mini-batch (the 4th of 15 in this shuffle) overflows
    found = []
    for cls in (cbackprop.Network, reference.Network):
        net = make(cls, seed=6, activations=["relu", "relu", "sigmoid"], init="large")
        start = copy.deepcopy(net)
        with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match=r"mini-batch \d+ of 15") as info:
            net.sgd(X, Y, 1, 4, 0.1)
        k = info.value.mini_batch
        perm = copy.deepcopy(start._rng).permutation(60)
        assert 37 in perm[4 * (k - 1):4 * k]
        twin = copy.deepcopy(start)
        with np.errstate(all="ignore"):
            twin._epoch(twin._rows(X)[0], twin._targets(Y, 60, False), perm[:4 * (k - 1)], 4,
                        (0.1, 1.0, 0.0, 0.0, None))
        for a, b in zip(net.weights + net.biases, twin.weights + twin.biases):
            np.testing.assert_array_equal(a, b)
        found.append(k)
    assert found[0] == found[1]


@pytest.mark.parametrize("cls", [cbackprop.Network, reference.Network])
@pytest.mark.parametrize("dropout,error,match", [
    (1.0, ValueError, r"dropout must lie in \[0, 1.0\), got 1.0"),
    (-0.1, ValueError, r"dropout must be a finite number >= 0, got -0.1"),
    (float("nan"), ValueError, r"dropout must be a finite number >= 0, got nan"),
    ("0.5", TypeError, r"dropout must be a rate in \[0, 1\) or a list .* got '0.5'"),
    (True, TypeError, r"dropout must be a real number, got True"),
    ([0.5], ValueError, r"dropout must be one rate or one per hidden layer \(2 for sizes \[6, 8, 7, 3\]\), got 1"),
    ([0.5, 1.5], ValueError, r"dropout\[1\] must lie in \[0, 1.0\], got 1.5"),
    ([0.5, None], TypeError, r"dropout\[1\] must be a real number, got None"),
])
def test_bad_dropout_is_refused(cls, dropout, error, match):
    with pytest.raises(error, match=match):
        make(cls, dropout=dropout)


def test_dropout_needs_hidden_layers():
    with pytest.raises(ValueError, match=r"dropout applies to hidden layers, and sizes \[6, 3\] have none"):
        cbackprop.Network([6, 3], dropout=0.5)
    assert cbackprop.Network([6, 3], dropout=0.0).dropout == ()


def test_repr_shows_dropout():
    assert "dropout=[0.5, 0.3]" in repr(make(cbackprop.Network))
    assert "dropout" not in repr(make(cbackprop.Network, dropout=None))
