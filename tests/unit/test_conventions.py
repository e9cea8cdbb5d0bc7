"""Python conventions of Network and reference.Network: integer class labels wherever
targets are taken (bitwise the one-hot call's result), predict / predict_proba, and
pickle / copy (independent copies that continue bitwise as the original)."""
import copy
import multiprocessing
import pickle
import sys
import textwrap
import threading
import tracemalloc

import numpy as np
import pytest

import cbackprop
from cbackprop import reference

CLASSES = [pytest.param(cbackprop.Network, id="C"), pytest.param(reference.Network, id="reference")]
DTYPES = [pytest.param(np.float64, id="f64"), pytest.param(np.float32, id="f32")]
SIZES = [6, 7, 4]
CONFIGS = [
    dict(),
    dict(activations=["tanh", "softmax"], cost="log-likelihood"),
    dict(activations=["relu", "sigmoid"], cost="cross-entropy", init="default"),
]


def problem(m=53, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, SIZES[-1], m)
    return rng.random((m, SIZES[0])), labels, np.eye(SIZES[-1])[labels]


def same(a, b):
    for p, q in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_array_equal(p, q)


def without_seconds(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


# ---- integer labels ---------------------------------------------------------------------------

@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONFIGS, ids=["quadratic", "softmax", "cross-entropy"])
def test_labels_give_bitwise_the_one_hot_results(cls, dtype, config):
    X, labels, Y = problem()
    a, b = cls(SIZES, dtype=dtype, seed=3, **config), cls(SIZES, dtype=dtype, seed=3, **config)
    for ga, gb in zip(a.backprop(X, labels), b.backprop(X, Y)):
        for p, q in zip(ga, gb):
            np.testing.assert_array_equal(p, q)
    assert a.cost(X, labels) == b.cost(X, Y)
    assert a.total_cost(X, labels, 2.0) == b.total_cost(X, Y, 2.0)
    ta, tb = a.trace(X, labels), b.trace(X, Y)
    assert ta.cost == tb.cost
    for name in ("z", "a", "delta", "nabla_b", "nabla_w"):
        for p, q in zip(getattr(ta, name), getattr(tb, name)):
            np.testing.assert_array_equal(p, q)
    assert a.evaluate(X, labels) == b.evaluate(X, Y) == b.evaluate(X, labels)
    a.update_mini_batch(X[:9], labels[:9], 0.5, lmbda=1.0, n=53, mu=0.3)
    b.update_mini_batch(X[:9], Y[:9], 0.5, lmbda=1.0, n=53, mu=0.3)
    a.accumulate_gradient(X[9:20], labels[9:20])
    b.accumulate_gradient(X[9:20], Y[9:20])
    a.apply_gradient(0.5)
    b.apply_gradient(0.5)
    same(a, b)
    run = dict(test_data=(X, labels), lmbda=0.5, mu=0.5, evaluation_data=(X[:20], labels[:20]),
               monitor_training_cost=True, monitor_training_accuracy=True, monitor_evaluation_cost=True,
               monitor_evaluation_accuracy=True)
    ha = a.sgd(X, labels, 3, 10, 0.5, **run)
    hb = b.sgd(X, Y, 3, 10, 0.5, **run)
    same(a, b)
    assert without_seconds(ha) == without_seconds(hb)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_labels_sgd_on_the_C_path_equals_its_epoch_loop(threads, dtype):
    """The C epoch on one-hot rows (on one or two threads) and the epoch of steps on labels."""
    rng = np.random.default_rng(1)
    X = rng.random((300, 784)).astype(dtype)
    labels = rng.integers(0, 10, 300)
    a, b = (cbackprop.Network([784, 64, 10], dtype=dtype, seed=2) for _ in range(2))
    a.num_threads = b.num_threads = threads
    a.sgd(X, labels, 2, 32, 0.5, mu=0.2)
    b.sgd(X, np.eye(10, dtype=dtype)[labels], 2, 32, 0.5, mu=0.2)
    same(a, b)


@pytest.mark.parametrize("cls", CLASSES)
def test_labels_divergence_names_the_same_mini_batch(cls):
    rng = np.random.default_rng(0)
    X = 40.0 * np.eye(6)[rng.integers(0, 6, 40)]
    labels = np.zeros(40, dtype=np.int32)
    kw = dict(activations="identity", seed=1)
    a, b = cls(SIZES, **kw), cls(SIZES, **kw)
    errors = []
    for net, Y in ((a, labels), (b, np.eye(4)[labels])):
        with pytest.raises(FloatingPointError) as info:
            net.sgd(X, Y, 2, 4, 1e300)
        errors.append((info.value.epoch, info.value.mini_batch))
    assert errors[0] == errors[1]
    same(a, b)


