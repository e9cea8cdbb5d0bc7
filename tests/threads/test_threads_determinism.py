"""Determinism and thread safety of cbackprop.Network.

(a) the same seed and thread settings give bitwise the same parameters after training;
(b) calls on ONE network from several Python threads are serialised: one thread trains while
    three others call the read-only methods; the training result equals the serial one
    bitwise, and every read-only result equals the result of the same call on one of the
    parameter states the serial training passes through (so no call saw a torn state);
(c) two threads training two different networks at once give the serial results;
(d) a threaded epoch (csrc/parallel.h: tasks claimed from a shared counter) gives the
    one-thread result for every activation, cost, update rule and kernel variant, with
    target rows or integer labels, also with more threads than cores.
"""
import threading

import numpy as np
import pytest

import cbackprop
from cbackprop import _core

DTYPES = [np.float64, np.float32]
SIZES = [64, 48, 10]
MBS = 16


def _data(n, seed=0, sizes=SIZES):
    rng = np.random.default_rng(seed)
    return rng.random((n, sizes[0])), rng.random((n, sizes[-1]))


def _params(net):
    return [p.copy() for p in net.weights + net.biases]


def _assert_bitwise_equal(a, b, what=""):
    assert len(a) == len(b)
    for i, (p, q) in enumerate(zip(a, b)):
        assert p.dtype == q.dtype and p.shape == q.shape, what
        assert p.tobytes() == q.tobytes(), f"{what}: parameter array {i} differs (max |diff| = " \
                                           f"{np.max(np.abs(p.astype(float) - q.astype(float)))})"


# ---- (a) ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_same_seed_and_threads_give_bitwise_identical_training(dtype):
    X, Y = _data(203)
    Xt, lab = _data(50, seed=1)[0], np.arange(50) % SIZES[-1]
    results = {}
    for threads in (1, 2):
        runs = []
        for _ in range(2):
            net = cbackprop.Network(SIZES, dtype=dtype, seed=11)
            net.num_threads = threads
            history = net.sgd(X, Y, 2, MBS, 0.7, test_data=(Xt, lab))
            runs.append((_params(net), [h["test_correct"] for h in history]))
        _assert_bitwise_equal(runs[0][0], runs[1][0], f"two fresh networks, num_threads={threads}")
        assert runs[0][1] == runs[1][1]
        results[threads] = runs[0]
    # documented: the result is bitwise the same for any number of threads
    _assert_bitwise_equal(results[1][0], results[2][0], "num_threads=1 vs num_threads=2")
    assert results[1][1] == results[2][1]
    # On a busy 2-core machine a second thread may start after the first has claimed every
    # task: repeat until a run did use 2 threads (a network whose layers are cut into several
    # tasks per phase), and check every run.
    big = [300, 100, 10]
    Xb, Yb = _data(600, seed=3, sizes=big)
    one = cbackprop.Network(big, dtype=dtype, seed=11)
    one.num_threads = 1
    one.sgd(Xb, Yb, 2, 32, 0.7)
    ran_on_two = 0
    for _ in range(30):
        net = cbackprop.Network(big, dtype=dtype, seed=11)
        net.num_threads = 2
        net.sgd(Xb, Yb, 2, 32, 0.7)
        _assert_bitwise_equal(_params(net), _params(one), "repeated run on num_threads=2")
        ran_on_two += net._engine.last_epoch_threads == 2
        if ran_on_two >= 3:
            break
    assert ran_on_two >= 1, "no epoch ran on 2 threads in 30 attempts"


# ---- (b) ------------------------------------------------------------------------------------
def _training_ops(X, Y):
    """The trainer's calls: single-epoch sgd calls (each runs under the lock as a whole)
    interleaved with update_mini_batch calls on fixed mini-batches."""
    ops = []
    for i in range(120):
        if i % 6 == 5:
            ops.append(("sgd", (X, Y, 1, MBS, 0.5)))
        else:
            k = (i * MBS) % (X.shape[0] - MBS)
            ops.append(("update_mini_batch", (X[k:k + MBS], Y[k:k + MBS], 0.8)))
    return ops


