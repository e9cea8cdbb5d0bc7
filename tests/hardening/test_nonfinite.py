"""One rule for non-finite results: finite inputs and parameters can still give inf or NaN
(values beyond the dtype's range); every public method then raises FloatingPointError
naming the method, the layer and the quantity (or the cost), instead of returning inf/NaN,
and a method that changes the network leaves it bitwise as it was.

The cases are built so that the overflow is certain: an identity first layer with every
weight 1 gives z^1 = x_1 + x_2, which is 1.5 times the largest finite number of the dtype
for an input row of 0.75 times it; the other rows (0.5) stay small.
"""
import copy

import numpy as np
import pytest

import cbackprop
from cbackprop import reference

CLASSES = [cbackprop.Network, reference.Network]
IDS = ["C", "reference"]
DTYPES = [np.float32, np.float64]


def _bytes(arrays):
    """Bytes of arrays, [] for none or all zeros (a zero momentum velocity or accumulated
    gradient is the same state as none)."""
    return [a.tobytes() for a in arrays] if any(np.any(a) for a in arrays) else []


def state(net):
    """Everything a call may change: parameters, momentum velocity, accumulated gradient
    and count, generator, and on the C path the engine's counters."""
    extra = (net._engine.dropout_round, net._engine.adam_steps) if hasattr(net, "_engine") else ()
    return (_bytes(net.weights + net.biases), _bytes(net._velocity()), _bytes(net._accumulator()),
            net.accumulated, repr(net._rng.bit_generator.state), extra)


def overflowing(cls, dtype, out="identity", cost="quadratic"):
    """[2, 3, 2]: layer 1 identity with every weight 1, layer 2 out."""
    net = cls([2, 3, 2], activations=["identity", out], cost=cost, dtype=dtype, seed=0)
    net.weights = [np.ones((3, 2)), net.weights[1]]
    return net


def inputs(dtype, bad_row=1, m=3):
    X = np.full((m, 2), 0.5, dtype=dtype)
    X[bad_row] = 0.75 * np.finfo(dtype).max
    return X


LAYER1 = r"layer 1's weighted input z\^1 \(inf at row {row}, unit 0\)"
RANGE = "exceeds the float{bits} range"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize("method", ["feedforward", "predict", "predict_proba", "evaluate", "cost", "total_cost"])
def test_computing_methods_raise_naming_the_layer(cls, dtype, method):
    out = "softmax" if method == "predict_proba" else "identity"
    net = overflowing(cls, dtype, out)
    X = inputs(dtype)
    before = state(net)
    call = {"feedforward": lambda: net.feedforward(X), "predict": lambda: net.predict(X),
            "predict_proba": lambda: net.predict_proba(X), "evaluate": lambda: net.evaluate(X, [0, 1, 0]),
            "cost": lambda: net.cost(X, np.zeros((3, 2))),
            "total_cost": lambda: net.total_cost(X, np.zeros((3, 2)), 1.0)}[method]
    with pytest.raises(FloatingPointError, match=f"^{method}: a non-finite value in " + LAYER1.format(row=1)) as info:
        call()
    assert RANGE.format(bits=np.dtype(dtype).itemsize * 8) in str(info.value)
    assert state(net) == before
    # the rows that stay in range still work
    assert np.isfinite(net.feedforward(X[[0, 2]])).all()


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_rows_are_numbered_across_chunks(cls):
    """feedforward, predict and cost work a chunk of rows at a time: the row named is the
    caller's row."""
    net = overflowing(cls, np.float32)
    m = net._chunk_rows() + 7
    X = inputs(np.float32, bad_row=m - 2, m=m)
    for call in (lambda: net.feedforward(X), lambda: net.predict(X), lambda: net.cost(X, np.zeros((m, 2)))):
        with pytest.raises(FloatingPointError, match=LAYER1.format(row=m - 2)):
            call()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize("method", ["backprop", "trace"])
