"""Every SIMD kernel variant against the plain kernels (the oracle) over awkward sizes:
widths around the vector lengths (4/8/16 floats, 2/4/8 doubles) and the 4-row blocks."""
import os
import subprocess
import sys

import numpy as np
import pytest

import cbackprop
from cbackprop import _core

FAST = [k for k in _core.kernels_supported() if k != "plain"]
AWKWARD = [
    [1, 1], [3, 1, 2], [17, 15, 33], [16, 8, 4, 2], [31, 65, 7], [63, 129, 3], [64, 32, 16],
    [5, 100, 30, 10], [130, 17, 9, 33, 1],
    [24, 512, 256, 3],           # hidden rows padded in the workspace (net.c: cbp_ld)
]


def twins(sizes, dtype, kernels, seed=0):
    oracle = cbackprop.Network(sizes, dtype=dtype, seed=seed)
    oracle._engine.kernels = "plain"
    fast = cbackprop.Network(sizes, dtype=dtype, seed=seed)
    fast._engine.kernels = kernels
    return fast, oracle


def test_kernel_names():
    assert _core.kernels_supported()[:2] == ("plain", "generic")
    assert cbackprop.Network([2, 1]).kernels == _core.best_kernels()
    with pytest.raises(ValueError, match="kernels must be one of"):
        cbackprop.Network([2, 1])._engine.kernels = "sse9"


@pytest.mark.parametrize("kernels", FAST)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("sizes", AWKWARD, ids=str)
@pytest.mark.parametrize("m", [1, 3, 4, 5, 9, 17])
def test_variant_matches_plain_kernels(kernels, dtype, sizes, m, batch, assert_close):
    fast, oracle = twins(sizes, dtype, kernels)
    X, Y = batch(sizes, m, seed=m)
    assert_close(fast.feedforward(X), oracle.feedforward(X), dtype, "feedforward")
    for a, d in zip(sum(fast.backprop(X, Y), []), sum(oracle.backprop(X, Y), [])):
        assert_close(a, d, dtype, "gradient")
    # the fused step (gradient folded into the update) against gradient-then-update
    fast.update_mini_batch(X, Y, 0.7)
    oracle.update_mini_batch(X, Y, 0.7)
    for a, d in zip(fast.weights + fast.biases, oracle.weights + oracle.biases):
        assert_close(a, d, dtype, "parameters after one step")


CHAPTER3 = [  # (sizes, activations, cost): every layer kind and cost through every variant
    ([17, 33, 9, 5], ["tanh", "relu", "sigmoid"], "cross-entropy"),
    ([31, 16, 7], ["identity", "softmax"], "log-likelihood"),
    ([20, 65, 10], ["relu", "softmax"], "quadratic"),
    ([9, 5, 3], ["tanh", "tanh"], "quadratic"),
    ([5, 3, 1], ["sigmoid", "identity"], "quadratic"),
]


@pytest.mark.parametrize("kernels", FAST)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("sizes, activations, cost", CHAPTER3, ids=str)
@pytest.mark.parametrize("m", [1, 6, 17])
def test_variant_matches_plain_kernels_chapter3(kernels, dtype, sizes, activations, cost, m, assert_close):
    def make(k):
        net = cbackprop.Network(sizes, activations=activations, cost=cost, dtype=dtype, seed=4)
        net._engine.kernels = k
        return net
    fast, oracle = make(kernels), make("plain")
    rng = np.random.default_rng(m)
    X = rng.standard_normal((m, sizes[0]))
    Y = np.eye(sizes[-1])[rng.integers(0, sizes[-1], m)]
    assert_close(fast.feedforward(X), oracle.feedforward(X), dtype, "feedforward")
    for a, d in zip(sum(fast.backprop(X, Y), []), sum(oracle.backprop(X, Y), [])):
        assert_close(a, d, dtype, "gradient")
    # fused L2 step, then momentum steps (gradient blob + velocity), then accumulation
    for kw in (dict(lmbda=3.0, n=50), dict(mu=0.6), dict(mu=0.6, lmbda=1.0, n=40)):
        fast.update_mini_batch(X, Y, 0.2, **kw)
        oracle.update_mini_batch(X, Y, 0.2, **kw)
    fast.accumulate_gradient(X, Y)
    oracle.accumulate_gradient(X, Y)
    fast.apply_gradient(0.1)
    oracle.apply_gradient(0.1)
    for a, d in zip(fast.weights + fast.biases, oracle.weights + oracle.biases):
        assert_close(a, d, dtype, "parameters after the steps")