def _read_only_calls(Xr, Yr, lab):
    return {
        "feedforward": lambda net: net.feedforward(Xr),
        "feedforward1": lambda net: net.feedforward(Xr[0]),
        "backprop": lambda net: net.backprop(Xr, Yr),
        "cost": lambda net: net.cost(Xr, Yr),
        "evaluate": lambda net: net.evaluate(Xr, lab),
    }


def _key(name, result):
    if name == "backprop":
        nb, nw = result
        return b"".join(a.tobytes() for a in nb + nw)
    if isinstance(result, np.ndarray):
        return result.tobytes()
    return repr(result)


def _check_shape(name, result, net, m):
    n_out = net.sizes[-1]
    if name == "feedforward":
        assert result.shape == (m, n_out) and result.dtype == net.dtype and np.isfinite(result).all()
    elif name == "feedforward1":
        assert result.shape == (n_out,) and result.dtype == net.dtype and np.isfinite(result).all()
    elif name == "backprop":
        nb, nw = result
        assert [b.shape for b in nb] == [b.shape for b in net.biases]
        assert [w.shape for w in nw] == [w.shape for w in net.weights]
        assert all(a.dtype == net.dtype and np.isfinite(a).all() for a in nb + nw)
    elif name == "cost":
        assert isinstance(result, float) and np.isfinite(result) and result >= 0
    elif name == "evaluate":
        assert isinstance(result, int) and 0 <= result <= m


@pytest.mark.parametrize("dtype", DTYPES)
def test_readers_concurrent_with_a_trainer_see_only_serial_states(dtype):
    X, Y = _data(160, seed=2)
    rng = np.random.default_rng(3)
    Xr, Yr = rng.random((MBS, SIZES[0])), rng.random((MBS, SIZES[-1]))
    lab = rng.integers(0, SIZES[-1], MBS)
    ops = _training_ops(X, Y)
    reads = _read_only_calls(Xr, Yr, lab)

    def fresh():
        net = cbackprop.Network(SIZES, dtype=dtype, seed=5)
        net.num_threads = 2
        net.backprop(Xr, Yr)  # the same workspace size in both runs from the start
        return net

    # serial: every parameter state the training passes through, and what each read-only
    # call returns in it
    serial = fresh()
    allowed = {name: {_key(name, f(serial))} for name, f in reads.items()}
    for op, args in ops:
        getattr(serial, op)(*args)
        for name, f in reads.items():
            allowed[name].add(_key(name, f(serial)))

    net = fresh()
    done = threading.Event()
    errors, results = [], [[] for _ in range(3)]

    def trainer():
        try:
            for op, args in ops:
                getattr(net, op)(*args)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            done.set()

    def reader(i):
        names = list(reads)
        try:
            k = 0
            while not done.is_set() or k < 20:
                name = names[(k + i) % len(names)]
                results[i].append((name, reads[name](net)))
                k += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=trainer)] + [threading.Thread(target=reader, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors

    _assert_bitwise_equal(_params(net), _params(serial), "training concurrent with readers vs serial training")
    n_reads = sum(len(r) for r in results)
    assert n_reads >= 60
    # the readers did run while the trainer changed the parameters: they saw several states
    seen = {_key(name, res) for r in results for name, res in r if name == "feedforward"}
    assert len(seen) >= 2, f"{n_reads} reads saw {len(seen)} parameter states"
    for r in results:
        for name, result in r:
            _check_shape(name, result, net, MBS)
            assert _key(name, result) in allowed[name], \
                f"{name} returned a result that matches no parameter state of the serial training"


# ---- (c) ------------------------------------------------------------------------------------
def test_two_threads_training_two_networks_of_each_dtype_give_the_serial_results():
    X, Y = _data(300, seed=4)
    specs = [(dtype, seed) for dtype in DTYPES for seed in (1, 2)]

    def make():
        nets = []
        for dtype, seed in specs:
            net = cbackprop.Network(SIZES, dtype=dtype, seed=seed)
            net.num_threads = 2
            nets.append(net)
        return nets

    serial = make()
    for net in serial:
        net.sgd(X, Y, 2, MBS, 1.0)
    parallel = make()
    # two threads at a time, on two different networks of the same dtype
    for pair in (parallel[:2], parallel[2:]):
        errors = []

        def train(net):
            try:
                net.sgd(X, Y, 2, MBS, 1.0)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=train, args=(net,)) for net in pair]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads) and not errors, errors
    # and once more with all four networks (both dtypes) training at the same time
    together = make()
    threads = [threading.Thread(target=net.sgd, args=(X, Y, 2, MBS, 1.0)) for net in together]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    for (dtype, seed), s, p, t in zip(specs, serial, parallel, together):
        _assert_bitwise_equal(_params(p), _params(s), f"{np.dtype(dtype).name} seed {seed}: pairs vs serial")
        _assert_bitwise_equal(_params(t), _params(s), f"{np.dtype(dtype).name} seed {seed}: four vs serial")


