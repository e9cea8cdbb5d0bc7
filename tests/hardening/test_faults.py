"""Faults the engine must survive (issue 13): a failed allocation leaves the network usable,
fork() while a network trains leaves the child's copy usable, subnormal numbers are flushed
inside the engine and only there.  Each runs in a child process (rlimits, fork) bounded by a
timeout."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import cbackprop

TIMEOUT = 120


def _run(code, timeout=TIMEOUT):
    """Run code in a fresh interpreter; (returncode, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS semantics of Linux")
def test_training_goes_on_after_a_failed_allocation():
    """reserve() replaces the workspace whole or not at all: after a MemoryError for a batch
    too large for the address-space limit, small batches train on (a crash before)."""
    code = """
        import resource, numpy as np, cbackprop
        net = cbackprop.Network([784, 300, 10], seed=0)
        X, Y = np.zeros((10, 784)), np.zeros((10, 10))
        net.feedforward(X)
        big_x, big_y = np.zeros((100_000, 784)), np.zeros((100_000, 10))
        with open("/proc/self/status") as f:
            vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
        # room for part of the workspace of 100,000 rows (the old engine replaced its z block,
        # 248 MB, then failed on a, 875 MB, and crashed later on the freed block), not all
        resource.setrlimit(resource.RLIMIT_AS, (vm + 400 * 2**20, resource.RLIM_INFINITY))
        try:
            net.backprop(big_x, big_y)
        except MemoryError:
            print("MemoryError")
        before = [w.copy() for w in net.weights]
        for _ in range(50):
            net.update_mini_batch(X, Y, 0.5)
        out = net.feedforward(X)
        assert np.isfinite(out).all() and out.shape == (10, 10)
        assert any(not np.array_equal(a, b) for a, b in zip(before, net.weights))
        print("ok")
    """
    rc, out, err = _run(code)
    assert rc == 0, err[-2000:]
    assert out.split()[-2:] == ["MemoryError", "ok"]   # (an editable install prints its rebuild first)


_FORK_CHILD = """
def use(net, X, Y):
    # the child's copy: predict, step, train, all finishing
    out = net.feedforward(X[:5])
    net.update_mini_batch(X[:10], Y[:10], 0.1)
    net.sgd(X[:200], Y[:200], 1, 10, 0.1)
    assert np.isfinite(out).all()
"""


def _training_network():
    net = cbackprop.Network([784, 100, 10], seed=0)
    rng = np.random.default_rng(0)
    X, Y = rng.random((30_000, 784)), rng.random((30_000, 10))
    return net, X, Y


def _train_in_background(net, X, Y):
    started = threading.Event()

    def train():
        started.set()
        net.sgd(X, Y, 3, 10, 0.1)

    trainer = threading.Thread(target=train)
    trainer.start()
    started.wait(TIMEOUT)
    # Return while an epoch runs: the trainer holds the network's lock (an RLock) for each
    # epoch and not between them (a fixed sleep could land between two epochs, or after the
    # last, on a fast machine).
    deadline = time.monotonic() + TIMEOUT
    while net._lock.acquire(blocking=False):
        net._lock.release()
        if not trainer.is_alive() or time.monotonic() > deadline:
            pytest.fail("no epoch of the trainer was seen running")
        time.sleep(0.001)
    return trainer


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
def test_fork_while_another_thread_trains():
    net, X, Y = _training_network()
    trainer = _train_in_background(net, X, Y)
    pid = os.fork()
    if pid == 0:                            # the child: must finish, not hang on the lock
        code = 1
        try:
            exec(_FORK_CHILD, globals())
            use(net, X, Y)                  # noqa: F821 (defined by the exec above)
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + TIMEOUT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung using the network")
        time.sleep(0.05)
    trainer.join(TIMEOUT)
    assert os.waitstatus_to_exitcode(status) == 0


def _use_in_process(net, X, Y):
    exec(_FORK_CHILD, globals())
    use(net, X, Y)                          # noqa: F821


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
def test_multiprocessing_fork_while_another_thread_trains():
    import multiprocessing
    import warnings
    net, X, Y = _training_network()
    trainer = _train_in_background(net, X, Y)
    with warnings.catch_warnings():
        # (Python 3.12+ warns that fork() in a multi-threaded process may deadlock: the
        # point of this test is that it does not)
        warnings.simplefilter("ignore", DeprecationWarning)
        proc = multiprocessing.get_context("fork").Process(target=_use_in_process, args=(net, X, Y))
        proc.start()
    proc.join(TIMEOUT)
    hung = proc.is_alive()
    if hung:
        proc.kill()
        proc.join()
    trainer.join(TIMEOUT)
    assert not hung, "the forked child hung using the network"
    assert proc.exitcode == 0


def _subnormal(dtype):
    return np.finfo(dtype).tiny / np.array(16, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_subnormals_are_flushed_in_the_engine_only(dtype):
    tiny = np.finfo(dtype).tiny
    net = cbackprop.Network([1, 1], activations="identity", dtype=dtype)
    net.weights = [np.array([[1.0]])]
    net.biases = [np.array([0.0])]
    # z = w x + b with x subnormal: flushed to 0 inside the engine ...
    assert net.feedforward(np.array([[tiny / 16]]))[0, 0] == 0
    # ... and the caller's arithmetic keeps its subnormals afterwards
    assert _subnormal(dtype) > 0
    assert float.fromhex("0x1p-1060") * 1.5 > 0
