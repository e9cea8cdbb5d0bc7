"""No allocation per step: the workspace is allocated once per network and batch capacity.
tracemalloc sees every NumPy data buffer and every Python object, so a per-step array (the
smallest batch here is 10 x 784 floats = 31 KiB) or a growing leak would show."""
import tracemalloc

import numpy as np
import pytest

import cbackprop


@pytest.fixture
def traced():
    tracemalloc.start()
    yield
    tracemalloc.stop()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_update_mini_batch_allocates_nothing_per_step(dtype, traced):
    net = cbackprop.Network([784, 30, 10], dtype=dtype, seed=0)
    rng = np.random.default_rng(0)
    X, Y = rng.random((1000, 784)).astype(dtype), rng.random((1000, 10)).astype(dtype)
    net.update_mini_batch(X[:10], Y[:10], 3.0)          # allocates the workspace
    start, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    for k in range(0, 1000, 10):
        for _ in range(10):
            net.update_mini_batch(X[k:k + 10], Y[k:k + 10], 3.0)
    end, peak = tracemalloc.get_traced_memory()
    assert peak - start < 4096, f"{peak - start} bytes allocated at the peak of 1000 steps"
    assert end - start < 1024, f"{end - start} bytes retained after 1000 steps"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_epoch_allocates_only_its_permutation(dtype, traced):
    n = 5000
    net = cbackprop.Network([784, 30, 10], dtype=dtype, seed=0)
    rng = np.random.default_rng(0)
    X, Y = rng.random((n, 784)).astype(dtype), rng.random((n, 10)).astype(dtype)
    net.sgd(X, Y, 1, 10, 3.0)                            # workspace for mini-batch 10
    start, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    net.sgd(X, Y, 3, 10, 3.0)
    end, peak = tracemalloc.get_traced_memory()
    # per epoch: the int64 permutation (8 n bytes) and the copy of the parameters taken at
    # its start (to roll back a divergence); the previous epoch's are released only when
    # the next are made, so two of each at the peak; a few small Python objects.  The
    # inputs are not copied (right dtype, contiguous).
    param_bytes = sum(p.nbytes for p in net.weights + net.biases)
    assert peak - start < 2 * (8 * n + param_bytes) + 8192, f"peak {peak - start} bytes"
    assert end - start < 4096
