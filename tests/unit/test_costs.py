"""The cross-entropy and log-likelihood costs are computed from z^L (softplus and
log-sum-exp forms), so they are finite and accurate wherever the true cost is, including
outputs that saturate: a float32 sigmoid rounds to exactly 1.0 from z ~ 17, where
-ln(1 - a) of the rounded a is inf although the true cost is about z.

The truth is computed from the same z^L in np.longdouble (80-bit on x86-64: 64-bit
significand, exponent range to 1e4932) with the book's formulas written directly: for
cross-entropy y ln(1 + e^-z) + (1 - y) ln(1 + e^z) (= -[y ln a + (1-y) ln(1-a)]), for
log-likelihood ln(sum_k e^z_k) - z_j (= -ln a_j), so no shift or split of the
implementation's is reused; |z| <= 1000 keeps every e^z in range.  The implementation
works in float64 from z (exact for float32 z), so each term is good to a few float64 ulps
and the sums of non-negative terms to about 1e-15 relative; rtol 1e-13 leaves a margin of
about 100.  The quadratic cost is still computed from a^L, as before.
"""
import numpy as np
import pytest

import cbackprop
from cbackprop import reference

CLASSES = [cbackprop.Network, reference.Network]
IDS = ["C", "reference"]
DTYPES = [np.float32, np.float64]
LD = np.longdouble
RTOL = 1e-13


def ce_truth(Z, Y):
    """sum of y ln(1 + e^-z) + (1 - y) ln(1 + e^z) in long double."""
    z, y = np.asarray(Z, dtype=LD), np.asarray(Y, dtype=LD)
    return (y * np.log1p(np.exp(-z)) + (1 - y) * np.log1p(np.exp(z))).sum()


def ll_truth(Z, Y):
    """sum of y_j (ln sum_k e^z_k - z_j) in long double."""
    z, y = np.asarray(Z, dtype=LD), np.asarray(Y, dtype=LD)
    lse = np.log(np.exp(z).sum(axis=1, keepdims=True))
    return (y * (lse - z)).sum()


def identity_layer(cls, n, dtype, activation, cost):
    """[n, n] with w = I, b = 0: z^L = x exactly."""
    net = cls([n, n], activations=activation, cost=cost, dtype=dtype, seed=0)
    net.weights = [np.eye(n)]
    net.biases = [np.zeros(n)]
    return net


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_saturated_sigmoid_cross_entropy_is_finite_and_accurate(cls, dtype):
    # z from below saturation to far beyond (float32 sigma(z) == 1.0 from z ~ 17, float64
    # from z ~ 37), both signs, targets 0, 1 and in between
    z = np.array([[0.5, 17.0, 20.0, 40.0], [-17.0, -40.0, 80.0, -300.0], [300.0, 1000.0, -1000.0, 3.0]])
    Y = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 1.0], [0.25, 0.0, 1.0, 0.9]]).astype(dtype)
    net = identity_layer(cls, 4, dtype, "sigmoid", "cross-entropy")
    X = z.astype(dtype)
    if dtype == np.float32:
        assert (net.feedforward(X)[0, 2:] == 1.0).all()   # the saturation the old cost met as inf
    want = float(ce_truth(X, Y)) / 3
    got = net.cost(X, Y)
    assert np.isfinite(got) and got > 400
    np.testing.assert_allclose(got, want, rtol=RTOL)
    np.testing.assert_allclose(net.total_cost(X, Y, lmbda=0.0), want, rtol=RTOL)
    np.testing.assert_allclose(net.trace(X, Y).cost, want, rtol=RTOL)
    # one sample: C_x
    np.testing.assert_allclose(net.cost(X[1], Y[1]), float(ce_truth(X[1:2], Y[1:2])), rtol=RTOL)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_saturated_softmax_log_likelihood_is_finite_and_accurate(cls, dtype):
    z = np.array([[0.0, 200.0, -100.0], [50.0, 50.0, -900.0], [1e-3, 0.0, 2e-3], [-1000.0, 1000.0, 999.0]])
    Y = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.2, 0.3, 0.5]]).astype(dtype)
    net = identity_layer(cls, 3, dtype, "softmax", "log-likelihood")
    X = z.astype(dtype)
    if dtype == np.float32:
        assert net.feedforward(X)[0, 0] == 0.0            # a_y rounded to 0: -ln a_y was inf
    want = float(ll_truth(X, Y)) / 4
    got = net.cost(X, Y)
    assert np.isfinite(got) and got > 150
    np.testing.assert_allclose(got, want, rtol=RTOL)
    np.testing.assert_allclose(net.trace(X, Y).cost, want, rtol=RTOL)
    # labels give the same cost as their one-hot rows
    np.testing.assert_allclose(net.cost(X[:3], [0, 1, 2]), float(ll_truth(X[:3], Y[:3])) / 3, rtol=RTOL)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize("out, cost", [("sigmoid", "cross-entropy"), ("softmax", "log-likelihood")])
