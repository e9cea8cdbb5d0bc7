"""The C path (cbackprop.Network) against the pure-NumPy reference, always as
assert_allclose(actual=fast, desired=reference) with the per-dtype tolerances of conftest."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cbackprop
from cbackprop import reference

DTYPES = [np.float64, np.float32]
SIZES = [
    [1, 1],                      # depth 1, smallest
    [7, 3],                      # depth 1
    [5, 9, 3],                   # depth 2, odd widths
    [784, 30, 10],               # the book's network
    [13, 11, 9, 7],              # depth 3
    [17, 33, 15, 9, 5],          # depth 4
    [8, 6, 5, 4, 3, 2],          # depth 5
    [301, 257, 129, 10],         # widths of a few hundred
]
BATCHES = [1, 2, 7, 10, 32]


# After training, rounding differences of every step have compounded, and how far depends
# on the summation order of both sides (NumPy's OpenBLAS kernels differ by CPU: on
# [784, 30, 10] after 2 epochs at eta 3, float64 differences of 1e-14 to 5e-12 relative were
# seen across OpenBLAS core types; float32 differences up to 6e-4 on an entry).  So a
# trajectory is compared with a slack measured in the same test: the reference's own
# distance from a long-double shadow run of the same steps (exact_shadow).  That distance
# is itself one draw of rounding noise: for float32 [784, 30, 10] it was 2.4e-4 with
# OpenBLAS's Haswell kernels and 6.8e-5 with its SkylakeX kernels, while the C path's stayed
# at 2.4e-4 (1x and 3.5x the reference's).  So the C path may be up to 7x as far from the
# shadow as the reference is (|fast - ref| <= 8 slack).  On top, the per-dtype base
# tolerance for entries that did not drift (conftest's check_trajectory, shared with
# test_chapter3.py).


def pair(sizes, dtype, seed=0):
    return cbackprop.Network(sizes, dtype=dtype, seed=seed), reference.Network(sizes, dtype=dtype, seed=seed)


# Hidden layers whose rows are a multiple of 2 KiB (512 floats, 256 or 512 doubles) keep
# their workspace rows one cache line apart more than n (net.c: cbp_ld): every quantity of
# the trace, read back through those strided rows, against the reference.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [1, 7, 32])
def test_trace_through_padded_workspace_rows_matches_reference(dtype, m, batch, assert_close):
    sizes = [40, 512, 256, 3]
    fast, ref = pair(sizes, dtype, seed=3)
    padded = [l for l in range(len(sizes)) if fast._engine.workspace_ld(l) > sizes[l]]
    assert padded == ([1, 2] if dtype == np.float64 else [1])      # the case under test
    assert all(fast._engine.workspace_ld(l) == sizes[l] for l in (0, len(sizes) - 1))
    X, Y = batch(sizes, m, seed=m)
    t, r = fast.trace(X, Y), ref.trace(X, Y)
    for name in ("z", "a", "delta", "nabla_b", "nabla_w"):
        for l, (u, v) in enumerate(zip(getattr(t, name), getattr(r, name))):
            assert u.shape == v.shape and u.flags.c_contiguous
            assert_close(u, v, dtype, f"{name}[{l}]")
    assert_close(fast.feedforward(X), ref.feedforward(X), dtype, "feedforward")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", SIZES, ids=str)
def test_same_seed_same_initial_parameters(sizes, dtype):
    fast, ref = pair(sizes, dtype, seed=42)
    for a, d in zip(fast.weights + fast.biases, ref.weights + ref.biases):
        assert a.dtype == dtype and a.shape == d.shape
        np.testing.assert_array_equal(a, d)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", SIZES, ids=str)
@pytest.mark.parametrize("m", BATCHES)
def test_feedforward_and_backprop_match_reference(sizes, m, dtype, batch, assert_close):
    fast, ref = pair(sizes, dtype)
    X, Y = batch(sizes, m, seed=m)
    out = fast.feedforward(X)
    assert out.shape == (m, sizes[-1]) and out.dtype == dtype
    assert_close(out, ref.feedforward(X), dtype, "feedforward")
    nabla_b, nabla_w = fast.backprop(X, Y)
    ref_b, ref_w = ref.backprop(X, Y)
    for l in range(len(sizes) - 1):
        assert nabla_b[l].shape == (sizes[l + 1],) and nabla_w[l].shape == (sizes[l + 1], sizes[l])
        assert nabla_b[l].dtype == dtype and nabla_w[l].dtype == dtype
        assert_close(nabla_b[l], ref_b[l], dtype, f"nabla_b of layer {l + 1}")
        assert_close(nabla_w[l], ref_w[l], dtype, f"nabla_w of layer {l + 1}")
    assert_close(fast.cost(X, Y), ref.cost(X, Y), dtype, "cost")


@pytest.mark.parametrize("dtype", DTYPES)
def test_single_sample_is_the_books_per_sample_gradient(dtype, batch, assert_close):
    sizes = [6, 5, 4]
    fast, ref = pair(sizes, dtype)
    X, Y = batch(sizes, 1)
    b1, w1 = fast.backprop(X[0], Y[0])
    b2, w2 = ref._backprop_one(X[0].reshape(-1, 1).astype(dtype), Y[0].reshape(-1, 1).astype(dtype))
    for a, d in zip(b1 + w1, [b.ravel() for b in b2] + w2):
        assert_close(a, d, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", [[5, 9, 3], [784, 30, 10], [17, 33, 15, 9, 5]], ids=str)
def test_parameters_after_100_update_mini_batch_steps(sizes, dtype, exact_shadow, check_trajectory):
    fast, ref = pair(sizes, dtype, seed=7)
    shadow = exact_shadow(ref)
    rng = np.random.default_rng(1)
    for step in range(100):
        m = int(rng.integers(1, 12))
        X, Y = rng.random((m, sizes[0])).astype(dtype), rng.random((m, sizes[-1])).astype(dtype)
        for net in (fast, ref, shadow):
            net.update_mini_batch(X, Y, eta=0.5)
    check_trajectory(fast, ref, shadow, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes, n, mbs", [([5, 9, 3], 50, 7), ([784, 30, 10], 203, 10),
                                           ([13, 11, 9, 7], 40, 40), ([4, 6, 2], 9, 100)], ids=str)
def test_parameters_and_history_after_2_epochs_of_sgd(sizes, n, mbs, dtype, exact_shadow, check_trajectory):
    fast, ref = pair(sizes, dtype, seed=11)
    shadow = exact_shadow(ref)
    rng = np.random.default_rng(2)
    X = rng.random((n, sizes[0])).astype(dtype)
    labels = rng.integers(0, sizes[-1], n)
    Y = np.eye(sizes[-1], dtype=dtype)[labels]
    hf = fast.sgd(X, Y, 2, mbs, 3.0, test_data=(X, labels))
    hr = ref.sgd(X, Y, 2, mbs, 3.0, test_data=(X, labels))
    shadow.sgd(X, Y, 2, mbs, 3.0)
    check_trajectory(fast, ref, shadow, dtype)
    assert [h["epoch"] for h in hf] == [1, 2]
    if dtype == np.float64:  # float32 may flip a borderline argmax
        assert [h["test_correct"] for h in hf] == [h["test_correct"] for h in hr]
    assert all(h["test_total"] == n for h in hf)
    # Both drew the same shuffles: the generators are in the same state afterwards.
    assert fast._rng.integers(1 << 62) == ref._rng.integers(1 << 62)


@pytest.mark.parametrize("dtype", DTYPES)
def test_feedforward_on_more_rows_than_one_chunk(dtype, assert_close):
    sizes = [20, 15, 4]
    fast, ref = pair(sizes, dtype)
    X = np.random.default_rng(0).random((2500, 20))
    assert_close(fast.feedforward(X), ref.feedforward(X), dtype)
    labels = np.random.default_rng(1).integers(0, 4, 2500)
    assert fast.evaluate(X, labels) == ref.evaluate(X, labels)


@pytest.mark.parametrize("dtype", DTYPES)
def test_weights_are_writable_views_of_one_buffer(dtype, batch, assert_close):
    sizes = [4, 5, 3]
    fast, ref = pair(sizes, dtype, seed=0)
    views = fast.weights + fast.biases
    blob = fast._engine.params          # (a 64-byte-aligned slice of a larger allocation)
    assert blob.ctypes.data % 64 == 0
    assert all(v.base is views[0].base and np.shares_memory(v, blob) for v in views)
    assert blob.flags.c_contiguous and blob.size == sum(v.size for v in views)
    new_w = np.random.default_rng(5).standard_normal((5, 4))
    fast.weights[0][...] = new_w
    ref.weights[0][...] = new_w
    fast.biases[1][:] = 0.25
    ref.biases[1][:] = 0.25
    X, _ = batch(sizes, 3)
    assert_close(fast.feedforward(X), ref.feedforward(X), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_saturated_sigmoids_stay_finite(dtype, assert_close):
    """Large |z| (exp overflow in sigma) gives exact 0/1 activations and zero gradients, no NaN."""
    sizes = [3, 2]
    fast, ref = pair(sizes, dtype)
    for net in (fast, ref):
        net.weights = [np.array([[1e3, 0, 0], [-1e3, 0, 0]])]
    X, Y = np.array([[1.0, 0, 0], [-1.0, 0, 0]]), np.array([[0.5, 0.5], [0.5, 0.5]])
    out = fast.feedforward(X)
    assert np.all(np.isfinite(out))
    assert_close(out, ref.feedforward(X), dtype)
    for a, d in zip(sum(fast.backprop(X, Y), []), sum(ref.backprop(X, Y), [])):
        assert np.all(np.isfinite(a))
        assert_close(a, d, dtype)


sizes_strategy = st.lists(st.integers(1, 24), min_size=2, max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=sizes_strategy, m=st.integers(1, 12), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from(DTYPES), scale=st.sampled_from([0.1, 1.0, 4.0]))
def test_property_backprop_matches_reference(sizes, m, seed, dtype, scale, assert_close, exact_gradient,
                                            tol):
    fast, ref = pair(sizes, dtype, seed=seed)
    rng = np.random.default_rng(seed)
    X = (scale * rng.standard_normal((m, sizes[0]))).astype(dtype)
    Y = rng.random((m, sizes[-1])).astype(dtype)
    assert_close(fast.feedforward(X), ref.feedforward(X), dtype, "feedforward")
    got, want = sum(fast.backprop(X, Y), []), sum(ref.backprop(X, Y), [])
    truth = sum(exact_gradient(ref.weights, ref.biases, X, Y), [])
    # Random networks reach badly conditioned gradients that the fixed cases above avoid:
    # saturated sigmoids (sigma'(z) = a(1 - a) keeps few correct bits when a rounds near 1)
    # and batch sums that cancel (bottleneck layers of width 1).  There two correct
    # implementations differ by more than rtol.  The extra slack is measured, not chosen:
    # the reference's own error against long-double arithmetic on the same values; the C
    # path may be up to 3x as far from it as the reference is.
    t = tol[dtype]
    for l, (a, d, e) in enumerate(zip(got, want, truth)):
        slack = float(np.abs(d.astype(np.longdouble) - e).max())
        atol = t["atol_scale"] * float(np.abs(d).max()) + 4 * slack
        np.testing.assert_allclose(a, d, rtol=t["rtol"], atol=atol, err_msg=f"gradient array {l}")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=sizes_strategy, n=st.integers(1, 30), mbs=st.integers(1, 35),
       seed=st.integers(0, 2**32 - 1), eta=st.floats(0.01, 3.0))
def test_property_sgd_matches_reference(sizes, n, mbs, seed, eta, exact_shadow, check_trajectory):
    fast, ref = pair(sizes, np.float64, seed=seed)
    shadow = exact_shadow(ref)
    rng = np.random.default_rng(seed)
    X, Y = rng.random((n, sizes[0])), rng.random((n, sizes[-1]))
    fast.sgd(X, Y, 2, mbs, eta)
    ref.sgd(X, Y, 2, mbs, eta)
    shadow.sgd(X, Y, 2, mbs, eta)
    # (random sizes and eta up to 3: outside the cases the reference-vs-shadow bound was
    # measured on, so only the C-vs-reference comparison)
    check_trajectory(fast, ref, shadow, np.float64, bound_reference=False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_trajectory_check_can_fail(dtype, exact_shadow, check_trajectory):
    """The slack-based trajectory comparison still catches a step that is slightly wrong."""
    sizes = [784, 30, 10]
    fast, ref = pair(sizes, dtype, seed=11)
    shadow = exact_shadow(ref)
    rng = np.random.default_rng(2)
    X = rng.random((203, 784)).astype(dtype)
    Y = np.eye(10, dtype=dtype)[rng.integers(0, 10, 203)]
    fast.sgd(X, Y, 2, 10, 3.0 * 1.01)   # eta off by 1%
    ref.sgd(X, Y, 2, 10, 3.0)
    shadow.sgd(X, Y, 2, 10, 3.0)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):   # (C vs reference)
        check_trajectory(fast, ref, shadow, dtype)
