"""Shared tolerances and helpers (exposed as fixtures: in importlib mode tests cannot
import helper modules from tests/)."""
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


def _exact_gradient(weights, biases, X, Y):
    """The batch gradient in np.longdouble (80-bit on x86-64), matrix form, written
    independently of both implementations: the 'truth' that measures how far the float64
    and float32 reference itself is from exact arithmetic on the same values."""
    ld = np.longdouble
    W = [np.asarray(w, dtype=ld) for w in weights]
    B = [np.asarray(b, dtype=ld) for b in biases]
    A, SP = [np.asarray(X, dtype=ld)], []
    for w, b in zip(W, B):
        z = A[-1] @ w.T + b
        with np.errstate(over="ignore"):
            a = 1 / (1 + np.exp(-z))
        A.append(a)
        SP.append(a * (1 - a))
    m = A[0].shape[0]
    delta = (A[-1] - np.asarray(Y, dtype=ld)) / m * SP[-1]
    nb, nw = [None] * len(W), [None] * len(W)
    for l in range(len(W) - 1, -1, -1):
        nb[l] = delta.sum(axis=0)
        nw[l] = delta.T @ A[l]
        if l:
            delta = (delta @ W[l]) * SP[l - 1]
    return nb, nw


@pytest.fixture
def exact_gradient():
    return _exact_gradient


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


class _ExactShadow:
    """Follows a network's training in np.longdouble: same parameters (as long doubles),
    same generator state (so the same shuffles), same mini-batches, gradient from
    _exact_gradient.  Measures how far the float64/float32 reference itself drifts from
    exact arithmetic along a trajectory."""

    def __init__(self, net):
        import copy
        self.weights = [np.asarray(w, dtype=np.longdouble) for w in net.weights]
        self.biases = [np.asarray(b, dtype=np.longdouble) for b in net.biases]
        self._rng = copy.deepcopy(net._rng)

    def update_mini_batch(self, X, Y, eta):
        nb, nw = _exact_gradient(self.weights, self.biases, np.asarray(X), np.asarray(Y))
        eta = np.longdouble(eta)
        self.biases = [b - eta * g for b, g in zip(self.biases, nb)]
        self.weights = [w - eta * g for w, g in zip(self.weights, nw)]

    def sgd(self, X, Y, epochs, mini_batch_size, eta):
        n = X.shape[0]
        for _ in range(epochs):
            perm = self._rng.permutation(n)
            for k in range(0, n, mini_batch_size):
                rows = perm[k:k + mini_batch_size]
                self.update_mini_batch(X[rows], Y[rows], eta)


@pytest.fixture
def exact_shadow():
    """exact_shadow(net) -> a long-double twin to train alongside net (see _ExactShadow)."""
    return _ExactShadow