def test_gradient_methods_raise_naming_the_layer(cls, dtype, method):
    net = overflowing(cls, dtype)
    X, Y = inputs(dtype), np.zeros((3, 2))
    before = state(net)
    with pytest.raises(FloatingPointError, match=f"^{method}: a non-finite value in " + LAYER1.format(row=1)):
        getattr(net, method)(X, Y)
    assert state(net) == before


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_backprop_names_the_gradient_when_only_the_gradient_overflows(cls):
    """Inputs of 1e30 through a relu layer in float32 (the issue's case): every z, a and
    delta fits, the product nabla_w^1 = delta^1 x^T does not."""
    net = cls([784, 30, 10], activations="relu", dtype=np.float32, seed=0)
    X, Y = np.full((3, 784), 1e30), np.eye(10)[:3]
    assert np.isfinite(net.feedforward(X)).all()
    with pytest.raises(FloatingPointError, match=r"^backprop: a non-finite value in layer 1's weight gradient "
                                                 r"nabla_w\^1 \(-?inf at index \(\d+, \d+\)\)"):
        net.backprop(X, Y)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize("kw", [{}, {"mu": 0.5}, {"lmbda": 1.0, "n": 10}], ids=["fast", "momentum", "decay"])
def test_update_mini_batch_raises_and_changes_nothing(cls, dtype, kw):
    net = overflowing(cls, dtype)
    X, Y = inputs(dtype), np.zeros((3, 2))
    net.update_mini_batch(X[[0, 2]], Y[[0, 2]], 0.1, **kw)    # (a velocity, when mu)
    before = state(net)
    with pytest.raises(FloatingPointError, match="^update_mini_batch: a non-finite value in " + LAYER1.format(row=1)
                                                 + ".*; the network is unchanged$"):
        net.update_mini_batch(X, Y, 0.1, **kw)
    assert state(net) == before
    net.update_mini_batch(X[[0, 2]], Y[[0, 2]], 0.1, **kw)    # and it trains on
    assert state(net) != before


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize("kw", [{}, {"mu": 0.9}], ids=["fast", "momentum"])
def test_an_update_that_overflows_raises_and_changes_nothing(cls, dtype, kw):
    """A finite gradient and an eta so large that w - eta nabla_w leaves the range."""
    net = cls([3, 2], activations="identity", dtype=dtype, seed=1)
    X, Y = np.ones((4, 3)), np.full((4, 2), 100.0)
    eta = float(np.finfo(dtype).max) / 2
    before = state(net)
    with pytest.raises(FloatingPointError, match=r"^update_mini_batch: the update would make layer 1's weights "
                                                 r"w\^1 non-finite \(-?inf at index \(\d, \d\)\); eta is too large"):
        net.update_mini_batch(X.astype(dtype), Y.astype(dtype), eta, **kw)
    assert state(net) == before


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_a_rejected_step_with_another_rule_keeps_the_optimizer_state(cls, dtype):
    """Adam's moments, then a momentum step that overflows: switching rules resets the state
    the new rule keeps, and the rejected call must put back Adam's moments, its step count
    and the rule they belong to, so that the next Adam step is that of an untouched copy."""
    net = cls([3, 2], activations="identity", dtype=dtype, seed=1)
    X, Y = np.ones((4, 3), dtype=dtype), np.full((4, 2), 100.0, dtype=dtype)
    for _ in range(3):
        net.update_mini_batch(X, Y, 0.01, optimizer="adam")
    twin = copy.deepcopy(net)
    with pytest.raises(FloatingPointError, match="eta is too large"):
        net.update_mini_batch(X, Y, float(np.finfo(dtype).max) / 2, mu=0.9)
    for n in (net, twin):
        n.update_mini_batch(X, Y, 0.01, optimizer="adam")
    assert state(net) == state(twin)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_accumulate_and_apply_gradient_raise_and_change_nothing(cls, dtype):
    net = overflowing(cls, dtype)
    X, Y = inputs(dtype), np.zeros((3, 2))
    net.accumulate_gradient(X[[0]], Y[[0]])
    before = state(net)
    with pytest.raises(FloatingPointError, match="^accumulate_gradient: a non-finite value in "
                                                 + LAYER1.format(row=1)):
        net.accumulate_gradient(X, Y)
    assert state(net) == before and net.accumulated == 1
    # the sum of finite gradients beyond the range
    big = cls([1, 1], activations="identity", dtype=dtype, seed=0)
    big.weights, big.biases = [np.ones((1, 1))], [np.zeros(1)]
    x = np.sqrt(float(np.finfo(dtype).max) * 0.6)     # per sample: (a - y) x = x^2 = 0.6 max
    big.accumulate_gradient([[x]], [[0.0]])
    before = state(big)
    with pytest.raises(FloatingPointError, match="^accumulate_gradient: the update would make the accumulated "
                                                 "gradient non-finite .*exceeds the float"):
        big.accumulate_gradient([[x]], [[0.0]])
    assert state(big) == before and big.accumulated == 1
    # apply_gradient with an eta that overflows the parameters: accumulated gradient kept
    with pytest.raises(FloatingPointError, match=r"^apply_gradient: the update would make layer 1's weights w\^1 "
                                                 r"non-finite"):
        big.apply_gradient(float(np.finfo(dtype).max))
    assert state(big) == before and big.accumulated == 1
    big.apply_gradient(1e-30)
    assert big.accumulated == 0


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_parameters_set_non_finite_through_the_views_are_named(cls):
    net = cls([3, 4, 2], seed=0)
    net.weights[1][1, 2] = np.nan        # the views are writable: no check can stop this
    before = state(net)
    X, Y = np.ones((2, 3)), np.zeros((2, 2))
    for name, call in (("feedforward", lambda: net.feedforward(X)), ("backprop", lambda: net.backprop(X, Y)),
                       ("update_mini_batch", lambda: net.update_mini_batch(X, Y, 0.1))):
        with pytest.raises(FloatingPointError, match=rf"^{name}: a non-finite value in layer 2's weights w\^2 "
                                                     r"\(nan at index \(1, 2\)\); it was set so directly"):
            call()
        assert state(net) == before


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_sgd_measurements_raise_too(cls):
    """sgd's parameters stay finite, but measuring the epoch on evaluation data beyond the
    range raises (the epoch itself kept)."""
    net = overflowing(cls, np.float64)
    X, Y = inputs(np.float64)[[0, 2]], np.zeros((2, 2))
    with pytest.raises(FloatingPointError, match=r"^sgd \(measuring the epoch\): a non-finite value in layer 1"):
        net.sgd(X, Y, 1, 2, 1e-3, evaluation_data=(inputs(np.float64), [0, 0, 1]),
                monitor_evaluation_accuracy=True)
    assert all(np.isfinite(p).all() for p in net.weights + net.biases)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_a_copy_behaves_the_same(cls):
    """The scratch buffers of the rule are not part of a network's state."""
    net = overflowing(cls, np.float32)
    X = inputs(np.float32)
    with pytest.raises(FloatingPointError):
        net.update_mini_batch(X, np.zeros((3, 2)), 0.1)
    twin = copy.deepcopy(net)
    with pytest.raises(FloatingPointError):
        twin.update_mini_batch(X, np.zeros((3, 2)), 0.1)
    assert state(twin) == state(net)


