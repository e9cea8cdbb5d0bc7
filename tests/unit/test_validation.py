"""Argument validation of cbackprop.Network (C path) and cbackprop.reference.Network.

Every bad input must raise TypeError (wrong kind of object) or ValueError (wrong value) with
a message that names the parameter and states the offending value, and a rejected call
must leave the network exactly as it was: weights and biases bitwise equal, and the
network's generator not advanced (checked through the shuffles of a later sgd).

Also covered: the inputs that must be accepted and converted (integer, uint8, float32,
Fortran-ordered, strided, read-only, one sample, empty batches, views of the network's
own parameters) and that they give the same result as a plain C-contiguous copy.
"""
import re

import numpy as np
import pytest

import cbackprop
from cbackprop import _core
from cbackprop import reference

CLASSES = [pytest.param(cbackprop.Network, id="C"),
           pytest.param(reference.Network, id="reference")]
DTYPES = [pytest.param(np.float64, id="f64"), pytest.param(np.float32, id="f32")]

SIZES = [3, 4, 2]   # n_0 = 3 inputs, n_L = 2 outputs
M = 5               # rows in the good batch


@pytest.fixture(params=CLASSES)
def cls(request):
    return request.param


@pytest.fixture(params=DTYPES)
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture
def net(cls, dtype):
    return cls(SIZES, dtype=dtype, seed=0)


def good_data(m=M):
    rng = np.random.default_rng(123)
    X = rng.random((m, SIZES[0]))
    Y = rng.random((m, SIZES[-1]))
    labels = np.arange(m) % SIZES[-1]
    return X, Y, labels


# ---- helpers ------------------------------------------------------------------------------

def snapshot(net):
    return ([w.copy() for w in net.weights], [b.copy() for b in net.biases])


def assert_unchanged(net, snap):
    ws, bs = snap
    assert len(net.weights) == len(ws) and len(net.biases) == len(bs)
    for new, old in zip(net.weights + net.biases, ws + bs):
        assert new.dtype == old.dtype and new.shape == old.shape
        assert np.array_equal(new, old)
        assert new.tobytes() == old.tobytes()  # bitwise, including the sign of zeros


def assert_rejected(net, exc, pattern, fn):
    """fn() raises exc with a message matching pattern, and the network is unchanged."""
    snap = snapshot(net)
    with pytest.raises(exc, match=pattern) as info:
        fn()
    assert_unchanged(net, snap)
    return info