@pytest.mark.parametrize("cls", CLASSES)
def test_label_messages_name_both_forms(cls):
    net = cls(SIZES, seed=0)
    X, labels, _ = problem(m=200)
    with pytest.raises(ValueError) as info:
        net.sgd(X, labels.astype(float), 1, 10, 0.5)
    msg = str(info.value)
    assert "Y must have shape (200, 4) (one target row per sample) or be integer class labels of " \
           "shape (200,), got an array of dtype float64 and shape (200,)" in msg
    assert "as one sample" not in msg
    with pytest.raises(ValueError, match=r"Y must have shape \(100, 4\) \(one target row per sample\) or "
                                         r"\(100,\) \(integer class labels\) to match X, got shape \(200,\)"):
        net.cost(X[:100], labels)
    with pytest.raises(ValueError, match=r"Y must lie in \[0, 4\) .*got 4"):
        net.backprop(X, np.where(labels == 0, 4, labels))
    # one output unit: a 1-D Y stays one sample's target (no labels)
    one = cls([6, 1], seed=0)
    with pytest.raises(ValueError, match=r"Y as one sample must have shape \(1,\), got shape \(200,\)"):
        one.cost(X, labels)


def _peak(fn):
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        fn()
        return tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("cls", CLASSES)
def test_labels_never_build_the_whole_one_hot_matrix(cls):
    """sgd builds one-hot rows per mini-batch, cost and evaluate per chunk of rows: the peak
    stays far below the [n, n_L] one-hot matrix (40 MB here)."""
    n, n_out = 100_000, 50
    rng = np.random.default_rng(0)
    X = rng.random((n, 4))
    labels = rng.integers(0, n_out, n)
    net = cls([4, n_out], activations="softmax", cost="log-likelihood", seed=0)
    whole = n * n_out * 8
    net.sgd(X[:100], labels[:100], 1, 50, 0.1)          # (workspace)
    for fn in (lambda: net.sgd(X, labels, 1, 50, 0.1, monitor_training_cost=True),
               lambda: net.cost(X, labels), lambda: net.total_cost(X, labels, 1.0),
               lambda: net.evaluate(X, labels), lambda: net.predict(X)):
        peak = _peak(fn)
        assert peak < whole / 4, peak / whole


# ---- predict, predict_proba -------------------------------------------------------------------

@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_predict_is_the_argmax_of_the_output(cls, dtype):
    X, labels, _ = problem(m=3000)
    net = cls([6, 300, 4], dtype=dtype, seed=0)          # 3000 rows: several chunks of rows
    pred = net.predict(X)
    assert pred.dtype == np.int64 and pred.shape == (3000,)
    np.testing.assert_array_equal(pred, np.argmax(net.feedforward(X), axis=1))
    assert net.predict(X[7]) == pred[7] and isinstance(net.predict(X[7]), int)
    assert net.predict(X[:0]).shape == (0,)
    assert net.evaluate(X, labels) == int(np.count_nonzero(pred == labels))
    with pytest.raises(ValueError, match=r"predict needs a network with at least 2 output neurons"):
        cls([6, 1], seed=0).predict(X)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_predict_proba_for_a_softmax_output(cls, dtype):
    X, _, _ = problem(m=3000)
    net = cls([6, 300, 4], activations=["relu", "softmax"], cost="log-likelihood", dtype=dtype, seed=0)
    proba = net.predict_proba(X)
    assert proba.dtype == dtype and proba.shape == (3000, 4)
    np.testing.assert_array_equal(proba, net.feedforward(X))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=tol)
    assert (proba >= 0).all()
    # one sample: bitwise on the C path; NumPy's reference computes one row through a
    # matrix-vector product whose rounding differs from the matrix product's
    np.testing.assert_allclose(net.predict_proba(X[5]), proba[5], rtol=0 if cls is cbackprop.Network else tol)
    np.testing.assert_array_equal(net.predict(X), proba.argmax(axis=1))
    with pytest.raises(ValueError, match=r"predict_proba needs a softmax output layer .*got output "
                                         r"activation 'sigmoid'"):
        cls([6, 4], seed=0).predict_proba(X)


# ---- pickle and copies ------------------------------------------------------------------------

def trained(cls, dtype=np.float64, **config):
    """A network with a momentum velocity, an accumulated gradient (5 samples) and an
    advanced generator."""
    X, labels, Y = problem()
    net = cls(SIZES, dtype=dtype, seed=4, **config)
    net.sgd(X, Y, 2, 10, 0.5, mu=0.5, lmbda=0.1)
    net.accumulate_gradient(X[:5], Y[:5])
    return net


def continue_training(net):
    X, labels, Y = problem(seed=1)
    net.apply_gradient(0.5, mu=0.5)
    history = net.sgd(X, labels, 2, 8, 0.5, mu=0.5, lmbda=0.1, test_data=(X, labels))
    return without_seconds(history), net.feedforward(X)


COPIES = {
    **{f"pickle{p}": (lambda n, p=p: pickle.loads(pickle.dumps(n, protocol=p)))
       for p in range(2, pickle.HIGHEST_PROTOCOL + 1)},
    "deepcopy": copy.deepcopy,
    "copy": copy.copy,
}


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("how", list(COPIES))
def test_copies_continue_bitwise_as_the_original(cls, dtype, how):
    net = trained(cls, dtype, activations=["tanh", "softmax"], cost="log-likelihood")
    twin = COPIES[how](net)
    assert type(twin) is cls and twin is not net
    assert (twin.sizes, twin.activations, twin.cost_name, twin.dtype) == \
        (net.sizes, net.activations, net.cost_name, net.dtype)
    same(twin, net)
    assert twin.accumulated == net.accumulated == 5
    X, _, _ = problem()
    np.testing.assert_array_equal(twin.feedforward(X), net.feedforward(X))
    h1, out1 = continue_training(net)
    h2, out2 = continue_training(twin)
    assert h1 == h2
    np.testing.assert_array_equal(out1, out2)
    same(twin, net)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("how", list(COPIES))