# Wide enough that the double kernels' products run in cache blocks of columns
# (kernels_simd_impl.h: nn_body, when B is over 512 KiB): BP4 below 601 or 1100 inputs for
# m = 110 and 128 (601 columns cut at nb, 256 for m = 128 on AVX-512, the last block ending in
# a 1-column edge window; m = 1 and 3 leave it unblocked), and BP2 from the 120 units of
# [64, 601, 120, 3] for any m.  Double only: float32 runs unblocked, and at m = 110 a bias
# gradient of the 3-unit output layer, a sum of 110 terms that nearly cancel, sat at the edge
# of float32's entrywise tolerance (2.4e-5 apart relative to the entry under the sanitizer
# build's generic kernels): a test of float32 rounding, not of the blocks.
@pytest.mark.parametrize("kernels", FAST)
@pytest.mark.parametrize("dtype", [np.float64])
@pytest.mark.parametrize("sizes", [[601, 20, 3], [1100, 37, 9, 2], [64, 601, 120, 3]], ids=str)
@pytest.mark.parametrize("m", [1, 3, 110, 128])
@pytest.mark.parametrize("rule", [dict(), dict(lmbda=2.0, n=500, mu=0.6),
                                  dict(optimizer="nesterov", mu=0.7), dict(optimizer="adam", eps=1e-3)],
                         ids=["sgd", "L2+momentum", "nesterov", "adam"])
def test_variant_matches_plain_kernels_on_wide_layers(kernels, dtype, sizes, m, rule, batch, assert_close):
    fast, oracle = twins(sizes, dtype, kernels, seed=m)
    X, Y = batch(sizes, m, seed=m)
    for a, d in zip(sum(fast.backprop(X, Y), []), sum(oracle.backprop(X, Y), [])):
        assert_close(a, d, dtype, "gradient")
    for _ in range(2):
        fast.update_mini_batch(X, Y, 0.3, **rule)
        oracle.update_mini_batch(X, Y, 0.3, **rule)
    # Adam's step eta m/(sqrt(v) + eps) carries a gradient entry's rounding into the step
    # multiplied by up to eta/eps (with eps = 1e-8, entries near zero differed by up to 9e-10
    # of the largest parameter in float64 and 9e-2 in float32: their signs).  eps = 1e-3 bounds
    # that: measured over these cases, 1.5e-14 of the largest.  A state read from the wrong
    # columns would move the parameters by about eta.
    tol = dict(atol_scale=1e-13) if rule.get("optimizer") == "adam" else {}
    for a, d in zip(fast.weights + fast.biases, oracle.weights + oracle.biases):
        assert_close(a, d, dtype, "parameters after two steps", **tol)


@pytest.mark.parametrize("kernels", _core.kernels_supported())
def test_every_variant_runs_the_sgd_epoch_driver(kernels, assert_params_close):
    sizes = [23, 19, 5]
    fast, oracle = twins(sizes, np.float64, kernels, seed=3)
    rng = np.random.default_rng(0)
    X, Y = rng.random((101, 23)), rng.random((101, 5))
    fast.sgd(X, Y, 2, 8, 2.0)
    oracle.sgd(X, Y, 2, 8, 2.0)
    assert_params_close(fast, oracle, np.float64, rtol=1e-12, atol_scale=1e-13)


def test_environment_selects_kernels():
    code = "import cbackprop; print(cbackprop.Network([3, 2]).kernels)"
    env = dict(os.environ, CBACKPROP_KERNELS="plain")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "plain"  # (editable installs print rebuild lines first)
    env["CBACKPROP_KERNELS"] = "nonsense"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "CBACKPROP_KERNELS must be one of" in bad.stderr


@pytest.mark.parametrize("kernels", FAST)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("sizes, n, mbs", [([784, 30, 10], 203, 10), ([120, 45, 7], 50, 9),
                                           ([40, 70, 33, 17, 1], 77, 16), ([9, 130, 4], 64, 64),
                                           ([601, 40, 3], 250, 120), ([64, 601, 120, 3], 250, 120),
                                           ([60, 512, 10], 90, 10), ([40, 256, 512, 3], 100, 20)],
                         ids=str)
@pytest.mark.parametrize("step", [{}, dict(lmbda=0.5), dict(mu=0.3), dict(lmbda=0.5, mu=0.3),
                                  dict(optimizer="adam")],
                         ids=["plain", "L2", "momentum", "L2+momentum", "adam"])
def test_sgd_epoch_is_bitwise_the_same_on_any_number_of_threads(kernels, dtype, sizes, n, mbs, step):
    rng = np.random.default_rng(5)
    X, Y = rng.random((n, sizes[0])), rng.random((n, sizes[-1]))
    results = []
    for threads in (1, 2, 3):
        net = cbackprop.Network(sizes, dtype=dtype, seed=2)
        net._engine.kernels = kernels
        net.num_threads = threads
        net.sgd(X, Y, 2, mbs, 1.5, **step)
        results.append(net.weights + net.biases)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_num_threads_is_validated():
    net = cbackprop.Network([3, 2])
    for bad in (0, 65, -1):
        with pytest.raises(ValueError, match="num_threads must be an integer"):
            net.num_threads = bad
    for bad in (1.5, True, "2", None):
        with pytest.raises(TypeError, match="num_threads must be an integer"):
            net.num_threads = bad
    net.num_threads = np.int64(2)
    assert net.num_threads == 2