def assert_same(a, b):
    """Same values up to a few ulps: the C kernels' SIMD reductions may split a dot
    product differently depending on how a buffer is aligned in memory."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    eps = np.finfo(a.dtype).eps if a.dtype.kind == "f" else 0
    np.testing.assert_allclose(a, b, rtol=16 * eps, atol=16 * eps)


def assert_same_params(net_a, net_b):
    for p, q in zip(net_a.weights + net_a.biases, net_b.weights + net_b.biases):
        assert_same(p, q)


def esc(value):
    return re.escape(str(value))


def with_value(arr, index, value):
    arr = np.array(arr, dtype=float)
    arr[index] = value
    return arr


# =========================================================================================
# Constructor: sizes, dtype, seed
# =========================================================================================

@pytest.mark.parametrize("sizes, exc, pattern", [
    # not a sequence
    (5, TypeError, r"sizes must be a sequence.*got 5"),
    (3.0, TypeError, r"sizes must be a sequence.*got 3\.0"),
    (None, TypeError, r"sizes must be a sequence.*got None"),
    (np.array(3), TypeError, r"sizes must be a sequence.*got array\(3\)"),
    (object, TypeError, r"sizes must be a sequence.*got <class 'object'>"),
    # strings are sequences, but not of integers
    ("3,2", TypeError, r"sizes must be a sequence.*got '3,2'"),
    ("32", TypeError, r"sizes must be a sequence.*got '32'"),
    (b"\x03\x02", TypeError, r"sizes must be a sequence.*got b'\\x03\\x02'"),
    # fewer than two layers
    ([], ValueError, r"sizes must list at least 2 layers.*got \[\]"),
    ([3], ValueError, r"sizes must list at least 2 layers.*got \[3\]"),
    ((7,), ValueError, r"sizes must list at least 2 layers.*got \[7\]"),
    (np.array([4]), ValueError, r"sizes must list at least 2 layers.*got \[.*4\)?\]"),
    # a layer with fewer than one neuron
    ([3, 0, 2], ValueError, r"sizes\[1\] must be an integer >= 1, got 0"),
    ([0, 2], ValueError, r"sizes\[0\] must be an integer >= 1, got 0"),
    ([3, 2, -1], ValueError, r"sizes\[2\] must be an integer >= 1, got -1"),
    ([3, np.int64(-5)], ValueError, r"sizes\[1\] must be an integer >= 1, got -5"),
    # non-integer entries
    ([3, 2.0], TypeError, r"sizes\[1\] must be an integer, got 2\.0 of type float"),
    ([3.5, 2], TypeError, r"sizes\[0\] must be an integer, got 3\.5 of type float"),
    ([3, np.float64(2)], TypeError, r"sizes\[1\] must be an integer.*2\.0.*float64"),
    (np.array([3.0, 2.0]), TypeError, r"sizes\[0\] must be an integer.*3\.0.*float64"),
    ([3, "2"], TypeError, r"sizes\[1\] must be an integer, got '2' of type str"),
    ([3, None], TypeError, r"sizes\[1\] must be an integer, got None of type NoneType"),
    ([3, 2 + 0j], TypeError, r"sizes\[1\] must be an integer, got \(2\+0j\) of type complex"),
    ([3, [2]], TypeError, r"sizes\[1\] must be an integer, got \[2\] of type list"),
    # bools are integers to Python, not layer sizes
    ([True, 2], TypeError, r"sizes\[0\] must be an integer, got True of type bool"),
    ([3, np.True_], TypeError, r"sizes\[1\] must be an integer, got .*True.* of type bool"),
    (np.array([True, True]), TypeError, r"sizes\[0\] must be an integer, got .*True.* of type bool"),
    # beyond the 32-bit-safe limit
    ([3, 2**31], ValueError, r"sizes\[1\] must be at most 2147483647, got 2147483648"),
    ([2**63, 2], ValueError, r"sizes\[0\] must be at most 2147483647, got 9223372036854775808"),
    ([3, 10**30], ValueError, r"sizes\[1\] must be at most 2147483647, got 1000000000000000000000000000000"),
    ([3, np.uint64(2**64 - 1)], ValueError, r"sizes\[1\] must be at most 2147483647, got 18446744073709551615"),
])
def test_bad_sizes(cls, sizes, exc, pattern):
    with pytest.raises(exc, match=pattern):
        cls(sizes)


@pytest.mark.parametrize("make_sizes, expected", [
    (lambda: [3, 4, 2], (3, 4, 2)), (lambda: (3, 4, 2), (3, 4, 2)),
    (lambda: np.array([3, 4, 2]), (3, 4, 2)), (lambda: np.array([3, 4, 2], dtype=np.uint8), (3, 4, 2)),
    (lambda: [np.int64(3), np.int32(4), 2], (3, 4, 2)), (lambda: range(3, 1, -1), (3, 2)),
    (lambda: (n for n in [3, 4, 2]), (3, 4, 2)),
], ids=["list", "tuple", "ndarray", "uint8", "numpy-ints", "range", "generator"])
def test_sizes_accepted(cls, make_sizes, expected):
    net = cls(make_sizes(), seed=0)
    assert net.sizes == expected
    assert all(type(n) is int for n in net.sizes)
    assert [w.shape for w in net.weights] == list(zip(expected[1:], expected[:-1]))
    assert [b.shape for b in net.biases] == [(n,) for n in expected[1:]]


@pytest.mark.parametrize("dt, exc, pattern", [
    (np.int32, ValueError, r"dtype must be float32 or float64, got int32"),
    ("int64", ValueError, r"dtype must be float32 or float64, got int64"),
    ("float16", ValueError, r"dtype must be float32 or float64, got float16"),
    (np.float16, ValueError, r"dtype must be float32 or float64, got float16"),
    (np.longdouble, ValueError, "dtype must be float32 or float64, got " + esc(np.dtype(np.longdouble))),
    (complex, ValueError, r"dtype must be float32 or float64, got complex128"),
    (np.complex64, ValueError, r"dtype must be float32 or float64, got complex64"),
    (bool, ValueError, r"dtype must be float32 or float64, got bool"),
    (object, ValueError, r"dtype must be float32 or float64, got object"),
    ("U3", ValueError, r"dtype must be float32 or float64, got <U3"),
    (">f8" if np.little_endian else "<f8", ValueError, r"dtype must be float32 or float64, got [<>]f8"),
    ("f8,f8", ValueError, r"dtype must be float32 or float64, got \[\('f0'"),
    (object(), TypeError, r"dtype must be float32 or float64, got <object object at"),
    ("garbage", TypeError, r"dtype must be float32 or float64, got 'garbage'"),
    (3.5, TypeError, r"dtype must be float32 or float64, got 3\.5"),
    ([1, 2], TypeError, r"dtype must be float32 or float64, got \[1, 2\]"),
])
def test_bad_dtype(cls, dt, exc, pattern):
    with pytest.raises(exc, match=pattern):
        cls(SIZES, dtype=dt)


@pytest.mark.parametrize("dt, expected", [
    (np.float64, np.float64), (np.float32, np.float32), ("float32", np.float32), ("f8", np.float64),
    (float, np.float64), (np.dtype("float32"), np.float32), ("=f4", np.float32),
])
def test_dtype_accepted(cls, dt, expected):
    net = cls(SIZES, dtype=dt, seed=0)
    assert net.dtype == np.dtype(expected)
    assert all(p.dtype == np.dtype(expected) for p in net.weights + net.biases)
    assert net.feedforward(np.zeros(3)).dtype == np.dtype(expected)


@pytest.mark.parametrize("seed, exc, pattern", [
    (-1, ValueError, r"seed must be an integer >= 0, got -1"),
    (np.int64(-7), ValueError, r"seed must be an integer >= 0, got -7"),
    (-(2**70), ValueError, r"seed must be an integer >= 0, got -1180591620717411303424"),
    (1.5, TypeError, r"seed must be an integer, got 1\.5 of type float"),
    (1.0, TypeError, r"seed must be an integer, got 1\.0 of type float"),
    (np.float32(2), TypeError, r"seed must be an integer, got .*2\.0.* of type float32"),
    ("0", TypeError, r"seed must be an integer, got '0' of type str"),
    ("abc", TypeError, r"seed must be an integer, got 'abc' of type str"),
    (True, TypeError, r"seed must be an integer, got True of type bool"),
    (False, TypeError, r"seed must be an integer, got False of type bool"),
    (np.bool_(True), TypeError, r"seed must be an integer, got .*True.* of type bool"),
    ([1, 2], TypeError, r"seed must be an integer, got \[1, 2\] of type list"),
    (np.random.default_rng(0), TypeError, r"seed must be an integer, got Generator.* of type Generator"),
])
def test_bad_seed(cls, seed, exc, pattern):
    with pytest.raises(exc, match=pattern):
        cls(SIZES, seed=seed)


@pytest.mark.parametrize("seed", [0, 1, np.int64(5), np.uint8(3), 2**70, None])
def test_seed_accepted(cls, seed):
    net = cls(SIZES, seed=seed)
    if seed is not None:
        again = cls(SIZES, seed=seed)
        for p, q in zip(net.weights + net.biases, again.weights + again.biases):
            assert np.array_equal(p, q)


def test_constructor_arguments_are_keyword_only(cls):
    with pytest.raises(TypeError):
        cls(SIZES, np.float64)
    with pytest.raises(TypeError):
        cls(SIZES, np.float64, 0)


# =========================================================================================
# X: the inputs of every method
# =========================================================================================

def _call(method, net, X):
    """method on net with X and otherwise good arguments (Y, labels shaped for M rows)."""
    _, Y, labels = good_data()
    return {
        "feedforward": lambda: net.feedforward(X),
        "backprop": lambda: net.backprop(X, Y),
        "cost": lambda: net.cost(X, Y),
        "update_mini_batch": lambda: net.update_mini_batch(X, Y, 0.5),
        "evaluate": lambda: net.evaluate(X, labels),
        "sgd": lambda: net.sgd(X, Y, 1, 2, 0.5),
    }[method]


METHODS = ["feedforward", "backprop", "cost", "update_mini_batch", "evaluate", "sgd"]
NONEMPTY_METHODS = ["backprop", "cost", "update_mini_batch", "sgd"]   # need >= 1 sample

X_GOOD = good_data()[0]

BAD_X = [
    # wrong number of dimensions
    pytest.param(np.float64(1.0), ValueError, r"X must be 1-D .* or 2-D .*got ndim=0", id="ndim0"),
    pytest.param(1.0, ValueError, r"X must be 1-D .* or 2-D .*got ndim=0", id="scalar"),
    pytest.param(np.zeros((M, 1, 3)), ValueError, r"X must be 1-D .* or 2-D .*got ndim=3", id="ndim3"),
    pytest.param(np.zeros((1, M, 3, 1)), ValueError, r"X must be 1-D .* or 2-D .*got ndim=4", id="ndim4"),
    # wrong number of columns
    pytest.param(np.zeros((M, 4)), ValueError, r"X must have shape \(m, 3\) .*got shape \(5, 4\)", id="cols4"),
    pytest.param(np.zeros((M, 2)), ValueError, r"X must have shape \(m, 3\) .*got shape \(5, 2\)", id="cols2"),
    pytest.param(np.zeros((M, 0)), ValueError, r"X must have shape \(m, 3\) .*got shape \(5, 0\)", id="cols0"),
    pytest.param(np.zeros((3, M)), ValueError, r"X must have shape \(m, 3\) .*got shape \(3, 5\)", id="transposed"),
    pytest.param(np.zeros(4), ValueError, r"X as one sample must have shape \(3,\), got shape \(4,\)", id="1d-len4"),
    pytest.param([], ValueError, r"X as one sample must have shape \(3,\), got shape \(0,\)", id="empty-list"),
    # not finite
    pytest.param(with_value(X_GOOD, (2, 1), np.nan), ValueError,
                 r"X must hold only finite .*values, got nan at index \(2, 1\)", id="nan"),
    pytest.param(with_value(X_GOOD, (0, 0), np.inf), ValueError,
                 r"X must hold only finite .*values, got inf at index \(0, 0\)", id="+inf"),
    pytest.param(with_value(X_GOOD, (4, 2), -np.inf), ValueError,
                 r"X must hold only finite .*values, got -inf at index \(4, 2\)", id="-inf"),
    pytest.param(with_value(X_GOOD, (3, 0), np.nan).astype(np.float32), ValueError,
                 r"X must hold only finite .*values, got nan at index \(3, 0\)", id="nan-f32"),
    pytest.param(with_value(X_GOOD, (1, 1), np.inf).tolist(), ValueError,
                 r"X must hold only finite .*values, got inf at index \(1, 1\)", id="inf-list"),
    # not real numbers
    pytest.param(X_GOOD.astype(complex), TypeError, r"X must hold real numbers, got an array of dtype complex128",
                 id="complex"),
    pytest.param(X_GOOD.astype(np.complex64), TypeError, r"X must hold real numbers, .*dtype complex64",
                 id="complex64"),
    pytest.param(X_GOOD.astype(object), TypeError, r"X must hold real numbers, got an array of dtype object",
                 id="object"),
    pytest.param(np.array([["1", "2", "3"]] * M), TypeError, r"X must hold real numbers, .*dtype <U1",
                 id="str-array"),
    pytest.param([["a", "b", "c"]] * M, TypeError, r"X must hold real numbers, .*dtype <U1", id="str-list"),
    pytest.param(np.array([[b"1", b"2", b"3"]] * M), TypeError, r"X must hold real numbers, .*dtype \|S1",
                 id="bytes-array"),
    pytest.param("abc", TypeError, r"X must hold real numbers, .*dtype <U3", id="str"),
    pytest.param(None, TypeError, r"X must hold real numbers, .*dtype object", id="None"),
    pytest.param(np.zeros((M, 3), dtype="datetime64[s]"), TypeError, r"X must hold real numbers, .*datetime64",
                 id="datetime"),
    pytest.param(np.zeros((M, 3), dtype="timedelta64[s]"), TypeError, r"X must hold real numbers, .*timedelta64",
                 id="timedelta"),
    pytest.param(np.zeros(M, dtype="f8,f8,f8"), TypeError, r"X must hold real numbers, .*dtype \[\('f0'",
                 id="structured"),
    # ragged
    pytest.param([[1, 2, 3], [1, 2]], TypeError, r"X must be an array of real numbers, got \[\[1, 2, 3\], \[1, 2\]\]",
                 id="ragged"),
    pytest.param([[1.0, 2.0, 3.0], [1.0, [2.0], 3.0]], TypeError, r"X must be an array of real numbers, got \[\[1\.0",
                 id="ragged-nested"),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("X, exc, pattern", BAD_X)
def test_bad_X(net, method, X, exc, pattern):
    assert_rejected(net, exc, pattern, _call(method, net, X))


@pytest.mark.parametrize("method", NONEMPTY_METHODS)
@pytest.mark.parametrize("X", [np.zeros((0, 3)), np.zeros((0, 3), dtype=np.float32), np.zeros((0, 3), dtype=int)],
                         ids=["f64", "f32", "int"])
def test_empty_batch_rejected(net, method, X):
    _, Y, _ = good_data()
    Y0 = Y[:0]
    fn = {
        "backprop": lambda: net.backprop(X, Y0),
        "cost": lambda: net.cost(X, Y0),
        "update_mini_batch": lambda: net.update_mini_batch(X, Y0, 0.5),
        "sgd": lambda: net.sgd(X, Y0, 1, 1, 0.5),
    }[method]
    assert_rejected(net, ValueError, r"X must hold at least one sample, got shape \(0, 3\)", fn)


@pytest.mark.parametrize("method", METHODS)
def test_out_of_range_for_float32_rejected(cls, method):
    """A float64 value beyond float32's range is not finite in a float32 network: a clear
    ValueError quoting the value as given, not a RuntimeWarning from the cast."""
    net = cls(SIZES, dtype=np.float32, seed=0)
    X = with_value(X_GOOD, (1, 2), 1e300)
    assert_rejected(net, ValueError, r"X must hold only finite float32 values, got 1e\+300 at index \(1, 2\)",
                    _call(method, net, X))


def test_float64_range_ok_in_float64_network(cls):
    net = cls(SIZES, seed=0)
    out = net.feedforward(with_value(X_GOOD, (1, 2), 1e300))
    assert np.isfinite(out).all()


def test_nan_in_one_sample_reports_its_own_index(net):
    x = np.array([0.0, 1.0, np.nan])
    assert_rejected(net, ValueError, r"X must hold only finite .*values, got nan at index \(2,\)",
                    lambda: net.feedforward(x))


def test_sgd_rejects_one_sample(net):
    x, y = X_GOOD[0], good_data()[1][0]
    assert_rejected(net, ValueError, r"X must have shape \(n, 3\) for sgd .*got shape \(3,\)",
                    lambda: net.sgd(x, y, 1, 1, 0.5))


# =========================================================================================
# Y: the targets of backprop, cost, update_mini_batch and sgd
# =========================================================================================

Y_GOOD = good_data()[1]

BAD_Y = [
    pytest.param(np.zeros((M, 3)), ValueError, r"Y must have shape \(m, 2\) .*got shape \(5, 3\)", id="cols3"),
    pytest.param(np.zeros((M, 1)), ValueError, r"Y must have shape \(m, 2\) .*got shape \(5, 1\)", id="cols1"),
    pytest.param(np.zeros((2, M)), ValueError, r"Y must have shape \(m, 2\) .*got shape \(2, 5\)", id="transposed"),
    pytest.param(np.zeros((M - 1, 2)), ValueError, r"Y must have shape \(5, 2\) to match X, got shape \(4, 2\)",
                 id="rows4"),
    pytest.param(np.zeros((M + 1, 2)), ValueError, r"Y must have shape \(5, 2\) to match X, got shape \(6, 2\)",
                 id="rows6"),
    pytest.param(np.zeros((1, 2)), ValueError, r"Y must have shape \(5, 2\) to match X, got shape \(1, 2\)",
                 id="rows1"),
    pytest.param(np.zeros(2), ValueError, r"Y must have shape \(5, 2\) to match X, got shape \(2,\)", id="1d"),
    pytest.param(np.zeros(10), ValueError, r"Y as one sample must have shape \(2,\), got shape \(10,\)",
                 id="1d-flat"),
    pytest.param(np.zeros((M, 2, 1)), ValueError, r"Y must be 1-D .* or 2-D .*got ndim=3", id="ndim3"),
    pytest.param(0.5, ValueError, r"Y must be 1-D .* or 2-D .*got ndim=0", id="scalar"),
    pytest.param(np.zeros((0, 2)), ValueError, r"Y must have shape \(5, 2\) to match X, got shape \(0, 2\)|"
                 r"Y must hold at least one sample, got shape \(0, 2\)", id="empty"),
    pytest.param(with_value(Y_GOOD, (1, 0), np.nan), ValueError,
                 r"Y must hold only finite .*values, got nan at index \(1, 0\)", id="nan"),
    pytest.param(with_value(Y_GOOD, (4, 1), np.inf), ValueError,
                 r"Y must hold only finite .*values, got inf at index \(4, 1\)", id="+inf"),
    pytest.param(with_value(Y_GOOD, (0, 1), -np.inf), ValueError,
                 r"Y must hold only finite .*values, got -inf at index \(0, 1\)", id="-inf"),
    pytest.param(Y_GOOD.astype(complex), TypeError, r"Y must hold real numbers, .*dtype complex128", id="complex"),
    pytest.param(Y_GOOD.astype(object), TypeError, r"Y must hold real numbers, .*dtype object", id="object"),
    pytest.param([["0", "1"]] * M, TypeError, r"Y must hold real numbers, .*dtype <U1", id="str"),
    pytest.param(None, TypeError, r"Y must hold real numbers, .*dtype object", id="None"),
    pytest.param([[0, 1], [1]] * 2 + [[0, 1]], TypeError, r"Y must be an array of real numbers, got \[\[0, 1\], \[1\]",
                 id="ragged"),
]


def _call_y(method, net, X, Y):
    return {
        "backprop": lambda: net.backprop(X, Y),
        "cost": lambda: net.cost(X, Y),
        "update_mini_batch": lambda: net.update_mini_batch(X, Y, 0.5),
        "sgd": lambda: net.sgd(X, Y, 1, 2, 0.5),
    }[method]


@pytest.mark.parametrize("method", NONEMPTY_METHODS)
@pytest.mark.parametrize("Y, exc, pattern", BAD_Y)
def test_bad_Y(net, method, Y, exc, pattern):
    assert_rejected(net, exc, pattern, _call_y(method, net, X_GOOD, Y))


@pytest.mark.parametrize("method", ["backprop", "cost", "update_mini_batch"])
@pytest.mark.parametrize("Y, pattern", [
    (np.zeros((1, 2)), r"Y must have shape \(2,\) to match X, got shape \(1, 2\)"),
    (np.zeros((3, 2)), r"Y must have shape \(2,\) to match X, got shape \(3, 2\)"),
    (np.zeros(3), r"Y as one sample must have shape \(2,\), got shape \(3,\)"),
])
def test_bad_Y_for_one_sample(net, method, Y, pattern):
    assert_rejected(net, ValueError, pattern, _call_y(method, net, X_GOOD[0], Y))


def test_Y_out_of_range_for_float32(cls):
    net = cls(SIZES, dtype=np.float32, seed=0)
    Y = with_value(Y_GOOD, (2, 1), -1e200)
    assert_rejected(net, ValueError, r"Y must hold only finite float32 values, got -1e\+200 at index \(2, 1\)",
                    lambda: net.backprop(X_GOOD, Y))


# =========================================================================================
# labels (evaluate) and test_data (sgd)
# =========================================================================================

LABELS_GOOD = good_data()[2]

BAD_LABELS = [
    pytest.param(LABELS_GOOD.astype(float), TypeError, r"{} must hold integer class labels, .*dtype float64",
                 id="float"),
    pytest.param([0.0, 1.0, 0.0, 1.0, 0.0], TypeError, r"{} must hold integer class labels, .*dtype float64",
                 id="float-list"),
    pytest.param(LABELS_GOOD.astype(np.float32), TypeError, r"{} must hold integer class labels, .*dtype float32",
                 id="float32"),
    pytest.param(LABELS_GOOD.astype(bool), TypeError, r"{} must hold integer class labels, .*dtype bool", id="bool"),
    pytest.param(LABELS_GOOD.astype(complex), TypeError, r"{} must hold integer class labels, .*dtype complex128",
                 id="complex"),
    pytest.param(LABELS_GOOD.astype(object), TypeError, r"{} must hold integer class labels, .*dtype object",
                 id="object"),
    pytest.param(["0", "1", "0", "1", "0"], TypeError, r"{} must hold integer class labels, .*dtype <U1", id="str"),
    pytest.param(None, TypeError, r"{} must hold integer class labels, .*dtype object", id="None"),
    pytest.param([[0], [1, 0], 1, 0, 1], TypeError, r"{} must be an array of integer labels, got \[\[0\], \[1, 0\]",
                 id="ragged"),
    pytest.param(LABELS_GOOD[:4], ValueError, r"{} must have shape \(5,\) to match X, got shape \(4,\)", id="short"),
    pytest.param(np.r_[LABELS_GOOD, 0], ValueError, r"{} must have shape \(5,\) to match X, got shape \(6,\)",
                 id="long"),
    pytest.param(LABELS_GOOD.reshape(M, 1), ValueError, r"{} must have shape \(5,\) to match X, got shape \(5, 1\)",
                 id="2d"),
    pytest.param(np.stack([LABELS_GOOD, LABELS_GOOD]), ValueError,
                 r"{} must have shape \(5,\) to match X, got shape \(2, 5\)", id="2d-wide"),
    pytest.param(1, ValueError, r"{} must have shape \(5,\) to match X, got shape \(\)", id="scalar"),
    pytest.param([0, 1, -1, 1, 0], ValueError, r"{} must lie in \[0, 2\) .*got -1", id="negative"),
    pytest.param([0, 1, 2, 1, 0], ValueError, r"{} must lie in \[0, 2\) .*got 2", id="n_L"),
    pytest.param([0, 1, 7, 1, 0], ValueError, r"{} must lie in \[0, 2\) .*got 7", id="large"),
    pytest.param(np.array([0, 1, 255, 1, 0], dtype=np.uint8), ValueError, r"{} must lie in \[0, 2\) .*got 255",
                 id="uint8"),
    pytest.param([0, -2**62, 1, 2**62, 0], ValueError, r"{} must lie in \[0, 2\) .*got -4611686018427387904",
                 id="both-ends"),
]


@pytest.mark.parametrize("labels, exc, pattern", BAD_LABELS)
def test_bad_labels(net, labels, exc, pattern):
    assert_rejected(net, exc, pattern.format("labels"), lambda: net.evaluate(X_GOOD, labels))


@pytest.mark.parametrize("labels, exc, pattern", BAD_LABELS)
def test_bad_test_data_labels(net, labels, exc, pattern):
    assert_rejected(net, exc, pattern.format(r"test_data\[1\]"),
                    lambda: net.sgd(X_GOOD, Y_GOOD, 1, 2, 0.5, test_data=(X_GOOD, labels)))


def test_labels_for_one_sample(net):
    assert net.evaluate(X_GOOD[0], [1]) in (0, 1)
    assert_rejected(net, ValueError, r"labels must have shape \(1,\) to match X, got shape \(\)",
                    lambda: net.evaluate(X_GOOD[0], 1))


@pytest.mark.parametrize("test_data, pattern", [
    (X_GOOD, r"test_data must be a pair \(X_test, labels\), got array\("),
    ((X_GOOD,), r"test_data must be a pair \(X_test, labels\), got \(array\("),
    ((X_GOOD, LABELS_GOOD, LABELS_GOOD), r"test_data must be a pair \(X_test, labels\), got \(array\("),
    ([], r"test_data must be a pair \(X_test, labels\), got \[\]"),
    ("ab", r"test_data must be a pair \(X_test, labels\), got 'ab'"),
    ({"X": X_GOOD, "labels": LABELS_GOOD}, r"test_data must be a pair \(X_test, labels\), got \{'X'"),
    (np.stack([X_GOOD[:, 0], LABELS_GOOD]), r"test_data must be a pair \(X_test, labels\), got array\("),
    (5, r"test_data must be a pair \(X_test, labels\), got 5"),
    (zip(X_GOOD, LABELS_GOOD), r"test_data must be a pair \(X_test, labels\), got <zip object"),
])
def test_test_data_not_a_pair(net, test_data, pattern):
    assert_rejected(net, TypeError, pattern, lambda: net.sgd(X_GOOD, Y_GOOD, 1, 2, 0.5, test_data=test_data))


@pytest.mark.parametrize("Xt, exc, pattern", [
    (np.zeros((M, 4)), ValueError, r"test_data\[0\] must have shape \(m, 3\) .*got shape \(5, 4\)"),
    (np.zeros((M, 3, 1)), ValueError, r"test_data\[0\] must be 1-D .* or 2-D .*got ndim=3"),
    (np.float64(0.0), ValueError, r"test_data\[0\] must be 1-D .* or 2-D .*got ndim=0"),
    (np.zeros(4), ValueError, r"test_data\[0\] as one sample must have shape \(3,\), got shape \(4,\)"),
    (with_value(X_GOOD, (3, 2), np.nan), ValueError,
     r"test_data\[0\] must hold only finite .*values, got nan at index \(3, 2\)"),
    (with_value(X_GOOD, (0, 1), -np.inf), ValueError,
     r"test_data\[0\] must hold only finite .*values, got -inf at index \(0, 1\)"),
    (X_GOOD.astype(complex), TypeError, r"test_data\[0\] must hold real numbers, .*complex128"),
    (X_GOOD.astype(object), TypeError, r"test_data\[0\] must hold real numbers, .*object"),
    ([[1, 2, 3], [4, 5]], TypeError, r"test_data\[0\] must be an array of real numbers, got \[\[1, 2, 3\]"),
    (X_GOOD[:3], ValueError, r"test_data\[1\] must have shape \(3,\) to match X, got shape \(5,\)"),
])
def test_bad_test_data_X(net, Xt, exc, pattern):
    assert_rejected(net, exc, pattern, lambda: net.sgd(X_GOOD, Y_GOOD, 1, 2, 0.5, test_data=(Xt, LABELS_GOOD)))


@pytest.mark.parametrize("test_data", [
    (X_GOOD, LABELS_GOOD), [X_GOOD.tolist(), LABELS_GOOD.tolist()], (X_GOOD[0], [1]),
    (X_GOOD.astype(np.uint8), LABELS_GOOD.astype(np.uint8)),
])
def test_test_data_accepted(net, test_data):
    history = net.sgd(X_GOOD, Y_GOOD, 2, 2, 0.5, test_data=test_data)
    assert [h["epoch"] for h in history] == [1, 2]
    n = len(test_data[1])
    for h in history:
        assert h["test_total"] == n and 0 <= h["test_correct"] <= n
        assert h["test_accuracy"] == h["test_correct"] / n


def test_empty_test_data_accepted(net):
    history = net.sgd(X_GOOD, Y_GOOD, 1, 2, 0.5, test_data=(np.zeros((0, 3)), np.zeros(0, dtype=int)))
    assert history[0]["test_total"] == 0 and history[0]["test_correct"] == 0
    assert np.isnan(history[0]["test_accuracy"])


# =========================================================================================
# eta, epochs, mini_batch_size
# =========================================================================================

BAD_ETA = [
    pytest.param(float("nan"), ValueError, r"eta must be a finite number > 0, got nan", id="nan"),
    pytest.param(np.float32("nan"), ValueError, r"eta must be a finite number > 0, got nan", id="nan-f32"),
    pytest.param(float("inf"), ValueError, r"eta must be a finite number > 0, got inf", id="inf"),
    pytest.param(-float("inf"), ValueError, r"eta must be a finite number > 0, got -inf", id="-inf"),
    pytest.param(0, ValueError, r"eta must be a finite number > 0, got 0\.0", id="0"),
    pytest.param(0.0, ValueError, r"eta must be a finite number > 0, got 0\.0", id="0.0"),
    pytest.param(-0.0, ValueError, r"eta must be a finite number > 0, got -0\.0", id="-0.0"),
    pytest.param(-0.5, ValueError, r"eta must be a finite number > 0, got -0\.5", id="-0.5"),
    pytest.param(-3, ValueError, r"eta must be a finite number > 0, got -3\.0", id="-3"),
    pytest.param(np.int64(-1), ValueError, r"eta must be a finite number > 0, got -1\.0", id="np-neg"),
    pytest.param(10**400, ValueError, r"eta must be a finite number > 0, got 1000000000", id="huge-int"),
    pytest.param("0.1", TypeError, r"eta must be a real number, got '0\.1' of type str", id="str"),
    pytest.param(True, TypeError, r"eta must be a real number, got True of type bool", id="True"),
    pytest.param(False, TypeError, r"eta must be a real number, got False of type bool", id="False"),
    pytest.param(np.bool_(True), TypeError, r"eta must be a real number, got .*True.* of type bool", id="np-bool"),
    pytest.param(None, TypeError, r"eta must be a real number, got None of type NoneType", id="None"),
    pytest.param(1j, TypeError, r"eta must be a real number, got 1j of type complex", id="complex"),
    pytest.param([0.1], TypeError, r"eta must be a real number, got \[0\.1\] of type list", id="list"),
]


@pytest.mark.parametrize("eta, exc, pattern", BAD_ETA)
def test_bad_eta_update_mini_batch(net, eta, exc, pattern):
    assert_rejected(net, exc, pattern, lambda: net.update_mini_batch(X_GOOD, Y_GOOD, eta))


@pytest.mark.parametrize("eta, exc, pattern", BAD_ETA)
def test_bad_eta_sgd(net, eta, exc, pattern):
    assert_rejected(net, exc, pattern, lambda: net.sgd(X_GOOD, Y_GOOD, 1, 2, eta))


@pytest.mark.parametrize("eta", [3, 0.5, np.float32(0.5), np.int64(2), 1e-8])
def test_eta_accepted(cls, eta):
    a, b = cls(SIZES, seed=0), cls(SIZES, seed=0)
    a.update_mini_batch(X_GOOD, Y_GOOD, eta)
    b.update_mini_batch(X_GOOD, Y_GOOD, float(eta))
    assert_same_params(a, b)


BAD_COUNTS = [
    pytest.param(0, ValueError, r"{} must be an integer >= 1, got 0", id="0"),
    pytest.param(-1, ValueError, r"{} must be an integer >= 1, got -1", id="-1"),
    pytest.param(np.int32(-4), ValueError, r"{} must be an integer >= 1, got -4", id="np-neg"),
    pytest.param(1.0, TypeError, r"{} must be an integer, got 1\.0 of type float", id="1.0"),
    pytest.param(2.5, TypeError, r"{} must be an integer, got 2\.5 of type float", id="2.5"),
    pytest.param(np.float64(2), TypeError, r"{} must be an integer, got .*2\.0.* of type float64", id="np-float"),
    pytest.param(float("nan"), TypeError, r"{} must be an integer, got nan of type float", id="nan"),
    pytest.param(True, TypeError, r"{} must be an integer, got True of type bool", id="True"),
    pytest.param(False, TypeError, r"{} must be an integer, got False of type bool", id="False"),
    pytest.param(np.bool_(True), TypeError, r"{} must be an integer, got .*True.* of type bool", id="np-bool"),
    pytest.param("2", TypeError, r"{} must be an integer, got '2' of type str", id="str"),
    pytest.param(None, TypeError, r"{} must be an integer, got None of type NoneType", id="None"),
]


@pytest.mark.parametrize("value, exc, pattern", BAD_COUNTS)
def test_bad_epochs(net, value, exc, pattern):
    assert_rejected(net, exc, pattern.format("epochs"), lambda: net.sgd(X_GOOD, Y_GOOD, value, 2, 0.5))


@pytest.mark.parametrize("value, exc, pattern", BAD_COUNTS)
def test_bad_mini_batch_size(net, value, exc, pattern):
    assert_rejected(net, exc, pattern.format("mini_batch_size"), lambda: net.sgd(X_GOOD, Y_GOOD, 1, value, 0.5))


@pytest.mark.parametrize("epochs, mbs", [(np.int64(2), np.uint8(2)), (1, M), (1, 10**6), (1, 1)])
def test_counts_accepted(net, epochs, mbs):
    history = net.sgd(X_GOOD, Y_GOOD, epochs, mbs, 0.5)
    assert len(history) == int(epochs)


def test_rejected_sgd_does_not_advance_the_generator(cls, dtype):
    """A rejected sgd must not draw a shuffle: afterwards the network trains exactly like a
    twin that never saw the bad calls."""
    a, b = cls(SIZES, dtype=dtype, seed=3), cls(SIZES, dtype=dtype, seed=3)
    bad_calls = [
        lambda: a.sgd(X_GOOD, Y_GOOD, 0, 2, 0.5),
        lambda: a.sgd(X_GOOD, Y_GOOD, 2, 0, 0.5),
        lambda: a.sgd(X_GOOD, Y_GOOD, 2, 2, float("nan")),
        lambda: a.sgd(X_GOOD, Y_GOOD[:4], 2, 2, 0.5),
        lambda: a.sgd(with_value(X_GOOD, (0, 0), np.nan), Y_GOOD, 2, 2, 0.5),
        lambda: a.sgd(X_GOOD, Y_GOOD, 2, 2, 0.5, test_data=(X_GOOD, LABELS_GOOD[:2])),
        lambda: a.sgd(X_GOOD, Y_GOOD, 2, 2, 0.5, test_data=X_GOOD),
    ]
    for bad in bad_calls:
        with pytest.raises((TypeError, ValueError)):
            bad()
    a.sgd(X_GOOD, Y_GOOD, 3, 2, 0.5)
    b.sgd(X_GOOD, Y_GOOD, 3, 2, 0.5)
    for p, q in zip(a.weights + a.biases, b.weights + b.biases):
        assert np.array_equal(p, q)


# =========================================================================================
# weights and biases setters
# =========================================================================================

def _new_weights(net, scale=0.5):
    return [np.full(w.shape, scale, dtype=w.dtype) for w in net.weights]


def _new_biases(net, scale=0.25):
    return [np.full(b.shape, scale, dtype=b.dtype) for b in net.biases]


def _bad_params():
    """(name, builder(net) -> value, exc, pattern) for the setter tests."""
    W, B = _new_weights, _new_biases
    return [
        # not a list
        pytest.param("weights", lambda n: np.zeros((4, 3)), TypeError, r"weights must be a list of 2 arrays, got array\(",
                     id="weights-ndarray"),
        pytest.param("weights", lambda n: None, TypeError, r"weights must be a list of 2 arrays, got None",
                     id="weights-None"),
        pytest.param("weights", lambda n: 5, TypeError, r"weights must be a list of 2 arrays, got 5", id="weights-int"),
        pytest.param("weights", lambda n: iter(W(n)), TypeError, r"weights must be a list of 2 arrays, got <list_iterator",
                     id="weights-iterator"),
        pytest.param("biases", lambda n: np.zeros(4), TypeError, r"biases must be a list of 2 arrays, got array\(",
                     id="biases-ndarray"),
        # wrong count
        pytest.param("weights", lambda n: W(n)[:1], ValueError, r"weights must be a list of 2 arrays, got 1",
                     id="weights-1"),
        pytest.param("weights", lambda n: W(n) + W(n)[:1], ValueError, r"weights must be a list of 2 arrays, got 3",
                     id="weights-3"),
        pytest.param("weights", lambda n: [], ValueError, r"weights must be a list of 2 arrays, got 0", id="weights-0"),
        pytest.param("biases", lambda n: B(n)[1:], ValueError, r"biases must be a list of 2 arrays, got 1",
                     id="biases-1"),
        pytest.param("biases", lambda n: B(n) * 2, ValueError, r"biases must be a list of 2 arrays, got 4",
                     id="biases-4"),
        # wrong shape
        pytest.param("weights", lambda n: [W(n)[0].T, W(n)[1]], ValueError,
                     r"weights\[0\] must have shape \(4, 3\), got shape \(3, 4\)", id="weights-transposed"),
        pytest.param("weights", lambda n: [W(n)[0], W(n)[1][:, :3]], ValueError,
                     r"weights\[1\] must have shape \(2, 4\), got shape \(2, 3\)", id="weights-cols"),
        pytest.param("weights", lambda n: [W(n)[0].ravel(), W(n)[1]], ValueError,
                     r"weights\[0\] must have shape \(4, 3\), got shape \(12,\)", id="weights-flat"),
        pytest.param("weights", lambda n: [W(n)[0], 0.5], ValueError,
                     r"weights\[1\] must have shape \(2, 4\), got shape \(\)", id="weights-scalar"),
        pytest.param("weights", lambda n: W(n)[::-1], ValueError,
                     r"weights\[0\] must have shape \(4, 3\), got shape \(2, 4\)", id="weights-reversed"),
        pytest.param("biases", lambda n: [B(n)[0][:3], B(n)[1]], ValueError,
                     r"biases\[0\] must have shape \(4,\), got shape \(3,\)", id="biases-short"),
        pytest.param("biases", lambda n: [B(n)[0].reshape(4, 1), B(n)[1]], ValueError,
                     r"biases\[0\] must have shape \(4,\), got shape \(4, 1\)", id="biases-column"),
        pytest.param("biases", lambda n: [B(n)[0], B(n)[1][None]], ValueError,
                     r"biases\[1\] must have shape \(2,\), got shape \(1, 2\)", id="biases-row"),
        # not finite
        pytest.param("weights", lambda n: [with_value(W(n)[0], (1, 2), np.nan), W(n)[1]], ValueError,
                     r"weights\[0\] must hold only finite .*values, got nan at index \(1, 2\)", id="weights-nan"),
        pytest.param("weights", lambda n: [W(n)[0], with_value(W(n)[1], (0, 3), np.inf)], ValueError,
                     r"weights\[1\] must hold only finite .*values, got inf at index \(0, 3\)", id="weights-inf"),
        pytest.param("biases", lambda n: [B(n)[0], with_value(B(n)[1], 1, -np.inf)], ValueError,
                     r"biases\[1\] must hold only finite .*values, got -inf at index \(1,\)", id="biases-inf"),
        pytest.param("biases", lambda n: [with_value(B(n)[0], 3, np.nan), B(n)[1]], ValueError,
                     r"biases\[0\] must hold only finite .*values, got nan at index \(3,\)", id="biases-nan"),
        # not real numbers
        pytest.param("weights", lambda n: [W(n)[0], W(n)[1].astype(complex)], TypeError,
                     r"weights\[1\] must hold real numbers, .*complex128", id="weights-complex"),
        pytest.param("weights", lambda n: [W(n)[0].astype(str), W(n)[1]], TypeError,
                     r"weights\[0\] must hold real numbers, .*<U", id="weights-str"),
        pytest.param("biases", lambda n: [None, B(n)[1]], TypeError,
                     r"biases\[0\] must hold real numbers, .*object", id="biases-None"),
        pytest.param("biases", lambda n: [[1, 2, [3], 4], B(n)[1]], TypeError,
                     r"biases\[0\] must be an array of real numbers, got \[1, 2, \[3\], 4\]", id="biases-ragged"),
    ]


@pytest.mark.parametrize("name, build, exc, pattern", _bad_params())
def test_bad_parameter_setter(net, name, build, exc, pattern):
    value = build(net)
    assert_rejected(net, exc, pattern, lambda: setattr(net, name, value))


@pytest.mark.parametrize("name", ["weights", "biases"])
def test_setter_is_all_or_nothing(net, name):
    """A bad last entry must not let the good first entry through."""
    good = (_new_weights if name == "weights" else _new_biases)(net)
    bad = [good[0], np.full_like(good[1], np.nan)]
    assert_rejected(net, ValueError, rf"{name}\[1\] must hold only finite", lambda: setattr(net, name, bad))
    bad = [good[0], good[1][..., :1]]
    assert_rejected(net, ValueError, rf"{name}\[1\] must have shape", lambda: setattr(net, name, bad))


def test_setter_out_of_range_for_float32(cls):
    net = cls(SIZES, dtype=np.float32, seed=0)
    new = [w.astype(np.float64) for w in net.weights]
    new[1][1, 1] = 3e38 * 10
    assert_rejected(net, ValueError, r"weights\[1\] must hold only finite float32 values, got 3(\.0*)?e\+39 "
                    r"at index \(1, 1\)", lambda: setattr(net, "weights", new))


@pytest.mark.parametrize("convert", [
    lambda a: a, lambda a: a.tolist(), lambda a: np.asfortranarray(a), lambda a: a.astype(np.float32),
    lambda a: np.round(a * 4).astype(np.int16), lambda a: tuple(a.tolist()),
], ids=["same", "list", "fortran", "float32", "int16", "tuple"])
def test_setter_accepts_and_copies(net, convert):
    new_w = [np.arange(w.size, dtype=float).reshape(w.shape) / 7 for w in net.weights]
    new_b = [np.arange(b.size, dtype=float) / 3 - 1 for b in net.biases]
    given_w, given_b = [convert(w) for w in new_w], tuple(convert(b) for b in new_b)
    before = [id(w) for w in net.weights]
    net.weights = given_w
    net.biases = given_b
    for got, want in zip(net.weights + net.biases, [convert(w) for w in new_w] + [convert(b) for b in new_b]):
        assert got.dtype == net.dtype
        assert np.array_equal(got, np.asarray(want).astype(net.dtype))
    # copied in: the network's own arrays are kept, and the caller's arrays are not aliased
    assert [id(w) for w in net.weights] == before
    snap = snapshot(net)
    for g in given_w + list(given_b):
        if isinstance(g, np.ndarray):
            g[...] = 99
    assert_unchanged(net, snap)


def test_setter_accepts_read_only_arrays(net):
    new = _new_weights(net)
    for w in new:
        w.flags.writeable = False
    net.weights = new
    assert all(np.array_equal(w, v) for w, v in zip(net.weights, new))
    assert all(w.flags.writeable for w in net.weights)


def test_setter_accepts_its_own_parameters_reversed(cls):
    """Assigning views of the network's own (equally shaped) parameters in a new order:
    every value is read before any is written."""
    net = cls([3, 3, 3, 3], seed=0)
    old = [w.copy() for w in net.weights]
    net.weights = net.weights[::-1]
    for got, want in zip(net.weights, old[::-1]):
        assert np.array_equal(got, want)


# =========================================================================================
# Acceptance: conversions, memory layouts, read-only, one sample, empty, aliasing
# =========================================================================================

def _results(net, X, Y, labels):
    """Everything the API computes from X (and Y, labels), on twin networks for the updates."""
    out = {"feedforward": net.feedforward(X), "cost": net.cost(X, Y), "evaluate": net.evaluate(X, labels)}
    nb, nw = net.backprop(X, Y)
    out["backprop"] = nb + nw
    return out


def _assert_results_same(a, b):
    assert_same(a["feedforward"], b["feedforward"])
    assert abs(a["cost"] - b["cost"]) <= 1e-5 * max(1.0, abs(b["cost"]))
    assert a["evaluate"] == b["evaluate"]
    for p, q in zip(a["backprop"], b["backprop"]):
        assert_same(p, q)


def _updates_same(cls, dtype, X_a, Y_a, X_b, Y_b):
    a, b = cls(SIZES, dtype=dtype, seed=1), cls(SIZES, dtype=dtype, seed=1)
    a.update_mini_batch(X_a, Y_a, 0.7)
    b.update_mini_batch(X_b, Y_b, 0.7)
    assert_same_params(a, b)
    a.sgd(X_a, Y_a, 2, 2, 0.7, test_data=(X_a, LABELS_GOOD))
    b.sgd(X_b, Y_b, 2, 2, 0.7, test_data=(X_b, LABELS_GOOD))
    assert_same_params(a, b)


@pytest.mark.parametrize("convert", [
    lambda a: np.round(a * 10).astype(np.int64), lambda a: np.round(a * 10).astype(np.int32),
    lambda a: np.round(a * 200).astype(np.uint8), lambda a: a.astype(np.float32),
    lambda a: a.astype(np.float16), lambda a: a > 0.5, lambda a: (a * 10).round().tolist(),
    lambda a: a.astype(np.float64),
], ids=["int64", "int32", "uint8", "float32", "float16", "bool", "list", "float64"])
def test_input_dtypes_converted(cls, dtype, convert):
    X, Y = convert(X_GOOD), convert(Y_GOOD)
    Xc = np.asarray(X).astype(dtype)
    Yc = np.asarray(Y).astype(dtype)
    net = cls(SIZES, dtype=dtype, seed=0)
    got = _results(net, X, Y, LABELS_GOOD)
    assert got["feedforward"].dtype == dtype
    assert all(g.dtype == dtype for g in got["backprop"])
    assert isinstance(got["cost"], float) and isinstance(got["evaluate"], int)
    _assert_results_same(got, _results(net, Xc, Yc, LABELS_GOOD))
    _updates_same(cls, dtype, X, Y, Xc, Yc)


@pytest.mark.parametrize("layout", ["fortran", "strided", "negative-stride", "column-slice", "broadcast"])
def test_memory_layouts_match_c_contiguous_copy(cls, dtype, layout):
    X = X_GOOD.astype(dtype)
    Y = Y_GOOD.astype(dtype)
    if layout == "fortran":
        Xv, Yv = np.asfortranarray(X), np.asfortranarray(Y)
        assert not Xv.flags.c_contiguous
    elif layout == "strided":
        big_x = np.zeros((2 * M, 2 * 3), dtype=dtype)
        big_x[::2, ::2] = X
        big_y = np.zeros((3 * M, 3 * 2), dtype=dtype)
        big_y[::3, ::3] = Y
        Xv, Yv = big_x[::2, ::2], big_y[::3, ::3]
    elif layout == "negative-stride":
        Xv, Yv = X[::-1, ::-1].copy()[::-1, ::-1], Y[::-1].copy()[::-1]
    elif layout == "column-slice":
        Xv = np.hstack([X, np.ones((M, 2), dtype=dtype)])[:, :3]
        Yv = np.hstack([np.ones((M, 1), dtype=dtype), Y])[:, 1:]
    else:  # every row the same, zero row stride
        X = np.repeat(X[:1], M, axis=0)
        Xv = np.broadcast_to(X[0], (M, 3))
        Yv = Y
    assert not Xv.flags.c_contiguous
    assert np.array_equal(Xv, X) and np.array_equal(Yv, Y)
    net = cls(SIZES, dtype=dtype, seed=0)
    _assert_results_same(_results(net, Xv, Yv, LABELS_GOOD), _results(net, X.copy(), Y.copy(), LABELS_GOOD))
    _updates_same(cls, dtype, Xv, Yv, X.copy(), Y.copy())


def test_read_only_inputs_accepted(cls, dtype):
    X, Y, labels = X_GOOD.astype(dtype), Y_GOOD.astype(dtype), LABELS_GOOD.copy()
    for a in (X, Y, labels):
        a.flags.writeable = False
    net = cls(SIZES, dtype=dtype, seed=0)
    _assert_results_same(_results(net, X, Y, labels), _results(net, X.copy(), Y.copy(), labels.copy()))
    _updates_same(cls, dtype, X, Y, X.copy(), Y.copy())
    # one read-only sample too
    x = X[0]
    assert not x.flags.writeable
    assert_same(net.feedforward(x), net.feedforward(x.copy()))


def test_inputs_are_never_modified(cls, dtype):
    X, Y, labels = X_GOOD.astype(dtype), Y_GOOD.astype(dtype), LABELS_GOOD.copy()
    copies = [a.copy() for a in (X, Y, labels)]
    net = cls(SIZES, dtype=dtype, seed=0)
    _results(net, X, Y, labels)
    net.update_mini_batch(X, Y, 0.5)
    net.sgd(X, Y, 2, 2, 0.5, test_data=(X, labels))
    for a, c in zip((X, Y, labels), copies):
        assert np.array_equal(a, c)


def test_one_sample(cls, dtype):
    net = cls(SIZES, dtype=dtype, seed=0)
    x, y = X_GOOD[2], Y_GOOD[2]
    out = net.feedforward(x)
    assert out.shape == (SIZES[-1],) and out.dtype == dtype
    assert_same(out, net.feedforward(x[None])[0])
    # a list works as one sample too
    assert_same(net.feedforward(x.tolist()), out)

    nabla_b, nabla_w = net.backprop(x, y)
    assert [b.shape for b in nabla_b] == [b.shape for b in net.biases]
    assert [w.shape for w in nabla_w] == [w.shape for w in net.weights]
    assert all(g.dtype == dtype for g in nabla_b + nabla_w)
    batch_b, batch_w = net.backprop(x[None], y[None])
    for p, q in zip(nabla_b + nabla_w, batch_b + batch_w):
        assert_same(p, q)
    # the per-sample gradient: the mean of the per-sample gradients is the batch gradient
    per = [net.backprop(X_GOOD[i], Y_GOOD[i]) for i in range(M)]
    full_b, full_w = net.backprop(X_GOOD, Y_GOOD)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for k in range(len(full_b)):
        np.testing.assert_allclose(np.mean([p[0][k] for p in per], axis=0), full_b[k], rtol=tol, atol=tol)
        np.testing.assert_allclose(np.mean([p[1][k] for p in per], axis=0), full_w[k], rtol=tol, atol=tol)

    assert isinstance(net.cost(x, y), float)
    assert abs(net.cost(x, y) - net.cost(x[None], y[None])) <= 1e-6
    assert net.evaluate(x, [int(np.argmax(out))]) == 1

    a, b = cls(SIZES, dtype=dtype, seed=0), cls(SIZES, dtype=dtype, seed=0)
    a.update_mini_batch(x, y, 0.5)
    b.update_mini_batch(x[None], y[None], 0.5)
    assert_same_params(a, b)


def test_empty_batch_for_feedforward_and_evaluate(cls, dtype):
    net = cls(SIZES, dtype=dtype, seed=0)
    snap = snapshot(net)
    for X in (np.zeros((0, 3)), np.zeros((0, 3), dtype=np.float32), np.zeros((0, 3), dtype=int)):
        out = net.feedforward(X)
        assert out.shape == (0, SIZES[-1]) and out.dtype == dtype
        assert net.evaluate(X, np.zeros(0, dtype=int)) == 0
        assert net.evaluate(X, np.zeros(0, dtype=np.uint8)) == 0
    assert_unchanged(net, snap)


def test_view_of_own_weights_as_X(cls, dtype):
    """X = net.weights[0] (sizes [3, 3, 2]) is read as it was when the call started, even by
    the calls that update the weights in place."""
    sizes = [3, 3, 2]
    a = cls(sizes, dtype=dtype, seed=4)
    b = cls(sizes, dtype=dtype, seed=4)
    Xa = a.weights[0]
    Xb = b.weights[0].copy()
    assert np.shares_memory(Xa, a.weights[0])
    Y = Y_GOOD[:3].astype(dtype)
    labels = LABELS_GOOD[:3]

    assert_same(a.feedforward(Xa), b.feedforward(Xb))
    assert_same(a.feedforward(Xa[1]), b.feedforward(Xb[1]))
    assert_same(a.feedforward(a.biases[0]), b.feedforward(b.biases[0].copy()))
    assert a.cost(Xa, Y) == pytest.approx(b.cost(Xb, Y), rel=1e-6)
    assert a.evaluate(Xa, labels) == b.evaluate(Xb, labels)
    for p, q in zip(sum(a.backprop(Xa, Y), []), sum(b.backprop(Xb, Y), [])):
        assert_same(p, q)

    a.update_mini_batch(Xa, Y, 2.0)
    b.update_mini_batch(Xb, Y, 2.0)
    assert_same_params(a, b)

    Xa, Xb = a.weights[0], b.weights[0].copy()
    ha = a.sgd(Xa, Y, 3, 1, 2.0, test_data=(Xa, labels))
    hb = b.sgd(Xb, Y, 3, 1, 2.0, test_data=(Xb, labels))
    assert_same_params(a, b)
    assert [h["test_correct"] for h in ha] == [h["test_correct"] for h in hb]


def test_view_of_own_parameters_as_Y_and_test_data(cls, dtype):
    """Y and test_data[0] that share memory with the parameters behave like copies too
    (sizes [3, 3, 3], so weights[1] has the shape of both a batch and its targets)."""
    sizes = [3, 3, 3]
    a = cls(sizes, dtype=dtype, seed=5)
    b = cls(sizes, dtype=dtype, seed=5)
    X = X_GOOD[:3].astype(dtype)
    labels = np.array([0, 1, 2])

    for p, q in zip(sum(a.backprop(X, a.weights[1]), []), sum(b.backprop(X, b.weights[1].copy()), [])):
        assert_same(p, q)
    a.update_mini_batch(X, a.weights[1], 2.0)
    b.update_mini_batch(X, b.weights[1].copy(), 2.0)
    assert_same_params(a, b)

    # X and Y both views, mini-batches of one row: later rows are gathered after earlier updates
    ha = a.sgd(a.weights[0], a.weights[1], 3, 1, 2.0, test_data=(a.weights[1], labels))
    hb = b.sgd(b.weights[0].copy(), b.weights[1].copy(), 3, 1, 2.0, test_data=(b.weights[1].copy(), labels))
    assert_same_params(a, b)
    assert [h["test_correct"] for h in ha] == [h["test_correct"] for h in hb]

    # a transposed (non-contiguous) view of the biases block of one's own parameters
    c = cls(sizes, dtype=dtype, seed=6)
    d = cls(sizes, dtype=dtype, seed=6)
    c.sgd(c.weights[1].T, c.weights[0].T, 2, 2, 1.0)
    d.sgd(d.weights[1].T.copy(), d.weights[0].T.copy(), 2, 2, 1.0)
    assert_same_params(c, d)


def test_rejected_calls_on_both_classes_leave_identical_networks(dtype):
    """The C path and the reference draw the same parameters for a seed; a gauntlet of
    rejected calls leaves both exactly at those parameters."""
    c = cbackprop.Network(SIZES, dtype=dtype, seed=9)
    r = reference.Network(SIZES, dtype=dtype, seed=9)
    for net in (c, r):
        for fn in (lambda: net.feedforward(np.zeros((2, 4))),
                   lambda: net.update_mini_batch(X_GOOD, Y_GOOD, -1.0),
                   lambda: net.update_mini_batch(X_GOOD, with_value(Y_GOOD, (0, 0), np.nan), 1.0),
                   lambda: net.sgd(X_GOOD, Y_GOOD, 1, 1, 1.0, test_data=(X_GOOD, [9] * M)),
                   lambda: setattr(net, "biases", [np.zeros(4), np.full(2, np.inf)])):
            with pytest.raises((TypeError, ValueError)):
                fn()
    for p, q in zip(c.weights + c.biases, r.weights + r.biases):
        assert np.array_equal(p, q)


# ---- added with the fast update path and the dtype-aware eta check ----------------------------
@pytest.mark.parametrize("cls", [cbackprop.Network, reference.Network], ids=["C", "reference"])
def test_sizes_too_large_to_allocate_name_sizes(cls):
    with pytest.raises(MemoryError, match=r"sizes \[2147483647, 2147483647\] need"):
        cls([2**31 - 1, 2**31 - 1])


@pytest.mark.parametrize("cls", [cbackprop.Network, reference.Network], ids=["C", "reference"])
@pytest.mark.parametrize("eta", [1e300, 1e-60])
def test_eta_must_be_a_normal_number_of_the_network_dtype(cls, eta):
    net = cls([3, 2], dtype=np.float32, seed=0)
    before = [p.copy() for p in net.weights + net.biases]
    with pytest.raises(ValueError, match=r"eta must lie in .* float32"):
        net.update_mini_batch(np.ones((1, 3)), np.ones((1, 2)), eta)
    with pytest.raises(ValueError, match=r"eta must lie in .* float32"):
        net.sgd(np.ones((2, 3)), np.ones((2, 2)), 1, 1, eta)
    assert all(np.array_equal(a, b) for a, b in zip(before, net.weights + net.biases))


@pytest.mark.parametrize("cls", [cbackprop.Network, reference.Network], ids=["C", "reference"])
def test_dtype_none_is_refused(cls):
    with pytest.raises(TypeError, match="dtype must be float32 or float64, got None"):
        cls([3, 2], dtype=None)


@pytest.mark.parametrize("cls", [cbackprop.Network, reference.Network], ids=["C", "reference"])
def test_empty_label_list_with_empty_batch(cls):
    assert cls([3, 2], seed=0).evaluate(np.zeros((0, 3)), []) == 0


@pytest.mark.parametrize("kernels", _core.kernels_supported())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_update_path_equals_general_path(dtype, kernels):
    """update_mini_batch's fast path (contiguous arrays of the network dtype, float eta: a
    step that saves each parameter as it updates it) and the general path (anything else,
    converted) give bitwise the same step, with every kernel variant on layers whose widths
    leave partial vectors and tiles; a fast step that overflows is rejected and leaves the
    parameters bitwise as they were."""
    rng = np.random.default_rng(0)
    X, Y = rng.random((13, 37)).astype(dtype), rng.random((13, 11)).astype(dtype)
    fast, general = (cbackprop.Network([37, 23, 11], activations=["relu", "identity"], dtype=dtype,
                                       seed=1) for _ in range(2))
    for net in (fast, general):
        net._engine.kernels = kernels
    for _ in range(3):
        fast.update_mini_batch(X, Y, 0.5)                            # fast path
        general.update_mini_batch(X.tolist(), Y.tolist(), np.float64(0.5))  # lists, numpy scalar
        for a, b in zip(fast.weights + fast.biases, general.weights + general.biases):
            np.testing.assert_array_equal(a, b)
    before = [p.copy() for p in fast.weights + fast.biases]
    with pytest.raises(FloatingPointError, match="update_mini_batch"):
        fast.update_mini_batch(X * (1e20 if dtype == np.float32 else 1e160), Y, 0.5)
    for a, b in zip(fast.weights + fast.biases, before):
        np.testing.assert_array_equal(a, b)
    fast.update_mini_batch(X, Y, 0.5)
    general.update_mini_batch(X.tolist(), Y.tolist(), np.float64(0.5))
    for a, b in zip(fast.weights + fast.biases, general.weights + general.biases):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("eta", [1e-40, 1e39, float("nan"), float("inf"), -1.0, 0.0])
def test_fast_path_refuses_what_the_general_path_refuses(eta):
    """X, Y of the network dtype and a Python float eta take the fast path; an eta that is
    not a normal float32 number must still be refused there, with the general message."""
    net = cbackprop.Network([3, 2], dtype=np.float32, seed=0)
    before = [p.copy() for p in net.weights + net.biases]
    with pytest.raises(ValueError, match="eta must"):
        net.update_mini_batch(np.ones((1, 3), np.float32), np.ones((1, 2), np.float32), eta)
    assert all(np.array_equal(a, b) for a, b in zip(before, net.weights + net.biases))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unaligned_arrays_are_copied_before_c_reads_them(dtype):
    """A C-contiguous array at an odd address (numpy allows it) is copied, not read as REAL[]
    (that would be undefined behaviour in C; UBSan found it through the fuzz test)."""
    rng = np.random.default_rng(0)
    X, Y = rng.random((4, 5)).astype(dtype), rng.random((4, 3)).astype(dtype)
    def unaligned(a):
        raw = np.zeros(a.nbytes + 1, dtype=np.uint8)
        u = raw[1:].view(dtype).reshape(a.shape)
        u[...] = a
        assert not u.flags.aligned and u.flags.c_contiguous
        return u
    fast, general = (cbackprop.Network([5, 4, 3], dtype=dtype, seed=1) for _ in range(2))
    fast.update_mini_batch(unaligned(X), unaligned(Y), 0.5)
    general.update_mini_batch(X, Y, 0.5)
    for a, b in zip(fast.weights + fast.biases, general.weights + general.biases):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fast.feedforward(unaligned(X)), fast.feedforward(X))
