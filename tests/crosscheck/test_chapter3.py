"""Chapter 3 (issue "chapter-3 network"): activations per layer, the three costs, "default"
initialisation, L2 weight decay, momentum, gradient accumulation, trace, monitoring, early
stopping and the learning-rate schedule, for cbackprop.Network (C path) and
cbackprop.reference.Network.

  1. the reference against central finite differences of net.cost for every valid
     (hidden activation, output activation, cost), depths 1-3; its three backprop forms
     against each other;
  2. the C path against the reference (assert_close(actual=fast, desired=ref), plus a slack
     measured against long double where sums cancel) for every combination, awkward widths
     and batch sizes, and every kernel variant of this CPU
     (selected through CBACKPROP_KERNELS at construction, so this file covers them in the
     default run, without relying on .ci/run's per-variant rerun);
  3. trajectories (update_mini_batch steps and sgd epochs with lmbda and/or mu), C against
     reference, with a slack measured against a long-double shadow (conftest.py);
  4. a network2.py-style monitored run, C against reference and against a hand computation;
  5. independent hand checks (L2 step, momentum, init statistics, softmax, costs);
  6. gradient accumulation; 7. monitoring, early stopping, eta schedule; 8. validation.
"""
import copy
import itertools
import warnings

import numpy as np
import pytest

import cbackprop
from cbackprop import _core, reference

DTYPES = [pytest.param(np.float64, id="f64"), pytest.param(np.float32, id="f32")]
CLASSES = [pytest.param(cbackprop.Network, id="C"), pytest.param(reference.Network, id="ref")]
KERNELS = list(_core.kernels_supported())

HIDDEN = ["sigmoid", "tanh", "relu", "identity"]
# every valid (output activation, cost)
OUTPUT_COSTS = [("sigmoid", "quadratic"), ("sigmoid", "cross-entropy"), ("tanh", "quadratic"),
                ("relu", "quadratic"), ("identity", "quadratic"), ("softmax", "quadratic"),
                ("softmax", "log-likelihood")]
COMBOS = [(h, o, c) for h in HIDDEN for o, c in OUTPUT_COSTS]
COMBO_IDS = [f"{h}-{o}-{c}" for h, o, c in COMBOS]


def acts_for(sizes, hidden, out):
    """Activation list for sizes: hidden layers cycle from `hidden` through HIDDEN (so depth
    3 mixes two hidden activations), then the output activation."""
    L = len(sizes) - 1
    i = HIDDEN.index(hidden)
    return [HIDDEN[(i + k) % len(HIDDEN)] for k in range(L - 1)] + [out]


def targets(rng, m, n, cost, kind=None):
    """Targets suited to the cost: quadratic anything in [0, 1); cross-entropy in [0, 1]
    with some exact 0 and 1; log-likelihood one-hot ("onehot") or any non-negative
    ("nonneg", rows not summing to 1)."""
    if cost == "cross-entropy":
        Y = rng.random((m, n))
        Y[rng.random((m, n)) < 0.2] = 0.0
        Y[rng.random((m, n)) < 0.2] = 1.0
        return Y
    if cost == "log-likelihood" and kind != "nonneg":
        return np.eye(n)[rng.integers(0, n, m)]
    if cost == "log-likelihood":
        return 1.5 * rng.random((m, n))
    return rng.random((m, n))


def relu_margin(net, X):
    """min |z| over the relu layers for the rows of X (inf without relu layers)."""
    margin = np.inf
    a = np.asarray(X, dtype=np.float64)
    for w, b, act in zip(net.weights, net.biases, net.activations):
        z = a @ w.T + b
        if act == "relu":
            margin = min(margin, float(np.abs(z).min()))
        a = reference.ACTIVATION_FUNCTIONS[act][0](z)
    return margin


def params(net):
    return [np.array(p, copy=True) for p in net.weights + net.biases]


def nudged(net, seed=0):
    """net with every parameter moved by one ulp in a random direction: trained alongside,
    its distance from the shadow is a second draw of how far rounding-sized differences
    grow along the trajectory."""
    g = np.random.default_rng(seed)
    def nudge(p):
        return np.nextafter(p, np.where(g.random(p.shape) < 0.5, -np.inf, np.inf).astype(p.dtype))
    net.weights = [nudge(w) for w in net.weights]
    net.biases = [nudge(b) for b in net.biases]
    return net


# ==== 1. the reference against central finite differences ================================

FD_SIZES = {1: [4, 3], 2: [3, 5, 4], 3: [4, 3, 5, 3]}
OUTPUT_TARGETS = [(o, c, k) for o, c in OUTPUT_COSTS
                  for k in (("onehot", "nonneg") if c == "log-likelihood" else (None,))]
FD_CASES = ([(1, None, o, c, k) for o, c, k in OUTPUT_TARGETS]
            + [(d, h, o, c, k) for d in (2, 3) for h in HIDDEN for o, c, k in OUTPUT_TARGETS])


def fd_network(depth, hidden, out, cost, kind, init, seed0):
    """A reference network and batch; with relu layers, the first seed whose z all stay
    1e-3 away from the kink (FD across it is meaningless)."""
    sizes = FD_SIZES[depth]
    acts = acts_for(sizes, hidden or "sigmoid", out)
    for seed in range(seed0, seed0 + 50):
        net = reference.Network(sizes, activations=acts, cost=cost, init=init, seed=seed)
        rng = np.random.default_rng(seed)
        X = rng.uniform(-1, 1, (3, sizes[0]))
        Y = targets(rng, 3, sizes[-1], cost, kind)
        if relu_margin(net, X) > 1e-3:
            return net, X, Y
    raise AssertionError("no seed keeps relu z away from 0")  # pragma: no cover


@pytest.mark.parametrize("depth, hidden, out, cost, kind", FD_CASES,
                         ids=[f"L{d}-{h}-{o}-{c}" + (f"-{k}" if k else "") for d, h, o, c, k in FD_CASES])
def test_reference_gradient_matches_central_differences(depth, hidden, out, cost, kind,
                                                          central_differences):
    init = "large" if depth < 3 else "default"
    net, X, Y = fd_network(depth, hidden, out, cost, kind, init, seed0=7 * depth)
    fd = sum(central_differences(net, X, Y, 1e-5), [])   # biases, then weights
    # h = 1e-5: truncation ~h^2 |C'''| and rounding ~eps |C| / h (more where a saturated
    # sigmoid's 1 - a loses digits in the cross-entropy).  Measured over these cases, max
    # |backprop - FD| / max(1, |C|): 5.6e-10 (h = 1e-4: 5.6e-8, truncation-dominated; h = 1e-6:
    # 6.6e-10, and 3.4e-8 with N(0, 1) inputs that saturate a cross-entropy output), so atol
    # 1e-8 max(1, |C|) has a 16x margin.
    scale = max(1.0, abs(net.cost(X, Y)))
    for form in ("backprop", "backprop_per_sample", "backprop_sigma_matrix"):
        nb, nw = getattr(net, form)(X, Y)
        for l, (bp, g) in enumerate(zip(nb + nw, fd)):
            np.testing.assert_allclose(bp, g, rtol=1e-7, atol=1e-8 * scale, err_msg=f"{form} array {l}")
    # not vacuous: some entry of the gradient is clearly nonzero
    assert max(float(np.abs(g).max()) for g in fd) > 1e-3