def test_two_threads_training_two_networks_give_the_serial_results():
    import threading
    rng = np.random.default_rng(0)
    X, Y = rng.random((300, 50)), rng.random((300, 4))
    serial = [cbackprop.Network([50, 20, 4], seed=s) for s in (1, 2)]
    for net in serial:
        net.sgd(X, Y, 3, 10, 1.0)
    parallel = [cbackprop.Network([50, 20, 4], seed=s) for s in (1, 2)]
    threads = [threading.Thread(target=net.sgd, args=(X, Y, 3, 10, 1.0)) for net in parallel]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(serial, parallel):
        for p, q in zip(a.weights + a.biases, b.weights + b.biases):
            np.testing.assert_array_equal(p, q)


def test_thread_policy():
    """How an epoch runs (cbp_epoch_plan): with T threads (num_threads, or every usable core),
    a network with one hidden layer of at least two vectors of units per thread and no
    dropout as the hidden split (automatic: from 1e6 flops per mini-batch); else from 2e7
    flops per mini-batch as phases of tasks on T threads; else with the feeder (2 threads);
    one thread when T = 1.  A forced plan applies where it can."""
    cores = _core.usable_cores()
    wide, narrow = cbackprop.Network([784, 256, 10]), cbackprop.Network([784, 30, 10])
    deep = cbackprop.Network([784, 256, 256, 10])
    dropped = cbackprop.Network([784, 256, 10], dropout=0.5)
    if wide._engine.num_threads_automatic and 2 <= cores <= 4:   # (lanes <= 16 in float64)
        assert wide._engine.epoch_plan(10) == ("split", cores)          # 8.1e6 flops
        assert wide._engine.epoch_plan(1) == ("feed", 2)                # 8.1e5 flops
        assert narrow._engine.epoch_plan(10) == ("feed", 2)             # 30 units: too narrow
        assert dropped._engine.epoch_plan(10) == ("feed", 2)
        assert deep._engine.epoch_plan(32) == ("tasks", cores)          # 3.4e7 flops
        assert deep._engine.epoch_plan(16) == ("feed", 2)               # 1.7e7 flops
        assert deep._engine.epoch_threads(32) == cores
    for net in (wide, narrow, deep):
        net.num_threads = 1
        assert net._engine.epoch_plan(100) == ("alone", 1)
    narrow.num_threads = wide.num_threads = deep.num_threads = 3
    assert wide._engine.epoch_plan(1) == ("split", 3)                   # explicit: any size
    assert narrow._engine.epoch_plan(10) == ("feed", 2)
    assert deep._engine.epoch_plan(64) == ("tasks", 3)
    narrow._engine.plan = "tasks"
    assert narrow._engine.epoch_plan(10) == ("tasks", 3)
    narrow._engine.plan = "split"                                        # (does not apply)
    assert narrow._engine.epoch_plan(10) == ("tasks", 3)
    wide._engine.plan = "alone"
    assert wide._engine.epoch_plan(10) == ("alone", 1)
    with pytest.raises(ValueError, match=r"plan must be 'auto' or one of .*got 'fast'"):
        wide._engine.plan = "fast"
    assert wide._engine.plan == "alone"


def test_automatic_thread_count(monkeypatch):
    """Unset, num_threads is automatic: it reads as the usable cores, small networks train
    with the feeder (two threads where there are two cores); setting it (or
    CBACKPROP_NUM_THREADS) turns that off."""
    monkeypatch.delenv("CBACKPROP_NUM_THREADS", raising=False)
    net = cbackprop.Network([30, 20, 4], seed=0)
    assert net._engine.num_threads_automatic
    assert net.num_threads == _core.usable_cores()
    rng = np.random.default_rng(0)
    net.sgd(rng.random((50, 30)), rng.random((50, 4)), 1, 10, 1.0)   # 2.8e4 flops per mini-batch
    assert net._engine.last_epoch_threads == min(2, _core.usable_cores())
    net.num_threads = 1
    assert not net._engine.num_threads_automatic and net.num_threads == 1
    monkeypatch.setenv("CBACKPROP_NUM_THREADS", "3")
    other = cbackprop.Network([3, 2])
    assert not other._engine.num_threads_automatic and other.num_threads == 3


@pytest.mark.parametrize("kernels", _core.kernels_supported())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite_finds_one_inf_or_nan_at_any_position(kernels, dtype):
    """The finiteness check every variant provides (the parameter checks after a step, the
    inputs at the boundary): one inf, -inf or NaN at each position of arrays of the lengths
    around one, two and four vectors of every variant, and the largest finite values."""
    for n in (0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 69):
        x = np.full(n, np.finfo(dtype).max, dtype=dtype)
        x[::2] *= -1
        assert _core.all_finite(x, kernels)
        for i in range(n):
            for bad in (np.inf, -np.inf, np.nan):
                y = x.copy()
                y[i] = bad
                assert not _core.all_finite(y, kernels), (n, i, bad)
    with pytest.raises(ValueError, match="kernels must be one of"):
        _core.all_finite(np.zeros(3, dtype), "sse9")
