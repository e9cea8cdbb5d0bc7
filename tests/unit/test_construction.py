"""Building and loading a network: the initial parameters are the values network.py's
draws give (float64 N(0, 1), biases first, then weights, cast to the dtype), and the memory
either takes is the parameter and gradient blobs plus a small chunk (tracemalloc sees NumPy's
buffers)."""
import tracemalloc

import numpy as np
import pytest

import cbackprop
from cbackprop import _io, _model, _npz, reference

CLASSES = [pytest.param(cbackprop.Network, id="C"), pytest.param(reference.Network, id="reference")]


def drawn_whole(seed, sizes, dtype, init):
    """The initialisation as whole float64 arrays drawn and then cast (how cbackprop drew
    it before drawing in chunks, and what network.py / network2.py do)."""
    rng = np.random.default_rng(seed)
    biases = [rng.standard_normal(n) for n in sizes[1:]]
    weights = [rng.standard_normal((n, n_prev)) for n_prev, n in zip(sizes[:-1], sizes[1:])]
    if init == "default":
        weights = [w / np.sqrt(w.shape[1]) for w in weights]
    return [w.astype(dtype) for w in weights], [b.astype(dtype) for b in biases]


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("init", ["large", "default"])
@pytest.mark.parametrize("sizes", [[1, 1], [5, 9, 3], [784, 30, 10], [2, 40000, 3], [70000, 1, 2]], ids=str)
@pytest.mark.parametrize("seed", [0, 1, 2**40 + 3])
def test_initial_parameters_are_the_whole_draws(cls, dtype, init, sizes, seed):
    # [2, 40000, 3] and [70000, 1, 2]: layers of more values than one chunk of draws
    assert max(n * p for p, n in zip(sizes[:-1], sizes[1:])) > _model.DRAW_CHUNK or sizes[0] < 1000
    net = cls(sizes, dtype=dtype, init=init, seed=seed)
    weights, biases = drawn_whole(seed, sizes, dtype, init)
    for got, want in zip(net.weights + net.biases, weights + biases):
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, want)
    # the generator is where the whole draws left it (the shuffles of sgd follow)
    rng = np.random.default_rng(seed)
    rng.standard_normal(sum(w.size + b.size for w, b in zip(weights, biases)))
    assert net._rng.integers(1 << 62) == rng.integers(1 << 62)


def _peak(fn):
    """(result, peak traced bytes above the start) of fn()."""
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        out = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, peak - start


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_build_and_load_take_the_blobs_plus_a_chunk(cls, dtype, tmp_path):
    """Measured on [784, 1024, 1024, 10] (P = parameter bytes): building peaked at 3.0-3.1 P
    when it drew whole float64 arrays, and now at 2.0 P (float64, drawn in place) and
    2.0 P + one chunk (float32); loading at 4.1 P (it drew an initialisation, then
    converted the file's arrays into new ones), then at the file's arrays (P) + 2 P, and now
    at 2 P + a chunk: the file's parameters are read in chunks straight into the network's."""
    sizes = [784, 1024, 1024, 10]
    cls([3, 2], dtype=dtype)                     # (one-time allocations of the module)
    P = _model.parameter_count(sizes) * np.dtype(dtype).itemsize
    slack = 128 * 1024                           # small objects, a 64 KiB finiteness check
    net, build = _peak(lambda: cls(sizes, dtype=dtype, seed=0))
    assert build <= 2 * P + 8 * _model.DRAW_CHUNK + slack, build / P
    path = tmp_path / "net.npz"
    net.save(path)
    del net
    net, load = _peak(lambda: cls.load(path))
    assert load <= 2 * P + 4 * _npz.CHUNK + slack, load / P   # (a chunk, converted)
    assert net.dtype == dtype


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loaded_network_shuffles_as_a_new_one_with_its_seed(cls, dtype, tmp_path):
    """load(seed=s) draws no initialisation, but its generator is advanced past those
    draws: its sgd shuffles are those of cls(sizes, seed=s)."""
    sizes = [3, 70000, 2]                         # (more draws than one chunk)
    cls(sizes, dtype=dtype, seed=5).save(tmp_path / "net.npz")
    loaded = cls.load(tmp_path / "net.npz", seed=7)
    fresh = cls(sizes, dtype=dtype, seed=7)
    assert repr(loaded._rng.bit_generator.state) == repr(fresh._rng.bit_generator.state)