# ---- (d) threaded epochs ----------------------------------------------------------------
CASES = [
    # sizes, mini-batch, Network kwargs, sgd kwargs
    ([784, 100, 10], 10, {}, {}),
    ([120, 75, 7], 9, {"cost": "cross-entropy"}, {"lmbda": 5.0}),
    ([200, 70, 12], 16, {"activations": ["relu", "softmax"], "cost": "log-likelihood"}, {"mu": 0.6}),
    ([150, 64, 5], 13, {"activations": "tanh"}, {"lmbda": 2.0, "mu": 0.3}),
    ([60, 40, 30, 5], 16, {"activations": ["relu", "tanh", "softmax"], "cost": "quadratic"}, {"mu": 0.5}),
    ([9, 130, 4], 64, {"activations": ["sigmoid", "identity"]}, {}),
]


@pytest.mark.parametrize("kernels", _core.kernels_supported())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes, mbs, net_kw, sgd_kw", CASES, ids=lambda v: str(v))
def test_threaded_epochs_give_the_one_thread_result_bitwise(kernels, dtype, sizes, mbs, net_kw, sgd_kw):
    X, Y = _data(403, seed=6, sizes=sizes)
    labels = np.arange(len(X)) % sizes[-1]
    if net_kw.get("cost") == "log-likelihood":
        Y = np.eye(sizes[-1])[labels]

    def train(threads, targets, plan="auto"):
        net = cbackprop.Network(sizes, dtype=dtype, seed=8, **net_kw)
        net._engine.kernels = kernels
        net._engine.plan = plan
        net.num_threads = threads
        net.sgd(X, targets, 2, mbs, 0.1, **sgd_kw)
        return net

    alone = train(1, Y)
    assert alone._engine.last_epoch_threads == 1
    for threads in (2, 3, 5):       # (5: more threads than this machine's cores)
        net = train(threads, Y)
        _assert_bitwise_equal(_params(net), _params(alone), f"{threads} threads vs 1")
        assert 1 <= net._engine.last_epoch_threads <= threads
        for plan in ("feed", "split", "tasks"):     # each way of running an epoch, where it applies
            net = train(threads, Y, plan)
            _assert_bitwise_equal(_params(net), _params(alone), f"{threads} threads, {plan} vs 1")
    if net_kw.get("cost") == "log-likelihood":
        # integer labels: the engine builds each mini-batch's one-hot rows, the same result
        perms = [np.random.default_rng(8 + e).permutation(len(X)) for e in range(2)]
        h = (0.1, 1.0, 0.0, sgd_kw.get("mu", 0.0))
        Xd = np.ascontiguousarray(X, dtype=dtype)
        results = []
        for threads, targets in ((1, Y.astype(dtype)), (1, labels.astype(np.int64)),
                                 (2, labels.astype(np.int64))):
            net = cbackprop.Network(sizes, dtype=dtype, seed=8, **net_kw)
            net._engine.kernels = kernels
            net.num_threads = threads
            net._engine.reserve(mbs)
            for perm in perms:
                net._engine.sgd_epoch(Xd, targets, perm, mbs, *h)
            results.append(_params(net))
        _assert_bitwise_equal(results[1], results[0], "labels vs one-hot rows")
        _assert_bitwise_equal(results[2], results[0], "labels on 2 threads vs one-hot rows")