def test_cost_of_trained_networks_matches_long_double(cls, dtype, out, cost):
    """Ordinary networks and data: the cost from the network's own z^L agrees with the long
    double formula on that z^L, for cost, total_cost (its L2 term added exactly) and trace,
    which all give the same value."""
    rng = np.random.default_rng(5)
    sizes = [7, 12, 5]
    net = cls(sizes, activations=["tanh", out], cost=cost, dtype=dtype, seed=3)
    X = (4 * rng.standard_normal((40, 7))).astype(dtype)
    if cost == "cross-entropy":
        Y = rng.random((40, 5)).round(1).astype(dtype)
    else:
        Y = rng.dirichlet(np.ones(5), 40).astype(dtype)
    t = net.trace(X, Y)
    truth = (ce_truth if cost == "cross-entropy" else ll_truth)(t.z[-1], Y) / 40
    np.testing.assert_allclose(t.cost, float(truth), rtol=RTOL)
    assert net.cost(X, Y) == t.cost
    l2 = 0.5 * (0.7 / 40) * sum(float((w.astype(np.float64) ** 2).sum()) for w in net.weights)
    np.testing.assert_allclose(net.total_cost(X, Y, lmbda=0.7), float(truth) + l2, rtol=RTOL)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_the_two_paths_agree_on_saturated_costs(cls):
    """C path and reference from the same parameters: the same z^L up to rounding, so the
    same cost to float32 rounding of z (2^-24 relative, times |z|/C ~ 1 here)."""
    rng = np.random.default_rng(1)
    kw = dict(activations=["relu", "sigmoid"], cost="cross-entropy", dtype=np.float32, seed=4)
    fast, ref = cbackprop.Network([6, 9, 3], **kw), reference.Network([6, 9, 3], **kw)
    X = 30 * rng.random((25, 6))
    Y = (rng.random((25, 3)) > 0.5).astype(float)
    c, r = fast.cost(X, Y), ref.cost(X, Y)
    assert np.isfinite(c) and c > 10
    np.testing.assert_allclose(c, r, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_quadratic_cost_is_still_computed_from_the_activations(cls, dtype):
    rng = np.random.default_rng(2)
    net = cls([4, 6, 3], dtype=dtype, seed=1)
    X, Y = rng.random((11, 4)), rng.random((11, 3)).astype(dtype)
    A = net.feedforward(X).astype(np.float64)
    assert net.cost(X, Y) == pytest.approx(0.5 * ((Y - A) ** 2).sum() / 11, rel=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_sgd_monitors_report_the_stable_cost(cls, dtype):
    """monitor_training_cost and monitor_evaluation_cost on outputs that saturate (z up to
    about 40): finite, and total_cost's value."""
    rng = np.random.default_rng(3)
    net = cls([3, 2], cost="cross-entropy", dtype=dtype, seed=0)
    net.weights = [np.full((2, 3), 15.0)]
    X = rng.random((30, 3)) + 0.5
    Y = np.zeros((30, 2))
    Xe = rng.random((10, 3)) + 0.5
    hist = net.sgd(X, Y, 1, 30, 1e-30, lmbda=0.1, evaluation_data=(Xe, np.zeros((10, 2))),
                   monitor_training_cost=True, monitor_evaluation_cost=True)
    rec = hist[-1]
    assert np.isfinite(rec["training_cost"]) and rec["training_cost"] > 20
    assert rec["training_cost"] == pytest.approx(net.total_cost(X, Y, 0.1), rel=1e-15)
    assert rec["evaluation_cost"] == pytest.approx(net.total_cost(Xe, np.zeros((10, 2)), 0.1), rel=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_engine_predict_z_chunks_through_the_workspace(dtype):
    """Engine.predict_z (the C path's z^L): m_cap rows per forward pass, z^L copied from the
    workspace after each; a^L is predict's, z^L the trace's up to rounding, and softmax(z^L)
    is a^L."""
    rng = np.random.default_rng(4)
    net = cbackprop.Network([5, 7, 4], activations=["tanh", "softmax"], cost="log-likelihood", dtype=dtype,
                            seed=2)
    engine = net._engine
    engine.reserve(4)
    X = rng.standard_normal((11, 5)).astype(dtype)          # 4 + 4 + 3 rows
    z, a = engine.predict_z(X)
    assert z.shape == a.shape == (11, 4) and z.dtype == a.dtype == dtype
    np.testing.assert_array_equal(a, engine.predict(X))
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(z, net.trace(X, np.zeros((11, 4))).z[-1], rtol=tol, atol=tol)
    e = np.exp(z.astype(np.float64) - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(a, e / e.sum(axis=1, keepdims=True), rtol=10 * tol, atol=10 * tol)
    with pytest.raises(ValueError, match="reserve"):
        cbackprop.Network([5, 4], dtype=dtype)._engine.predict_z(X)