def test_finite_difference_check_detects_a_wrong_output_delta(central_differences):
    """A log-likelihood gradient computed with the one-hot shortcut a - y (wrong for targets
    that do not sum to 1) fails the comparison above."""
    net, X, Y = fd_network(2, "tanh", "softmax", "log-likelihood", "nonneg", "large", 0)
    fd = sum(central_differences(net, X, Y, 1e-5), [])   # biases, then weights
    net.cost_name = "cross-entropy"          # its delta^L is a - y
    try:
        nb, _ = net.backprop(X, Y)
    finally:
        net.cost_name = "log-likelihood"
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(nb[-1], fd[1], rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden, out, cost", COMBOS, ids=COMBO_IDS)
def test_reference_forms_agree(hidden, out, cost, dtype, assert_close):
    sizes = [5, 6, 4, 3]
    for kind in (("onehot", "nonneg") if cost == "log-likelihood" else (None,)):
        net = reference.Network(sizes, activations=acts_for(sizes, hidden, out), cost=cost,
                                dtype=dtype, seed=3)
        rng = np.random.default_rng(4)
        X = rng.uniform(-1, 1, (7, sizes[0]))     # saturated outputs: the test below
        Y = targets(rng, 7, sizes[-1], cost, kind)
        mat = sum(net.backprop(X, Y), [])
        for form in (net.backprop_per_sample, net.backprop_sigma_matrix):
            got = sum(form(X, Y), [])
            for l, (a, d) in enumerate(zip(got, mat)):
                assert a.dtype == dtype and a.shape == d.shape
                assert_close(a, d, dtype, f"{form.__name__} array {l}")


@pytest.mark.parametrize("cost", ["cross-entropy", "log-likelihood"])
def test_reference_forms_agree_for_saturated_outputs(cost):
    """float64: sigma(40) rounds to exactly 1; softmax of z = (800, 0) gives a = (1, 0).
    (Found by this test: the Sigma'(z) form used to give 0 * inf = NaN here.)"""
    if cost == "cross-entropy":
        net = reference.Network([1, 1], cost=cost, seed=0)
        net.weights = [np.array([[40.0]])]
        Y, want = np.array([[0.5]]), 0.5                  # delta = a - y = 1/2
    else:
        net = reference.Network([1, 2], activations="softmax", cost=cost, seed=0)
        net.weights = [np.array([[800.0], [0.0]])]
        Y, want = np.array([[0.0, 1.0]]), [1.0, -1.0]     # delta = a sum(y) - y = (1, -1)
    net.biases = [np.zeros_like(b) for b in net.biases]
    X = np.array([[1.0]])
    for form in (net.backprop, net.backprop_per_sample, net.backprop_sigma_matrix):
        nb, nw = form(X, Y)
        np.testing.assert_allclose(nb[0], want, rtol=1e-15, err_msg=form.__name__)
        np.testing.assert_allclose(nw[0].ravel(), want, rtol=1e-15, err_msg=form.__name__)


def test_reference_forms_say_overflow_in_their_values_not_in_warnings():
    """The book's other forms of the gradient compute as the rest of the reference does: an
    overflow or an invalid operation (here inf - inf inside a matrix product) shows in the
    values, never as a RuntimeWarning (backprop itself refuses them: FloatingPointError).  The same state keeps the forms usable where OpenBLAS raises
    the invalid-operation flag on finite products (numpy/numpy#24067), as it did in CI."""
    net = reference.Network([2, 2, 1], activations=["identity", "identity"], dtype=np.float32,
                            seed=0)
    net.weights = [np.array([[3e38, 3e38], [-3e38, -3e38]], np.float32),  # z^1 = (inf, -inf)
                   np.array([[1.0, 1.0]], np.float32)]                   # z^2 = inf - inf
    X, Y = np.ones((3, 2), np.float32), np.zeros((3, 1), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for form in (net.backprop_per_sample, net.backprop_sigma_matrix,
                     lambda X, Y: net.backprop_with_masks(X, Y, net.dropout_masks(3, 0))):
            nb, nw = form(X, Y)
            assert not np.isfinite(nb[-1]).all(), form


# ==== 2. the C path against the reference =================================================

def close_with_slack(actual, desired, truth, dtype, what, tol):
    """assert_close's per-dtype tolerance (tol: the conftest fixture), plus 4x the
    reference's own distance from the long-double computation on the same values, as in
    test_crosscheck.py's property test: sums that cancel keep few correct float32 digits in
    either implementation.  Measured: of all the arrays compared below (every kernel
    variant), one exceeds the base tolerance, float32 nabla_b^1 of [65, 1, 17], m = 5, tanh
    hidden, sigmoid/cross-entropy output (the width-1 bottleneck sums 17 output deltas times
    weights over 5 samples to -3.2523e-4): |fast - ref| = 6.0e-8 (plain, generic) and 3.7e-8
    (avx2, avx512), 9.2x and 5.7x the base tolerance, while the reference is itself 3.7e-8
    from the long-double value and the C path 2.3e-8 (plain) / 3.2e-10 (avx512).  The slack
    term 4 x 3.7e-8 admits it with a 2.5x margin; a one-entry array leaves atol_scale
    nothing to scale by."""
    t = tol[dtype]
    slack = float(np.abs(np.asarray(desired, dtype=np.longdouble) - truth).max())
    atol = t["atol_scale"] * float(np.abs(desired).max()) + 4 * slack
    np.testing.assert_allclose(actual, desired, rtol=t["rtol"], atol=atol, err_msg=what)


XCHECK_CASES = [([1, 3, 1], 1), ([3, 17], 5), ([65, 1, 17], 5), ([17, 65, 33, 3], 32),
                ([33, 17, 65], 32)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("hidden, out, cost", COMBOS, ids=COMBO_IDS)
def test_c_path_matches_reference(hidden, out, cost, kernels, dtype, monkeypatch, assert_close, tol,
                                  ld_trace):
    monkeypatch.setenv("CBACKPROP_KERNELS", kernels)
    for case, (sizes, m) in enumerate(XCHECK_CASES):
        acts = acts_for(sizes, hidden, out)
        kw = dict(activations=acts, cost=cost, init="default", dtype=dtype, seed=case)
        fast, ref = cbackprop.Network(sizes, **kw), reference.Network(sizes, **kw)
        assert fast.kernels == kernels
        assert fast.activations == ref.activations == tuple(acts) and fast.cost_name == cost
        rng = np.random.default_rng(100 + case)
        X = rng.standard_normal((m, sizes[0]))
        Y = targets(rng, m, sizes[-1], cost, "nonneg" if case % 2 else "onehot")
        where = f"{sizes}, m={m}"
        truth = ld_trace(ref.weights, ref.biases, acts, cost, X.astype(dtype), Y.astype(dtype))
        assert_close(fast.feedforward(X), ref.feedforward(X), dtype, f"feedforward {where}")
        assert_close(fast.cost(X, Y), ref.cost(X, Y), dtype, f"cost {where}")
        assert_close(fast.total_cost(X, Y, lmbda=2.5), ref.total_cost(X, Y, lmbda=2.5), dtype,
                     f"total_cost {where}")
        gf, gr = sum(fast.backprop(X, Y), []), sum(ref.backprop(X, Y), [])
        for l, (a, d, t) in enumerate(zip(gf, gr, truth[3] + truth[4])):
            assert a.dtype == dtype and a.shape == d.shape
            close_with_slack(a, d, t, dtype, f"backprop array {l} {where}", tol)
        tf, tr = fast.trace(X, Y), ref.trace(X, Y)
        for i, name in enumerate(("z", "a", "delta", "nabla_b", "nabla_w")):
            lf, lr = getattr(tf, name), getattr(tr, name)
            assert len(lf) == len(lr) == len(sizes) - (0 if name == "a" else 1)
            for l, (a, d, t) in enumerate(zip(lf, lr, truth[i])):
                assert a.dtype == dtype and a.shape == d.shape, (name, l)
                close_with_slack(a, d, t, dtype, f"trace.{name}[{l}] {where}", tol)
        assert_close(tf.cost, tr.cost, dtype, f"trace.cost {where}")
        # the trace's gradient is backprop's, its cost is cost()
        for l, (a, d) in enumerate(zip(tf.nabla_b + tf.nabla_w, gf)):
            np.testing.assert_array_equal(a, d)
        assert tf.cost == fast.cost(X, Y)
        # after a larger batch the C workspace holds more rows than the next trace uses
        X2, Y2 = X[:2], Y[:2]
        tf, tr = fast.trace(X2, Y2), ref.trace(X2, Y2)
        truth = ld_trace(ref.weights, ref.biases, acts, cost, X2.astype(dtype), Y2.astype(dtype))
        for i, name in enumerate(("z", "a", "delta", "nabla_b", "nabla_w")):
            for l, (a, d, t) in enumerate(zip(getattr(tf, name), getattr(tr, name), truth[i])):
                assert a.shape == d.shape, (name, l)
                close_with_slack(a, d, t, dtype, f"trace of 2 rows .{name}[{l}] {where}", tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_feedforward_cost_and_evaluate_beyond_one_chunk(dtype, assert_close):
    """2500 rows: the C path runs them through its workspace 1024 at a time (softmax needs
    whole rows of z)."""
    sizes = [20, 15, 6]
    kw = dict(activations=["relu", "softmax"], cost="log-likelihood", dtype=dtype, seed=4)
    fast, ref = cbackprop.Network(sizes, **kw), reference.Network(sizes, **kw)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2500, 20))
    labels = rng.integers(0, 6, 2500)
    Y = np.eye(6)[labels]
    assert_close(fast.feedforward(X), ref.feedforward(X), dtype, "feedforward")
    assert_close(fast.cost(X, Y), ref.cost(X, Y), dtype, "cost")
    assert_close(fast.total_cost(X, Y, 3.0), ref.total_cost(X, Y, 3.0), dtype, "total_cost")
    if dtype == np.float64:
        assert fast.evaluate(X, labels) == ref.evaluate(X, labels)


# ==== 3. trajectories ========================================================================

TRAJ_SIZES = [6, 9, 7, 4]
MODES = {"lmbda": dict(lmbda=3.0, mu=0.0), "mu": dict(lmbda=0.0, mu=0.6),
         "both": dict(lmbda=3.0, mu=0.6)}


def trajectory_eta(hidden, out):
    """Learning rates that keep every combination's 2 epochs tame (no divergence, and float32
    rounding differences that stay rounding-sized; see check_trajectory)."""
    acts = {hidden, out}
    if acts & {"identity", "relu"}:
        return 0.05
    return 0.25 if "tanh" in acts else 0.5


def trajectory_pair(hidden, out, cost, dtype, seed=5):
    acts = acts_for(TRAJ_SIZES, hidden, out)
    kw = dict(activations=acts, cost=cost, init="default", dtype=dtype, seed=seed)
    return cbackprop.Network(TRAJ_SIZES, **kw), reference.Network(TRAJ_SIZES, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("hidden, out, cost", COMBOS, ids=COMBO_IDS)
def test_trajectories_match_reference(hidden, out, cost, mode, dtype, exact_shadow, check_trajectory):
    """20 update_mini_batch steps (n = 60 for the decay), then 2 epochs of sgd on 60 rows in
    mini-batches of 8 (the last one short), same lmbda and mu: C path, reference and the
    long-double shadow."""
    fast, ref = trajectory_pair(hidden, out, cost, dtype)
    shadow = exact_shadow(ref)
    noise = nudged(trajectory_pair(hidden, out, cost, dtype)[1])
    hyper = MODES[mode]
    rng = np.random.default_rng(9)
    eta = trajectory_eta(hidden, out)
    for step in range(20):
        m = int(rng.integers(1, 9))
        X = rng.standard_normal((m, TRAJ_SIZES[0])).astype(dtype)
        Y = targets(rng, m, TRAJ_SIZES[-1], cost).astype(dtype)
        for net in (fast, ref, shadow, noise):
            net.update_mini_batch(X, Y, eta, n=60, **hyper)
    check_trajectory(fast, ref, shadow, dtype, "after 20 update_mini_batch steps", [noise])
    X = rng.standard_normal((60, TRAJ_SIZES[0])).astype(dtype)
    Y = targets(rng, 60, TRAJ_SIZES[-1], cost).astype(dtype)
    hf = fast.sgd(X, Y, 2, 8, eta, **hyper)
    for net in (ref, shadow, noise):
        net.sgd(X, Y, 2, 8, eta, **hyper)
    check_trajectory(fast, ref, shadow, dtype, "after 2 epochs of sgd", [noise])
    assert [h["epoch"] for h in hf] == [1, 2] and [h["eta"] for h in hf] == [eta, eta]
    # the training moved the parameters (the check compared something)
    assert np.abs(fast.weights[-1] - trajectory_pair(hidden, out, cost, dtype)[0].weights[-1]).max() > 1e-3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wrong", [dict(lmbda=3.03, mu=0.6), dict(lmbda=3.0, mu=0.606)], ids=["lmbda", "mu"])
def test_trajectory_check_can_fail(wrong, dtype, exact_shadow, check_trajectory):
    """The slack-based comparison catches a C run whose lmbda or mu is off by 1%."""
    fast, ref = trajectory_pair("sigmoid", "softmax", "log-likelihood", dtype)
    shadow = exact_shadow(ref)
    rng = np.random.default_rng(9)
    X = rng.standard_normal((60, TRAJ_SIZES[0])).astype(dtype)
    Y = targets(rng, 60, TRAJ_SIZES[-1], "log-likelihood").astype(dtype)
    fast.sgd(X, Y, 2, 8, 0.5, **wrong)
    ref.sgd(X, Y, 2, 8, 0.5, **MODES["both"])
    shadow.sgd(X, Y, 2, 8, 0.5, **MODES["both"])
    with pytest.raises(AssertionError, match="Not equal to tolerance"):   # (C vs reference)
        check_trajectory(fast, ref, shadow, dtype)


def test_velocity_is_kept_through_a_step_without_momentum(assert_params_close):
    """mu > 0, then mu = 0 (plain step; the velocity is neither used nor reset), then mu > 0
    again: C path and reference agree, and the third step uses the velocity of the first."""
    kw = dict(activations=["tanh", "sigmoid"], cost="cross-entropy", seed=3)
    fast, ref, fresh = (cls([3, 4, 2], **kw) for cls in (cbackprop.Network, reference.Network,
                                                           reference.Network))
    rng = np.random.default_rng(0)
    data = [(rng.random((5, 3)), rng.random((5, 2))) for _ in range(3)]
    for net in (fast, ref):
        for (X, Y), mu in zip(data, (0.5, 0.0, 0.5)):
            net.update_mini_batch(X, Y, 0.8, mu=mu)
    assert_params_close(fast, ref, np.float64)
    # by hand: v1 = -eta g1; step 2 plain; v3 = mu v1 - eta g3
    W, B = [w.copy() for w in fresh.weights], [b.copy() for b in fresh.biases]
    gb, gw = fresh.backprop(*data[0])
    v1w, v1b = [-0.8 * g for g in gw], [-0.8 * g for g in gb]
    W, B = [w + v for w, v in zip(W, v1w)], [b + v for b, v in zip(B, v1b)]
    fresh.weights, fresh.biases = W, B
    gb, gw = fresh.backprop(*data[1])
    W, B = [w - 0.8 * g for w, g in zip(W, gw)], [b - 0.8 * g for b, g in zip(B, gb)]
    fresh.weights, fresh.biases = W, B
    gb, gw = fresh.backprop(*data[2])
    W = [w + 0.5 * v - 0.8 * g for w, v, g in zip(W, v1w, gw)]
    B = [b + 0.5 * v - 0.8 * g for b, v, g in zip(B, v1b, gb)]
    for a, d in zip(ref.weights + ref.biases, W + B):
        np.testing.assert_allclose(a, d, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("out, cost", [("sigmoid", "cross-entropy"), ("softmax", "log-likelihood"),
                                       ("softmax", "quadratic"), ("tanh", "quadratic")])
def test_trajectories_with_plain_kernels(out, cost, monkeypatch, exact_shadow, check_trajectory):
    """The plain kernels run the step as gradient, then update (not fused): decay and
    momentum there too, float64."""
    monkeypatch.setenv("CBACKPROP_KERNELS", "plain")
    for mode, hyper in MODES.items():
        fast, ref = trajectory_pair("sigmoid", out, cost, np.float64, seed=6)
        assert fast.kernels == "plain"
        shadow = exact_shadow(ref)
        rng = np.random.default_rng(10)
        X = rng.standard_normal((60, TRAJ_SIZES[0]))
        Y = targets(rng, 60, TRAJ_SIZES[-1], cost)
        for net in (fast, ref, shadow):
            net.update_mini_batch(X[:7], Y[:7], 0.5, n=60, **hyper)
            net.sgd(X, Y, 2, 8, 0.5, **hyper)
        check_trajectory(fast, ref, shadow, np.float64, mode)


def test_threaded_epochs_with_softmax_decay_and_momentum(exact_shadow, check_trajectory):
    """sgd on 2 threads: bitwise the same as 1 thread, and close to the reference.  (Under
    load a second thread may start after the first has taken every task of an epoch, with
    the same result.)"""
    sizes = [100, 65, 33, 10]
    kw = dict(activations=["relu", "tanh", "softmax"], cost="log-likelihood", init="default", seed=2)
    one, two, ref = cbackprop.Network(sizes, **kw), cbackprop.Network(sizes, **kw), reference.Network(sizes, **kw)
    one.num_threads, two.num_threads = 1, 2
    rng = np.random.default_rng(3)
    X = rng.standard_normal((64, 100))
    Y = np.eye(10)[rng.integers(0, 10, 64)]
    shadow = exact_shadow(ref)
    for net in (one, two, ref):
        net.sgd(X, Y, 2, 10, 0.3, lmbda=1.0, mu=0.5)
    shadow.sgd(X, Y, 2, 10, 0.3, lmbda=1.0, mu=0.5)
    for a, b in zip(params(one), params(two)):
        np.testing.assert_array_equal(a, b)
    check_trajectory(two, ref, shadow, np.float64, "2 threads")
    # Repeat until a run's last epoch really ran on 2 threads, checking every run.
    ran_on_two = two._engine.last_epoch_threads == 2
    for _ in range(30):
        if ran_on_two:
            break
        again = cbackprop.Network(sizes, **kw)
        again.num_threads = 2
        again.sgd(X, Y, 2, 10, 0.3, lmbda=1.0, mu=0.5)
        for a, b in zip(params(one), params(again)):
            np.testing.assert_array_equal(a, b)
        ran_on_two = again._engine.last_epoch_threads == 2
    assert ran_on_two, "no epoch ran on 2 threads in 30 attempts"


# ==== 4. a network2.py-style monitored run =================================================

def network2_data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((100, 20))
    centers = rng.standard_normal((4, 20))
    labels = np.argmax(X @ centers.T + 0.3 * rng.standard_normal((100, 4)), axis=1)
    Xe = rng.random((40, 20))
    le = np.argmax(Xe @ centers.T, axis=1)
    return X, np.eye(4)[labels], Xe, le


def by_hand_figures(net, X, Y, Xe, le, lmbda):
    """network2.py's total_cost and accuracy, written out in NumPy from the parameters."""
    def forward(A):
        for w, b in zip(net.weights, net.biases):
            A = 1 / (1 + np.exp(-(A @ w.astype(np.float64).T + b)))
        return A

    def total_cost(A, Yt):
        a = forward(A)
        c = -np.sum(Yt * np.log(a) + (1 - Yt) * np.log(1 - a)) / len(A)
        return c + 0.5 * (lmbda / len(A)) * sum(np.sum(w.astype(np.float64) ** 2) for w in net.weights)

    Ye = np.eye(4)[le]
    return dict(training_cost=total_cost(X, Y), evaluation_cost=total_cost(Xe, Ye),
                training_accuracy=np.mean(np.argmax(forward(X), 1) == np.argmax(Y, 1)),
                evaluation_accuracy=np.mean(np.argmax(forward(Xe), 1) == le))


@pytest.mark.parametrize("dtype", DTYPES)
def test_network2_compatible_run(dtype, assert_close):
    """network2.py's SGD with all four monitors: the C path and the reference report the
    same figures each epoch, and the last epoch's equal a NumPy computation from the final
    parameters.  float32: the costs to the float32 tolerance; an accuracy may differ by one
    sample (a borderline argmax), so exact equality and the hand computation are float64."""
    X, Y, Xe, le = network2_data()
    kw = dict(cost="cross-entropy", init="default", dtype=dtype, seed=12)
    fast, ref = cbackprop.Network([20, 15, 4], **kw), reference.Network([20, 15, 4], **kw)
    run = dict(evaluation_data=(Xe, le), lmbda=5.0, monitor_evaluation_cost=True,
               monitor_evaluation_accuracy=True, monitor_training_cost=True,
               monitor_training_accuracy=True)
    hf = fast.sgd(X, Y, 3, 10, 0.5, **run)
    hr = ref.sgd(X, Y, 3, 10, 0.5, **run)
    assert [h["epoch"] for h in hf] == [h["epoch"] for h in hr] == [1, 2, 3]
    for f, r in zip(hf, hr):
        for key in ("training_cost", "evaluation_cost"):
            assert_close(f[key], r[key], dtype, f"epoch {f['epoch']} {key}")
        for key, n in (("training_accuracy", 100), ("evaluation_accuracy", 40)):
            if dtype == np.float64:
                assert f[key] == r[key], (f["epoch"], key)
            else:
                assert abs(f[key] - r[key]) <= 1 / n + 1e-12, (f["epoch"], key)
    assert hf[-1]["training_accuracy"] > 0.5     # it learned something (chance: 0.25)
    if dtype == np.float32:
        return
    want = by_hand_figures(fast, X, Y, Xe, le, 5.0)
    for key, value in want.items():
        np.testing.assert_allclose(hf[-1][key], value, rtol=1e-12, err_msg=key)
    # The regulariser is in the costs: without it they would be smaller by this much.
    l2 = 0.5 * 5.0 / 100 * sum(np.sum(w ** 2) for w in fast.weights)
    assert hf[-1]["training_cost"] - fast.cost(X, Y) == pytest.approx(l2, rel=1e-10)
    assert l2 > 0.1
    # the evaluation data as (X, Y) one-hot targets gives the same figures
    fast2 = cbackprop.Network([20, 15, 4], **kw)
    h2 = fast2.sgd(X, Y, 3, 10, 0.5, **dict(run, evaluation_data=(Xe, np.eye(4)[le])))
    assert h2 == [dict(h, seconds=h2[i]["seconds"]) for i, h in enumerate(hf)]


# ==== 5. independent checks ==================================================================

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", CLASSES)
def test_l2_step_by_hand(cls, dtype, assert_close):
    net = cls([5, 4, 3], activations=["tanh", "softmax"], cost="log-likelihood", init="default",
              dtype=dtype, seed=1)
    rng = np.random.default_rng(2)
    X, Y = rng.standard_normal((6, 5)), np.eye(3)[rng.integers(0, 3, 6)]
    eta, lmbda, n = 0.7, 4.0, 50
    gb, gw = net.backprop(X, Y)
    w0, b0 = [w.astype(np.float64) for w in net.weights], [b.astype(np.float64) for b in net.biases]
    net.update_mini_batch(X, Y, eta, lmbda=lmbda, n=n)
    for l in range(2):
        assert_close(net.weights[l], (1 - eta * lmbda / n) * w0[l] - eta * gw[l], dtype, f"w{l}")
        assert_close(net.biases[l], b0[l] - eta * gb[l], dtype, f"b{l}")   # no decay
    # the decay term is large enough to matter at these tolerances
    assert np.abs(net.weights[0] - (w0[0] - eta * gw[0])).max() > 1e-3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", CLASSES)
def test_momentum_three_steps_by_hand(cls, dtype, assert_close):
    net = cls([4, 5, 2], activations=["relu", "sigmoid"], cost="cross-entropy", init="default",
              dtype=dtype, seed=3)
    rng = np.random.default_rng(4)
    eta, lmbda, n, mu = 0.4, 2.0, 30, 0.7
    W = [w.astype(np.float64) for w in net.weights]
    B = [b.astype(np.float64) for b in net.biases]
    vW, vB = [np.zeros_like(w) for w in W], [np.zeros_like(b) for b in B]
    for step in range(3):
        X, Y = rng.standard_normal((5, 4)), rng.random((5, 2))
        gb, gw = net.backprop(X, Y)
        carried = max(float(np.abs(mu * v).max()) for v in vW + vB)
        net.update_mini_batch(X, Y, eta, lmbda=lmbda, n=n, mu=mu)
        for l in range(2):
            vW[l] = mu * vW[l] - eta * gw[l] - (eta * lmbda / n) * W[l]
            W[l] = W[l] + vW[l]
            vB[l] = mu * vB[l] - eta * gb[l]
            B[l] = B[l] + vB[l]
            assert_close(net.weights[l], W[l], dtype, f"step {step} w{l}")
            assert_close(net.biases[l], B[l], dtype, f"step {step} b{l}")
    assert carried > 1e-3   # the last step really carried velocity over


@pytest.mark.parametrize("cls", CLASSES)
def test_default_init_statistics_and_draws(cls):
    """'default': weights N(0, 1/n_in).  With n = 120000 weights the sample standard deviation
    of N(0, s^2) has relative standard error 1/sqrt(2n) = 0.002, the mean a standard error of
    s/sqrt(n) = 0.0029 s: the bounds 0.02 and 0.03 s are 10 standard errors, failing by
    chance with probability ~1e-23, while a wrong scale (1, 1/n_in, 2/n_in) misses them by far."""
    sizes = [400, 300, 10]
    net = cls(sizes, init="default", seed=5)
    large = cls(sizes, init="large", seed=5)
    w = net.weights[0]
    s = 1 / np.sqrt(400)
    assert abs(w.std() / s - 1) < 0.02
    assert abs(w.mean()) < 0.03 * s
    b = net.biases[0]                     # biases stay N(0, 1): 300 values, 10 standard errors
    assert abs(b.std() - 1) < 10 / np.sqrt(600)
    # the same draws as 'large' (all biases, then all weights), weights scaled by 1/sqrt(n_in)
    for l, n_in in enumerate(sizes[:-1]):
        np.testing.assert_array_equal(net.weights[l], large.weights[l] / np.sqrt(n_in))
        np.testing.assert_array_equal(net.biases[l], large.biases[l])
    # and the draws of network2.py's order: biases first (np.random.default_rng(seed))
    g = np.random.default_rng(5)
    bs = [g.standard_normal(n) for n in sizes[1:]]
    ws = [g.standard_normal((n, k)) / np.sqrt(k) for k, n in zip(sizes[:-1], sizes[1:])]
    for a, d in zip(net.weights + net.biases, ws + bs):
        np.testing.assert_array_equal(a, d)


def test_default_init_float32_is_the_float64_draw_rounded():
    for cls in (cbackprop.Network, reference.Network):
        n32 = cls([50, 7, 3], init="default", dtype=np.float32, seed=8)
        n64 = cls([50, 7, 3], init="default", dtype=np.float64, seed=8)
        for a, d in zip(n32.weights + n32.biases, n64.weights + n64.biases):
            np.testing.assert_array_equal(a, d.astype(np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", CLASSES)
def test_softmax_rows_sum_to_one_and_log_likelihood_is_minus_ln_a_y(cls, dtype):
    net = cls([6, 8, 5], activations=["tanh", "softmax"], cost="log-likelihood", dtype=dtype, seed=2)
    rng = np.random.default_rng(1)
    X = 3 * rng.standard_normal((9, 6))
    a = net.feedforward(X).astype(np.float64)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=0, atol=8 * eps)
    assert (a > 0).all()
    # softmax by hand from the hidden layer
    h = np.tanh(X @ net.weights[0].astype(np.float64).T + net.biases[0])
    z = h @ net.weights[1].astype(np.float64).T + net.biases[1]
    np.testing.assert_allclose(a, np.exp(z) / np.exp(z).sum(axis=1, keepdims=True),
                               rtol=1e-12 if dtype == np.float64 else 2e-5)
    labels = rng.integers(0, 5, 9)
    Y = np.eye(5)[labels]
    want = -np.log(a[np.arange(9), labels]).mean()
    # (the cost is computed from z^L, not from a^L rounded to the dtype: in float32 the
    # two differ by that rounding, measured 5.9e-9 relative)
    np.testing.assert_allclose(net.cost(X, Y), want, rtol=1e-12 if dtype == np.float64 else 1e-6)
    # one sample: C_x = -ln a_y
    # (float32: one row runs through a different BLAS kernel than the batch: ~1e-7 relative)
    np.testing.assert_allclose(net.cost(X[4], Y[4]), -np.log(a[4, labels[4]]),
                               rtol=1e-12 if dtype == np.float64 else 1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", CLASSES)
def test_cross_entropy_hand_worked_one_layer(cls, dtype):
    """sizes [2, 1]: w = (ln 3, 0), b = 0, x = (1, 5): z = ln 3, a = 3/4.  With y = 1/2:
    C = -(1/2 ln 3/4 + 1/2 ln 1/4) = 1/2 ln(16/3); delta = a - y = 1/4 (eq. (66)), so
    nabla_b = 1/4, nabla_w = x / 4 = (1/4, 5/4).  A second sample x' = (0, 0), y' = 0:
    z = 0, a = 1/2, C' = ln 2, delta' = 1/2.  The batch averages: C = (1/2 ln(16/3) + ln 2)/2,
    nabla_b = 3/8, nabla_w = (1/8, 5/8)."""
    net = cls([2, 1], cost="cross-entropy", dtype=dtype, seed=0)
    net.weights = [np.array([[np.log(3.0), 0.0]])]
    net.biases = [np.array([0.0])]
    tol = dict(rtol=1e-14) if dtype == np.float64 else dict(rtol=1e-6)
    x, y = np.array([1.0, 5.0]), np.array([0.5])
    np.testing.assert_allclose(net.feedforward(x), [0.75], **tol)
    np.testing.assert_allclose(net.cost(x, y), 0.5 * np.log(16 / 3), **tol)
    nb, nw = net.backprop(x, y)
    np.testing.assert_allclose(nb[0], [0.25], **tol)
    np.testing.assert_allclose(nw[0], [[0.25, 1.25]], **tol)
    X, Y = np.array([[1.0, 5.0], [0.0, 0.0]]), np.array([[0.5], [0.0]])
    np.testing.assert_allclose(net.cost(X, Y), (0.5 * np.log(16 / 3) + np.log(2)) / 2, **tol)
    nb, nw = net.backprop(X, Y)
    np.testing.assert_allclose(nb[0], [0.375], **tol)
    np.testing.assert_allclose(nw[0], [[0.125, 0.625]], **tol)
    np.testing.assert_allclose(net.total_cost(X, Y, lmbda=4.0),
                               (0.5 * np.log(16 / 3) + np.log(2)) / 2 + 0.5 * 4.0 / 2 * np.log(3.0) ** 2, **tol)
    t = net.trace(X, Y)
    np.testing.assert_allclose(t.delta[0], [[0.125], [0.25]], **tol)   # (a - y) / m
    np.testing.assert_allclose(t.z[0], [[np.log(3.0)], [0.0]], **tol)
    np.testing.assert_array_equal(t.a[0], X)
    np.testing.assert_allclose(t.cost, (0.5 * np.log(16 / 3) + np.log(2)) / 2, **tol)
    np.testing.assert_allclose(t.a[1], [[0.75], [0.5]], **tol)


@pytest.mark.parametrize("cls", CLASSES)
def test_quadratic_softmax_and_log_likelihood_hand_worked(cls):
    """Output softmax over z = (0, ln 3): a = (1/4, 3/4).  Quadratic cost with y = (1, 0):
    C = 1/2 (9/16 + 9/16) = 9/16; g = a - y = (-3/4, 3/4), a.g = 3/8, delta = a (g - a.g)
    = (1/4 (-9/8), 3/4 (3/8)) = (-9/32, 9/32).  Log-likelihood with y = (2, 1) (not one-hot):
    C = -(2 ln 1/4 + ln 3/4) = ln(64/3), delta = a sum(y) - y = (3/4 - 2, 9/4 - 1)
    = (-5/4, 5/4)."""
    for cost, y, c, delta in (("quadratic", [1.0, 0.0], 9 / 16, [-9 / 32, 9 / 32]),
                              ("log-likelihood", [2.0, 1.0], np.log(64 / 3), [-1.25, 1.25])):
        net = cls([1, 2], activations="softmax", cost=cost, seed=0)
        net.weights = [np.array([[0.0], [np.log(3.0)]])]
        net.biases = [np.zeros(2)]
        x = np.array([1.0])
        np.testing.assert_allclose(net.feedforward(x), [0.25, 0.75], rtol=1e-15)
        np.testing.assert_allclose(net.cost(x, y), c, rtol=1e-14)
        nb, nw = net.backprop(x, y)
        np.testing.assert_allclose(nb[0], delta, rtol=1e-14)
        np.testing.assert_allclose(nw[0], np.array(delta).reshape(2, 1), rtol=1e-14)


# ==== 6. gradient accumulation ===============================================================

def splits(m):
    return {"whole": [m], "1+rest": [1, m - 1], "threes": [3] * (m // 3) + ([m % 3] if m % 3 else [])}


def accumulate_and_apply(net, X, Y, parts, eta, **hyper):
    start = 0
    for k in parts:
        net.accumulate_gradient(X[start:start + k], Y[start:start + k])
        start += k
    assert net.accumulated == len(X)
    net.apply_gradient(eta, **hyper)
    assert net.accumulated == 0


ACC_HYPER = {"plain": {}, "lmbda": dict(lmbda=2.0, n=40), "mu": dict(mu=0.8),
             "both": dict(lmbda=2.0, n=40, mu=0.8)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hyper", list(ACC_HYPER))
@pytest.mark.parametrize("cls", CLASSES)
def test_accumulation_equals_update_on_the_union(cls, hyper, dtype, assert_params_close):
    sizes = [7, 6, 5]
    kw = dict(activations=["tanh", "softmax"], cost="log-likelihood", init="default", dtype=dtype, seed=4)
    rng = np.random.default_rng(6)
    h = ACC_HYPER[hyper]
    for name, parts in splits(11).items():
        acc, whole = cls(sizes, **kw), cls(sizes, **kw)
        for step in range(3):           # 3 steps so that the velocity carries over
            X = rng.standard_normal((11, 7))
            Y = np.eye(5)[rng.integers(0, 5, 11)]
            accumulate_and_apply(acc, X, Y, parts, 0.6, **h)
            whole.update_mini_batch(X, Y, 0.6, **h)
        # float64: rtol 1e-12 (the two only sum the rows in a different order)
        assert_params_close(acc, whole, dtype)
        assert np.abs(acc.weights[0] - cls(sizes, **kw).weights[0]).max() > 1e-3


@pytest.mark.parametrize("cls", CLASSES)
def test_accumulation_and_update_mini_batch_share_the_velocity(cls, assert_params_close):
    kw = dict(activations=["sigmoid", "sigmoid"], cost="cross-entropy", seed=1)
    rng = np.random.default_rng(0)
    data = [(rng.random((4, 3)), rng.random((4, 2))) for _ in range(3)]
    a, b = cls([3, 4, 2], **kw), cls([3, 4, 2], **kw)
    for i, (X, Y) in enumerate(data):
        if i == 1:
            accumulate_and_apply(a, X, Y, [2, 2], 1.0, mu=0.9)
        else:
            a.update_mini_batch(X, Y, 1.0, mu=0.9)
        b.update_mini_batch(X, Y, 1.0, mu=0.9)
    assert_params_close(a, b, np.float64)


@pytest.mark.parametrize("cls", CLASSES)
def test_accumulation_survives_backprop_trace_and_cost(cls, assert_params_close):
    sizes = [5, 4, 3]
    kw = dict(activations=["relu", "sigmoid"], cost="cross-entropy", seed=3)
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((8, 5)), rng.random((8, 3))
    Xo, Yo = rng.standard_normal((13, 5)), rng.random((13, 3))   # other data, more rows
    net, whole = cls(sizes, **kw), cls(sizes, **kw)
    net.accumulate_gradient(X[:3], Y[:3])
    before = net.gradient_buffer.copy() if cls is cbackprop.Network else None
    net.backprop(Xo, Yo)
    net.trace(Xo, Yo)
    net.cost(Xo, Yo)
    net.feedforward(Xo)
    assert net.accumulated == 3
    if before is not None:
        np.testing.assert_array_equal(net.gradient_buffer, before)
    net.accumulate_gradient(X[3:], Y[3:])
    net.apply_gradient(0.9)
    whole.update_mini_batch(X, Y, 0.9)
    assert_params_close(net, whole, np.float64)


@pytest.mark.parametrize("cls", CLASSES)
def test_zero_gradient_discards(cls, assert_params_close):
    kw = dict(activations=["tanh", "identity"], seed=2)
    rng = np.random.default_rng(2)
    X1, Y1, X2, Y2 = rng.random((4, 3)), rng.random((4, 2)), rng.random((6, 3)), rng.random((6, 2))
    net, whole = cls([3, 5, 2], **kw), cls([3, 5, 2], **kw)
    net.accumulate_gradient(X1, Y1)
    net.zero_gradient()
    assert net.accumulated == 0
    with pytest.raises(ValueError, match="accumulate_gradient"):
        net.apply_gradient(0.5)
    net.accumulate_gradient(X2, Y2)
    net.apply_gradient(0.5)
    whole.update_mini_batch(X2, Y2, 0.5)
    assert_params_close(net, whole, np.float64)


@pytest.mark.parametrize("cls", CLASSES)
def test_apply_gradient_without_accumulation(cls):
    net = cls([3, 2], seed=0)
    before = params(net)
    with pytest.raises(ValueError, match="accumulate_gradient"):
        net.apply_gradient(0.5)
    net.accumulate_gradient(np.ones((2, 3)), np.zeros((2, 2)))
    net.apply_gradient(0.5)
    with pytest.raises(ValueError, match="accumulate_gradient"):   # it started afresh
        net.apply_gradient(0.5)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(params(net), before))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradient_buffer_layout_and_external_reduction(dtype, assert_close, assert_params_close):
    """gradient_buffer = per layer w^l then b^l of the summed per-sample gradients; doubling
    it in place (two 'ranks' with the same data) and apply_gradient(samples=2m) equals
    update_mini_batch on the data."""
    sizes = [4, 3, 2]
    kw = dict(activations=["tanh", "softmax"], cost="quadratic", dtype=dtype, seed=5)
    net, ref, whole = cbackprop.Network(sizes, **kw), reference.Network(sizes, **kw), cbackprop.Network(sizes, **kw)
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((6, 4)), rng.random((6, 2))
    net.accumulate_gradient(X[:2], Y[:2])
    net.accumulate_gradient(X[2:], Y[2:])
    buf = net.gradient_buffer
    assert buf.ndim == 1 and buf.flags.c_contiguous and buf.dtype == dtype
    nb, nw = ref.backprop(X, Y)
    want = np.concatenate([p.ravel() * 6 for l in range(2) for p in (nw[l], nb[l])])
    assert_close(buf, want, dtype, "gradient_buffer")
    buf *= 2
    net.apply_gradient(0.5, samples=12)
    whole.update_mini_batch(X, Y, 0.5)
    assert_params_close(net, whole, dtype)


# ==== 7. monitoring, early stopping, eta schedule ===========================================

FLAGS = ["monitor_evaluation_cost", "monitor_evaluation_accuracy", "monitor_training_cost",
         "monitor_training_accuracy"]
KEYS = {"monitor_evaluation_cost": "evaluation_cost", "monitor_evaluation_accuracy": "evaluation_accuracy",
        "monitor_training_cost": "training_cost", "monitor_training_accuracy": "training_accuracy"}


def small_problem(seed=0, n=30, n_eval=12):
    rng = np.random.default_rng(seed)
    X = rng.random((n, 4))
    labels = rng.integers(0, 3, n)
    Xe = rng.random((n_eval, 4))
    le = rng.integers(0, 3, n_eval)
    return X, np.eye(3)[labels], Xe, le


@pytest.mark.parametrize("cls", CLASSES)
def test_history_keys_exactly_the_monitored_ones(cls):
    X, Y, Xe, le = small_problem()
    for on in itertools.product([False, True], repeat=4):
        flags = dict(zip(FLAGS, on))
        net = cls([4, 5, 3], seed=1)
        hist = net.sgd(X, Y, 2, 7, 0.5, evaluation_data=(Xe, le), **flags)
        want = {"epoch", "seconds", "eta"} | {KEYS[f] for f, v in flags.items() if v}
        for rec in hist:
            assert set(rec) == want, flags
            for k in want - {"epoch"}:
                assert isinstance(rec[k], float)
            for k in ("training_accuracy", "evaluation_accuracy"):
                if k in rec:   # fractions: a count over the set size
                    n = len(X) if k.startswith("training") else len(Xe)
                    assert 0 <= rec[k] <= 1 and abs(rec[k] * n - round(rec[k] * n)) < 1e-9


def expected_stop(accs, k):
    """The epoch early stopping with k ends at, for the evaluation accuracies accs."""
    best, since = -1.0, 0
    for epoch, acc in enumerate(accs, start=1):
        if acc > best:
            best, since = acc, 0
        else:
            since += 1
        if since >= k:
            return epoch
    return None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", CLASSES)
def test_early_stopping_when_accuracy_never_improves(cls, dtype):
    """eta so small that no parameter changes (w - eta g rounds to w): the evaluation
    accuracy of epoch 1 is never beaten, so early_stopping_n=2 stops after epoch 3."""
    X, Y, Xe, le = small_problem()
    eta = 1e-300 if dtype == np.float64 else 1e-37
    net = cls([4, 5, 3], dtype=dtype, seed=1)
    w0 = params(net)
    hist = net.sgd(X, Y, 10, 5, eta, evaluation_data=(Xe, le), early_stopping_n=2)
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert "stop_reason" in hist[-1] and all("stop_reason" not in h for h in hist[:-1])
    assert len({h["evaluation_accuracy"] for h in hist}) == 1   # needs no monitor flag
    for a, b in zip(params(net), w0):
        np.testing.assert_array_equal(a, b)
    # without early stopping all 10 epochs run
    assert len(cls([4, 5, 3], dtype=dtype, seed=1).sgd(X, Y, 10, 5, eta, evaluation_data=(Xe, le))) == 10


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("cls", CLASSES)
def test_early_stopping_on_a_real_run(cls, k):
    """Against the rule applied to the accuracies of the same run without early stopping
    (same seed: the same epochs until the stop)."""
    X, Y, Xe, le = small_problem(seed=3, n=40, n_eval=15)
    full = cls([4, 6, 3], seed=4).sgd(X, Y, 25, 5, 2.0, evaluation_data=(Xe, le),
                                        monitor_evaluation_accuracy=True)
    accs = [h["evaluation_accuracy"] for h in full]
    stop = expected_stop(accs, k)
    assert stop is not None and stop > k + 1   # the run improved at least once after epoch 1
    net = cls([4, 6, 3], seed=4)
    hist = net.sgd(X, Y, 25, 5, 2.0, evaluation_data=(Xe, le), early_stopping_n=k)
    assert len(hist) == stop
    assert [h["evaluation_accuracy"] for h in hist] == accs[:stop]
    assert "stop_reason" in hist[-1]


@pytest.mark.parametrize("cls", CLASSES)
def test_eta_schedule_when_accuracy_never_improves(cls):
    X, Y, Xe, le = small_problem()
    e = 1e-300
    for k, want in ((1, [e, e] + [e / 2 ** j for j in range(1, 7)]),
                    (2, [e] * 3 + [e / 2 ** j for j in range(1, 7) for _ in range(2)])):
        hist = cls([4, 5, 3], seed=1).sgd(X, Y, 100, 5, e, evaluation_data=(Xe, le), eta_schedule_n=k)
        assert [h["eta"] for h in hist] == want, k
        assert "stop_reason" in hist[-1] and all("stop_reason" not in h for h in hist[:-1])
        assert hist[-1]["eta"] == e / 64    # the halving to e/128 ends the run


@pytest.mark.parametrize("cls", CLASSES)
def test_eta_schedule_on_a_real_run(cls, assert_params_close):
    """The schedule re-implemented here: one sgd epoch at a time with the eta the rule gives,
    on a twin network with the same seed (velocity and generator carry over between calls)."""
    X, Y, Xe, le = small_problem(seed=3, n=40, n_eval=15)
    eta0, k = 2.0, 2
    hyper = dict(lmbda=0.5, mu=0.3)
    net = cls([4, 6, 3], seed=4)
    hist = net.sgd(X, Y, 60, 5, eta0, evaluation_data=(Xe, le), eta_schedule_n=k, **hyper)
    twin = cls([4, 6, 3], seed=4)
    eta, best, since, want = eta0, -1.0, 0, []
    for epoch in range(1, 61):
        rec = twin.sgd(X, Y, 1, 5, eta, evaluation_data=(Xe, le), monitor_evaluation_accuracy=True,
                       **hyper)[0]
        want.append((epoch, eta, rec["evaluation_accuracy"]))
        if rec["evaluation_accuracy"] > best:
            best, since = rec["evaluation_accuracy"], 0
        else:
            since += 1
        if since >= k:
            eta, since = eta / 2, 0
            if eta <= eta0 / 128:
                break
    assert [(h["epoch"], h["eta"], h["evaluation_accuracy"]) for h in hist] == want
    assert len({h["eta"] for h in hist}) == 7 and "stop_reason" in hist[-1]
    assert_params_close(net, twin, np.float64, rtol=0, atol_scale=0)


@pytest.mark.parametrize("cls", CLASSES)
def test_missing_evaluation_data(cls):
    X, Y, Xe, le = small_problem()
    for kw in (dict(monitor_evaluation_cost=True), dict(monitor_evaluation_accuracy=True),
               dict(early_stopping_n=2), dict(eta_schedule_n=2)):
        net = cls([4, 5, 3], seed=1)
        snap = snapshot(net)
        with pytest.raises(ValueError, match="evaluation_data"):
            net.sgd(X, Y, 2, 5, 0.5, **kw)
        assert_unchanged(net, snap)
    # the training-set monitors need none
    hist = cls([4, 5, 3], seed=1).sgd(X, Y, 1, 5, 0.5, monitor_training_cost=True,
                                      monitor_training_accuracy=True)
    assert "training_cost" in hist[0] and "evaluation_cost" not in hist[0]


# ==== 8. validation ==========================================================================

def snapshot(net):
    state = dict(params=params(net), rng=copy.deepcopy(net._rng.bit_generator.state),
                 accumulated=net.accumulated, velocity=[v.copy() for v in net._velocity()])
    if isinstance(net, cbackprop.Network):
        state["buffer"] = net.gradient_buffer.copy()
    return state


def assert_unchanged(net, snap):
    after = snapshot(net)
    for a, b in zip(after["params"], snap["params"]):
        np.testing.assert_array_equal(a, b)
    assert after["rng"] == snap["rng"] and after["accumulated"] == snap["accumulated"]
    assert len(after["velocity"]) == len(snap["velocity"])
    for a, b in zip(after["velocity"], snap["velocity"]):
        np.testing.assert_array_equal(a, b)
    if "buffer" in snap:
        np.testing.assert_array_equal(after["buffer"], snap["buffer"])


BAD_CONSTRUCTOR = [
    (dict(activations="gelu"), ValueError, r"activations\[0\] must be one of"),
    (dict(activations=["sigmoid", "swish"]), ValueError, r"activations\[1\] must be one of"),
    (dict(activations="softmax"), ValueError, "activations='softmax'.*only allowed for the output"),
    (dict(activations=["softmax", "sigmoid"]), ValueError, r"activations\[0\] is 'softmax'"),
    (dict(activations=["sigmoid"]), ValueError, "activations must name one activation per layer"),
    (dict(activations=["sigmoid"] * 3), ValueError, "activations must name one activation per layer"),
    (dict(activations=3), TypeError, "activations must be"),
    (dict(activations=["sigmoid", None]), TypeError, r"activations\[1\]"),
    (dict(cost="hinge"), ValueError, "cost must be one of"),
    (dict(cost=None), TypeError, "cost must be"),
    (dict(cost="cross-entropy", activations=["sigmoid", "tanh"]), ValueError,
     "cost='cross-entropy' needs a sigmoid output"),
    (dict(cost="cross-entropy", activations=["sigmoid", "softmax"]), ValueError,
     "cost='cross-entropy' needs a sigmoid output"),
    (dict(cost="log-likelihood"), ValueError, "cost='log-likelihood' needs a softmax output"),
    (dict(cost="log-likelihood", activations=["softmax", "softmax"]), ValueError, r"activations\[0\]"),
    (dict(init="xavier"), ValueError, "init must be one of"),
    (dict(init=None), TypeError, "init must be"),
]


@pytest.mark.parametrize("kw, exc, pattern", BAD_CONSTRUCTOR,
                         ids=[str(i) for i in range(len(BAD_CONSTRUCTOR))])
@pytest.mark.parametrize("cls", CLASSES)
def test_bad_constructor_arguments(cls, kw, exc, pattern):
    with pytest.raises(exc, match=pattern):
        cls([3, 4, 2], **kw)


@pytest.mark.parametrize("cls", CLASSES)
def test_constructor_accepts_valid_combinations(cls):
    for (h, o, c) in COMBOS:
        net = cls([3, 4, 2], activations=[h, o], cost=c, init="default")
        assert net.activations == (h, o) and net.cost_name == c
    net = cls([3, 4, 2], activations=("tanh", "softmax"))
    assert net.activations == ("tanh", "softmax") and net.cost_name == "quadratic"
    assert cls([3, 2], activations="softmax").activations == ("softmax",)   # depth 1: the output
    assert cls([3, 4, 2]).activations == ("sigmoid", "sigmoid")


def data_for(net, m=5):
    rng = np.random.default_rng(0)
    return rng.random((m, net.sizes[0])), rng.random((m, net.sizes[-1]))


# (keyword arguments, exception, message pattern, whether sgd (n = len(X) = 5) rejects them too)
BAD_HYPER = [
    (dict(lmbda=-1.0, n=10), ValueError, "lmbda must be a finite number >= 0", True),
    (dict(lmbda=float("nan"), n=10), ValueError, "lmbda must be a finite number >= 0", True),
    (dict(lmbda=float("inf"), n=10), ValueError, "lmbda must be a finite number >= 0", True),
    (dict(lmbda="1", n=10), TypeError, "lmbda must be a real number", True),
    (dict(mu=1.5), ValueError, r"mu must lie in \[0, 1", True),
    (dict(mu=-0.1), ValueError, "mu must be a finite number >= 0", True),
    (dict(mu=float("nan")), ValueError, "mu must be", True),
    (dict(lmbda=1.0), ValueError, "n .*is required when lmbda > 0", False),
    (dict(lmbda=1.0, n=0), ValueError, "n must be an integer >= 1", False),
    (dict(lmbda=1.0, n=2.5), TypeError, "n must be an integer", False),
    (dict(lmbda=1000.0, n=1), ValueError, r"eta \* lmbda / n must be < 1", True),
]


@pytest.mark.parametrize("kw, exc, pattern, in_sgd", BAD_HYPER, ids=[str(i) for i in range(len(BAD_HYPER))])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", CLASSES)
def test_bad_hyper_parameters_leave_the_network_unchanged(cls, dtype, kw, exc, pattern, in_sgd):
    net = cls([3, 4, 2], dtype=dtype, seed=0)
    X, Y = data_for(net)
    net.update_mini_batch(X, Y, 0.5, mu=0.5)   # a velocity to keep
    net.accumulate_gradient(X[:2], Y[:2])      # an accumulation to keep
    snap = snapshot(net)
    with pytest.raises(exc, match=pattern):
        net.update_mini_batch(X, Y, 0.5, **kw)
    assert_unchanged(net, snap)
    with pytest.raises(exc, match=pattern):
        net.apply_gradient(0.5, **kw)
    assert_unchanged(net, snap)
    if in_sgd:
        with pytest.raises(exc, match=pattern):
            net.sgd(X, Y, 1, 2, 0.5, **{k: v for k, v in kw.items() if k != "n"})
        assert_unchanged(net, snap)
    # the accumulation is still there and applicable
    net.apply_gradient(0.5)
    assert net.accumulated == 0


@pytest.mark.parametrize("cls", CLASSES)
def test_rejected_accumulate_gradient_keeps_the_accumulation(cls):
    net = cls([3, 4, 2], seed=0)
    X, Y = data_for(net)
    net.accumulate_gradient(X, Y)
    snap = snapshot(net)
    for bad_X, bad_Y, exc, pattern in ((X, Y[:3], ValueError, "Y must have shape"),
                                       (X[:, :2], Y, ValueError, "X must have shape"),
                                       (np.full_like(X, np.nan), Y, ValueError, "X must hold only finite")):
        with pytest.raises(exc, match=pattern):
            net.accumulate_gradient(bad_X, bad_Y)
        assert_unchanged(net, snap)


@pytest.mark.parametrize("cls", CLASSES)
def test_apply_gradient_rejects_bad_samples(cls):
    net = cls([3, 2], seed=0)
    X, Y = data_for(net)
    net.accumulate_gradient(X, Y)
    snap = snapshot(net)
    for samples, exc in ((0, ValueError), (-2, ValueError), (2.0, TypeError), (True, TypeError)):
        with pytest.raises(exc, match="samples"):
            net.apply_gradient(0.5, samples=samples)
        assert_unchanged(net, snap)


@pytest.mark.parametrize("cls", CLASSES)
def test_total_cost_rejects_bad_lmbda(cls):
    net = cls([3, 2], seed=0)
    X, Y = data_for(net)
    for lmbda, exc in ((-1.0, ValueError), (float("nan"), ValueError), (None, TypeError)):
        with pytest.raises(exc, match="lmbda"):
            net.total_cost(X, Y, lmbda=lmbda)


BAD_SGD = [
    (dict(monitor_training_cost=1), TypeError, "monitor_training_cost must be True or False"),
    (dict(monitor_training_accuracy="yes"), TypeError, "monitor_training_accuracy must be True or False"),
    (dict(monitor_evaluation_cost=None), TypeError, "monitor_evaluation_cost must be True or False"),
    (dict(monitor_evaluation_accuracy=0), TypeError, "monitor_evaluation_accuracy must be True or False"),
    (dict(early_stopping_n=0), ValueError, "early_stopping_n must be an integer >= 1"),
    (dict(early_stopping_n=-3), ValueError, "early_stopping_n must be an integer >= 1"),
    (dict(early_stopping_n=2.0), TypeError, "early_stopping_n must be an integer"),
    (dict(early_stopping_n=True), TypeError, "early_stopping_n must be an integer"),
    (dict(eta_schedule_n=0), ValueError, "eta_schedule_n must be an integer >= 1"),
    (dict(evaluation_data=np.zeros((3, 3))), TypeError, "evaluation_data must be a pair"),
    (dict(evaluation_data=(np.zeros((3, 4)), np.array([0, 1, 5]))), ValueError, r"evaluation_data\[1\]"),
    (dict(evaluation_data=(np.zeros((3, 3)), np.zeros((3, 2)))), ValueError, r"evaluation_data\[0\]"),
]


@pytest.mark.parametrize("kw, exc, pattern", BAD_SGD, ids=[str(i) for i in range(len(BAD_SGD))])
@pytest.mark.parametrize("cls", CLASSES)
def test_bad_sgd_arguments_leave_the_network_unchanged(cls, kw, exc, pattern):
    net = cls([4, 5, 3], seed=0)
    X, Y, Xe, le = small_problem()
    net.update_mini_batch(X, Y, 0.5, mu=0.5)
    snap = snapshot(net)
    run = dict(evaluation_data=(Xe, le))
    run.update(kw)
    with pytest.raises(exc, match=pattern):
        net.sgd(X, Y, 2, 5, 0.5, **run)
    assert_unchanged(net, snap)


@pytest.mark.parametrize("kw", [dict(lmbda=None), dict(mu=None), dict(lmbda=False), dict(mu=0j)],
                         ids=["lmbda=None", "mu=None", "lmbda=False", "mu=0j"])
@pytest.mark.parametrize("cls", [
    pytest.param(cbackprop.Network, id="C"),  # (its fast path once skipped these checks)
    pytest.param(reference.Network, id="ref")])
def test_update_mini_batch_rejects_falsy_non_numbers(cls, kw):
    net = cls([3, 4, 2], seed=0)
    X, Y = data_for(net)
    snap = snapshot(net)
    with pytest.raises(TypeError, match=next(iter(kw)) + " must be a real number"):
        net.update_mini_batch(X, Y, 0.5, **kw)
    assert_unchanged(net, snap)


def test_mu_bounds_are_inclusive():
    for cls in (cbackprop.Network, reference.Network):
        net = cls([3, 2], seed=0)
        X, Y = data_for(net)
        net.update_mini_batch(X, Y, 0.5, mu=1.0)
        net.update_mini_batch(X, Y, 0.5, mu=0.0, lmbda=0.0, n=5)