# ---- values beyond the float64 range are reported as given -----------------------------------

HUGE = np.longdouble("1e4000")     # finite in long double (x86-64), beyond float64


@pytest.mark.skipif(not np.isfinite(HUGE), reason="np.longdouble has no range beyond float64 here")
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_a_long_double_beyond_float64_is_reported_as_given_not_as_inf(cls):
    net = cls([3, 2], seed=0)
    X = np.zeros((2, 3), dtype=np.longdouble)
    X[1, 2] = -HUGE
    with pytest.raises(ValueError, match=r"^X must hold only finite float64 values, got -1e\+4000 at index \(1, 2\)$"):
        net.feedforward(X)
    with pytest.raises(ValueError, match=r"^weights\[0\] must hold only finite float64 values, got 1e\+4000 at index"):
        net.weights = [np.full((2, 3), HUGE)]
    for name, call in (("eta", lambda v: net.update_mini_batch(np.ones(3), np.ones(2), v)),
                       ("lmbda", lambda v: net.total_cost(np.ones((1, 3)), np.ones((1, 2)), v)),
                       ("mu", lambda v: net.update_mini_batch(np.ones(3), np.ones(2), 0.1, mu=v))):
        with pytest.raises(ValueError, match=rf"^{name} must .*, got 1e\+4000$"):
            call(HUGE)
    with pytest.raises(ValueError, match=r"^eta must lie in \[.*\] to be a normal float64 number, got 1e-4000$"):
        net.update_mini_batch(np.ones(3), np.ones(2), np.longdouble("1e-4000"))
    # ordinary values keep their usual form
    with pytest.raises(ValueError, match=r"^eta must be a finite number > 0, got 0\.0$"):
        net.update_mini_batch(np.ones(3), np.ones(2), 0)