def test_copies_are_independent(cls, how):
    net = trained(cls)
    twin = COPIES[how](net)
    before = [p.copy() for p in net.weights + net.biases]
    twin.weights[0][...] = 7.0
    X, _, Y = problem()
    twin.sgd(X, Y, 1, 10, 0.5, mu=0.9)
    twin.accumulate_gradient(X, Y)
    for p, q in zip(net.weights + net.biases, before):
        np.testing.assert_array_equal(p, q)
    assert net.accumulated == 5 and twin.accumulated == 5 + len(X)
    if cls is cbackprop.Network:
        assert twin._engine is not net._engine
        for a, b in ((net._engine.params, twin._engine.params), (net._engine.velocity, twin._engine.velocity),
                     (net._engine.accum, twin._engine.accum)):
            assert not np.may_share_memory(a, b)
    # the original's own state goes on as if nothing happened
    fresh = trained(cls)
    assert continue_training(net)[0] == continue_training(fresh)[0]


def test_copy_keeps_the_C_settings():
    net = cbackprop.Network(SIZES, seed=0)
    net.num_threads = 2
    net._engine.kernels = "plain"
    for how in COPIES.values():
        twin = how(net)
        assert twin.num_threads == 2 and not twin._engine.num_threads_automatic
        assert twin._engine.kernels == "plain"
    auto = cbackprop.Network(SIZES, seed=0)
    assert copy.deepcopy(auto)._engine.num_threads_automatic == auto._engine.num_threads_automatic


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_pickle_holds_the_bytes_of_save(cls, dtype, tmp_path):
    net = trained(cls, dtype, activations=["relu", "sigmoid"], cost="cross-entropy")
    net.save(tmp_path / "net.npz")
    func, (klass, state) = net.__reduce__()
    assert klass is cls
    with np.load(tmp_path / "net.npz") as saved:
        assert set(saved.files) <= set(state)
        for key in saved.files:
            assert state[key].dtype == saved[key].dtype and state[key].shape == saved[key].shape, key
            assert state[key].tobytes() == saved[key].tobytes(), key
    assert {"rng", "velocity", "accumulator", "accumulated"} <= set(state)
    # a corrupted parameter is caught by the checksum
    state["weights_0"] = state["weights_0"].copy()
    state["weights_0"][0, 0] += 1
    with pytest.raises(ValueError, match="checksum does not match"):
        func(klass, state)


def test_copy_while_another_thread_trains():
    """The copy is taken under the network's lock: it is a state between two calls."""
    net = cbackprop.Network([6, 30, 4], seed=0)
    X, _, Y = problem(m=2000)
    stop = threading.Event()

    def train():
        while not stop.is_set():
            net.update_mini_batch(X[:50], Y[:50], 0.1)

    t = threading.Thread(target=train)
    t.start()
    try:
        copies = [pickle.loads(pickle.dumps(net)) for _ in range(20)]
    finally:
        stop.set()
        t.join(timeout=60)
    assert not t.is_alive()
    for c in copies:
        assert all(np.isfinite(p).all() for p in c.weights + c.biases)


@pytest.mark.parametrize("cls", CLASSES)
def test_joblib_round_trip(cls, tmp_path):
    joblib = pytest.importorskip("joblib")
    net = trained(cls, activations=["tanh", "softmax"], cost="log-likelihood")
    joblib.dump(net, tmp_path / "net.joblib")
    twin = joblib.load(tmp_path / "net.joblib")
    X, _, _ = problem()
    np.testing.assert_array_equal(twin.predict_proba(X), net.predict_proba(X))
    assert continue_training(twin) [0] == continue_training(net)[0]


HELPER = textwrap.dedent("""
    def train(net, X, Y):
        net.sgd(X, Y, 2, 10, 0.5, mu=0.5)
        return net
""")


@pytest.mark.parametrize("cls", CLASSES)
def test_multiprocessing_spawn(cls, tmp_path, monkeypatch):
    """A network sent to a spawned process, trained there and sent back: bitwise the same
    as trained here."""
    (tmp_path / "cbp_spawn_helper.py").write_text(HELPER)
    monkeypatch.syspath_prepend(str(tmp_path))         # (the child gets this sys.path)
    import cbp_spawn_helper
    net = trained(cls)
    X, _, Y = problem(seed=2)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        back = pool.apply_async(cbp_spawn_helper.train, (net, X, Y)).get(timeout=120)
    cbp_spawn_helper.train(net, X, Y)
    same(back, net)
    assert back.accumulated == net.accumulated
    sys.modules.pop("cbp_spawn_helper", None)
