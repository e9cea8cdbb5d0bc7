"""The speed of learning of the hidden layers (chapter 5): layer_speeds(X, Y) is ||delta^l||
of the gradient averaged over the rows, as the book's generate_gradient.py computes it (the
per-sample backprop of network2, nabla_b summed and divided by the number of images), in
both paths, over chunks of rows, with labels, and as sgd's monitor_layer_speeds; and the
examples layer_speeds.py and best_fully_connected.py at a small scale."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cbackprop
from cbackprop import reference

SIZES = [12, 9, 8, 7, 5]
KW = dict(cost="cross-entropy", init="default")


def data(m, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((m, SIZES[0])), rng.integers(0, SIZES[-1], m)


@pytest.mark.parametrize("cls", [cbackprop.Network, reference.Network])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_speeds_are_the_norms_of_the_books_average_gradient(cls, dtype):
    X, labels = data(50)
    net = cls(SIZES, dtype=dtype, seed=1, **KW)
    ref = reference.Network(SIZES, seed=1, **KW)          # float64, the book's per-sample loop
    ref.weights, ref.biases = [w.astype(np.float64) for w in net.weights], [b.astype(np.float64) for b in net.biases]
    Y = np.eye(SIZES[-1])[labels]
    nabla_b = [np.zeros(n) for n in SIZES[1:]]
    for x, y in zip(X, Y):                                  # generate_gradient.py's get_average_gradient
        db, _ = ref._backprop_one(x.reshape(-1, 1), y.reshape(-1, 1))
        nabla_b = [s + d.ravel() for s, d in zip(nabla_b, db)]
    want = [float(np.linalg.norm(s / 50)) for s in nabla_b[:-1]]   # hidden layers only
    got = net.layer_speeds(X, labels)
    assert len(got) == len(SIZES) - 2 and all(isinstance(v, float) for v in got)
    np.testing.assert_allclose(got, want, rtol=1e-12 if dtype == np.float64 else 1e-5)
    assert net.layer_speeds(X, Y) == got                   # one-hot rows: the same


def test_c_path_equals_reference():
    X, labels = data(64, seed=2)
    fast, ref = cbackprop.Network(SIZES, seed=3, **KW), reference.Network(SIZES, seed=3, **KW)
    np.testing.assert_allclose(fast.layer_speeds(X, labels), ref.layer_speeds(X, labels), rtol=1e-12)


def test_chunks_of_rows_give_the_speeds_of_the_whole_batch(monkeypatch):
    """Large inputs are backpropagated a chunk of rows at a time, averaged with their sizes."""
    from cbackprop import _base
    X, labels = data(300, seed=4)
    net = cbackprop.Network(SIZES, seed=5, **KW)
    whole = net.layer_speeds(X, labels)
    monkeypatch.setattr(_base, "_SPEED_VALUES", 7 * max(SIZES))        # 7 rows per chunk
    calls = []
    original = net._gradient
    monkeypatch.setattr(net, "_gradient", lambda X2, Y2: calls.append(len(X2)) or original(X2, Y2))
    chunked = net.layer_speeds(X, labels)
    assert calls == [7] * 42 + [6]
    np.testing.assert_allclose(chunked, whole, rtol=1e-12)


def test_one_backprop_over_the_books_1000_images():
    net = cbackprop.Network([784, 30, 30, 10], seed=0, **KW)
    calls = []
    original = net._gradient
    net._gradient = lambda X2, Y2: calls.append(len(X2)) or original(X2, Y2)
    rng = np.random.default_rng(0)
    net.layer_speeds(rng.random((1000, 784)), rng.integers(0, 10, 1000))
    assert calls == [1000]


@pytest.mark.parametrize("cls", [cbackprop.Network, reference.Network])
def test_monitor_records_the_speeds_after_each_epoch(cls):
    X, labels = data(40, seed=6)
    net = cls(SIZES, seed=7, **KW)
    seen = []
    history = net.sgd(X, labels, 3, 40, 0.1, lmbda=5.0, monitor_layer_speeds=True,
                      callback=lambda record: seen.append(net.layer_speeds(X, labels)))
    assert [r["layer_speeds"] for r in history] == seen
    assert seen[0] != seen[1]
    assert "layer_speeds" not in net.sgd(X, labels, 1, 40, 0.1)[0]


def test_monitor_flag_is_validated():
    net = cbackprop.Network(SIZES, seed=7, **KW)
    X, labels = data(10)
    with pytest.raises(TypeError, match="monitor_layer_speeds must be True or False, got 'yes'"):
        net.sgd(X, labels, 1, 10, 0.1, monitor_layer_speeds="yes")


def test_no_hidden_layer_has_no_speeds():
    net = cbackprop.Network([4, 3], seed=0)
    assert net.layer_speeds(np.ones((2, 4)), np.ones((2, 3))) == []


def test_deep_sigmoid_layers_learn_slower_earlier():
    """The book's observation at initialisation on [784, 30, 30, 30, 30, 10] (network2's
    default weights, cross-entropy): each hidden layer's speed exceeds the one before it.
    Here on 200 random images (the example measures MNIST)."""
    rng = np.random.default_rng(1)
    net = cbackprop.Network([784, 30, 30, 30, 30, 10], seed=2, **KW)
    speeds = net.layer_speeds(rng.random((200, 784)), rng.integers(0, 10, 200))
    assert all(a < b for a, b in zip(speeds, speeds[1:])), speeds


# ---- the examples, at a small scale (a few seconds each, mostly starting Python) -------------
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run_example(name, tmp_path, *args):
    proc = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MPLBACKEND": "Agg", "SKBUILD_EDITABLE_VERBOSE": "0"})
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.slow
@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="not a source checkout")
def test_example_layer_speeds(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "speeds.png"
    out = run_example("layer_speeds", tmp_path, "--epochs", "4", "--n-train", "100", "--seeds", "0,1",
                      "--plot", str(png))
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and png.stat().st_size > 5000
    initial = re.findall(r"^  (\d) hidden layers, at initialisation: mean (\S+(?:, \S+)*) \(", out, re.M)
    assert [h for h, _ in initial] == ["2", "3", "4"] * 3, out
    for hidden, speeds in initial[:3]:          # the book's setting: earlier layers slower
        values = [float(v) for v in speeds.split(", ")]
        assert len(values) == int(hidden) and values == sorted(values), out
    assert "book: 0.003, 0.017, 0.07, 0.285" in out


@pytest.mark.slow
@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="not a source checkout")
def test_example_best_fully_connected(tmp_path):
    out = run_example("best_fully_connected", tmp_path, "--epochs", "2", "--seeds", "0,1", "--n-train", "2000",
                      "--dropout", "0.5", "--json", str(tmp_path / "runs.json"))
    seeds = re.findall(r"^seed (\d): validation (\S+) % \(best (\S+) % at epoch (\d)\), test (\S+) %", out, re.M)
    assert [s[0] for s in seeds] == ["0", "1"], out
    assert all(70 < float(s[1]) <= float(s[2]) < 100 for s in seeds), out   # it learns
    runs = json.loads((tmp_path / "runs.json").read_text())["runs"]
    assert [r["seed"] for r in runs] == [0, 1]
    assert abs(runs[0]["validation"] - float(seeds[0][1]) / 100) < 5e-5
