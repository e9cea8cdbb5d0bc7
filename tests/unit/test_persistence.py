"""Network.save / load (versioned npz) and network2.py's JSON through the Network classes,
and cbackprop.gradient_check.  The file formats themselves are tested in test_io.py."""
import json

import numpy as np
import pytest

import cbackprop
from cbackprop import reference

CLASSES = [cbackprop.Network, reference.Network]
CONFIGS = [
    dict(sizes=[6, 5, 3]),
    dict(sizes=[6, 5, 4, 3], activations=["tanh", "relu", "softmax"], cost="log-likelihood"),
    dict(sizes=[6, 3], activations="sigmoid", cost="cross-entropy"),
    dict(sizes=[6, 7, 3], activations=["identity", "softmax"], cost="quadratic"),
]


def same_params(a, b):
    return all(np.array_equal(p, q) for p, q in zip(a.weights + a.biases, b.weights + b.biases))


@pytest.mark.parametrize("saver", CLASSES)
@pytest.mark.parametrize("loader", CLASSES)
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_load_round_trip(tmp_path, saver, loader, config, dtype):
    net = saver(**{**config, "sizes": config["sizes"]}, dtype=dtype, seed=3)
    rng = np.random.default_rng(0)
    X = rng.random((4, config["sizes"][0]))
    net.update_mini_batch(X, rng.random((4, config["sizes"][-1])), 0.1)   # not the initial draw
    path = tmp_path / "model"          # no suffix: used exactly as given
    net.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    back = loader.load(path)
    assert type(back) is loader
    assert back.sizes == net.sizes and back.activations == net.activations
    assert back.cost_name == net.cost_name and back.dtype == net.dtype
    assert same_params(back, net)
    np.testing.assert_array_equal(back.feedforward(X), net.feedforward(X)) if loader is saver else None
    other = np.float64 if dtype == np.float32 else np.float32
    converted = loader.load(path, dtype=other)
    assert converted.dtype == other
    np.testing.assert_array_equal(converted.weights[0], net.weights[0].astype(other))


def test_load_is_top_level_and_refuses_corrupt_files(tmp_path):
    net = cbackprop.Network([4, 3, 2], seed=0)
    path = tmp_path / "n.npz"
    net.save(path)
    assert same_params(cbackprop.load(path), net)
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.npz"):
        cbackprop.load(tmp_path / "cut.npz")
    # another network's file keeps its own sizes: loading never mixes shapes
    other = cbackprop.Network([4, 5, 2], seed=0)
    other.save(path)
    assert cbackprop.load(path).sizes == (4, 5, 2)


def test_saving_replaces_atomically(tmp_path, monkeypatch):
    path = tmp_path / "n.npz"
    cbackprop.Network([4, 3, 2], seed=0).save(path)
    before = path.read_bytes()
    net = cbackprop.Network([4, 3, 2], seed=1)

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        net.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["n.npz"]


def network2_feedforward(data, x):
    """network2.py's feedforward on its own JSON, written out independently."""
    a = x.reshape(-1, 1)
    for w, b in zip(data["weights"], data["biases"]):
        a = 1.0 / (1.0 + np.exp(-(np.array(w) @ a + np.array(b))))
    return a.ravel()


@pytest.mark.parametrize("cls", CLASSES)
def test_network2_json_both_ways(tmp_path, cls):
    # a file laid out exactly as network2.py's Network.save writes it
    rng = np.random.default_rng(5)
    sizes = [4, 3, 2]
    data = {"sizes": sizes,
            "weights": [rng.standard_normal((3, 4)).tolist(), rng.standard_normal((2, 3)).tolist()],
            "biases": [rng.standard_normal((3, 1)).tolist(), rng.standard_normal((2, 1)).tolist()],
            "cost": "CrossEntropyCost"}
    path = tmp_path / "net2.json"
    path.write_text(json.dumps(data))
    net = cls.load_network2(path)
    assert net.sizes == (4, 3, 2) and net.cost_name == "cross-entropy" and net.dtype == np.float64
    x = rng.random(4)
    np.testing.assert_allclose(net.feedforward(x), network2_feedforward(data, x), rtol=1e-14)
    # and back: our file is network2's layout, with the same numbers
    out = tmp_path / "out.json"
    net.save_network2(out)
    again = json.loads(out.read_text())
    assert again == data
    with pytest.raises(ValueError, match="must be .sigmoid. to save in network2.py.s JSON format"):
        cls([4, 3, 2], activations=["relu", "sigmoid"]).save_network2(out)
    assert json.loads(out.read_text()) == data            # the refused save left it alone


# ---- gradient_check ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("config", CONFIGS)
def test_gradient_check_passes_for_backprop(cls, config):
    net = cls(**config, seed=1)
    rng = np.random.default_rng(2)
    X = rng.random((5, config["sizes"][0]))
    Y = np.eye(config["sizes"][-1])[rng.integers(0, config["sizes"][-1], 5)]
    r = cbackprop.gradient_check(net, X, Y)
    assert [d["layer"] for d in r["layers"]] == list(range(1, len(config["sizes"])))
    assert r["parameters"] == sum(n * (m + 1) for m, n in zip(config["sizes"][:-1], config["sizes"][1:]))
    assert r["cost_evaluations"] == 2 * r["parameters"]
    # measured on these cases: at most 3.3e-10 (central differences, eps 1e-5, float64)
    assert r["max_error"] < 1e-7, r


def test_gradient_check_catches_a_wrong_gradient():
    net = cbackprop.Network([5, 4, 3], seed=0)
    rng = np.random.default_rng(0)
    X, Y = rng.random((3, 5)), rng.random((3, 3))
    good = cbackprop.gradient_check(net, X, Y)["max_error"]
    real = net.backprop

    def off_by_a_bit(X, Y):
        nb, nw = real(X, Y)
        nw[0] = nw[0] * 1.001           # 0.1 % wrong in one layer
        return nb, nw
    net.backprop = off_by_a_bit
    r = cbackprop.gradient_check(net, X, Y)
    assert r["layers"][0]["weights_error"] > 1e-4 > 100 * good
    assert r["layers"][1]["weights_error"] < 1e-7              # the other layer is still right


def test_gradient_check_float32_network_and_sampling():
    net = cbackprop.Network([30, 20, 10], dtype=np.float32, seed=0)
    rng = np.random.default_rng(0)
    X, Y = rng.random((4, 30)), np.eye(10)[[1, 2, 3, 4]]
    r = cbackprop.gradient_check(net, X, Y, max_per_layer=7, seed=1)
    assert [d["checked"] for d in r["layers"]] == [14, 14]      # 7 weights + 7 biases (<= 10 + 10)
    assert r["cost_evaluations"] == 56
    # float32 backprop against float64 finite differences: float32 rounding, measured 1.2e-7
    assert r["max_error"] < 1e-5, r


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(eps=0), ValueError, "eps must be a finite number in \\(0, 1\\), got 0.0"),
    (dict(eps=float("nan")), ValueError, "eps must be"),
    (dict(eps="1e-5"), TypeError, "eps must be a real number"),
    (dict(max_per_layer=0), ValueError, "max_per_layer must be an integer >= 1"),
])
def test_gradient_check_validation(kwargs, exc, match):
    net = cbackprop.Network([3, 2], seed=0)
    with pytest.raises(exc, match=match):
        cbackprop.gradient_check(net, np.ones((1, 3)), np.ones((1, 2)), **kwargs)
    with pytest.raises(TypeError, match="net must be a cbackprop.Network"):
        cbackprop.gradient_check(object(), np.ones((1, 3)), np.ones((1, 2)))


def test_sgd_callback_sees_every_record():
    net = cbackprop.Network([4, 3, 2], seed=0)
    rng = np.random.default_rng(0)
    X, Y = rng.random((20, 4)), rng.random((20, 2))
    seen = []
    history = net.sgd(X, Y, 3, 5, 1.0, callback=seen.append)
    assert seen == history and [r["epoch"] for r in seen] == [1, 2, 3]
    with pytest.raises(TypeError, match="callback must be callable"):
        net.sgd(X, Y, 1, 5, 1.0, callback=3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_files_from_the_unversioned_save_still_load(tmp_path, dtype):
    """`cbackprop train --save` once wrote only sizes, weights_<i> and biases_<i> (sigmoid,
    quadratic): such files load as that network, in their own dtype."""
    net = cbackprop.Network([6, 5, 3], dtype=dtype, seed=2)
    path = tmp_path / "old.npz"
    np.savez(path, sizes=np.array(net.sizes, dtype=np.int64),
             **{f"weights_{i}": w for i, w in enumerate(net.weights)},
             **{f"biases_{i}": b for i, b in enumerate(net.biases)})
    back = cbackprop.load(path)
    assert back.dtype == dtype and back.activations == ("sigmoid", "sigmoid") and back.cost_name == "quadratic"
    assert same_params(back, net)
    np.savez(path, sizes=np.array([6, 5, 3]), weights_0=net.weights[0], biases_0=net.biases[0])
    with pytest.raises(ValueError, match="missing member"):
        cbackprop.load(path)


def test_accumulating_from_a_view_of_the_gradient_buffer_is_safe():
    """X may be a view of the buffer accumulate_gradient writes: it is copied first (found in
    review: only the parameter buffer was checked for overlap)."""
    net = cbackprop.Network([4, 3, 2], seed=0)
    ref = reference.Network([4, 3, 2], seed=0)
    rng = np.random.default_rng(0)
    X0, Y = rng.random((2, 4)), rng.random((2, 2))
    for n in (net, ref):
        n.accumulate_gradient(X0, Y)
    buf = net.gradient_buffer
    X = buf[:8].reshape(2, 4)                  # rows that alias the buffer being written
    Xcopy = X.copy()
    net.accumulate_gradient(X, Y)
    ref.accumulate_gradient(Xcopy, Y)
    net.apply_gradient(0.5)
    ref.apply_gradient(0.5)
    for a, d in zip(net.weights + net.biases, ref.weights + ref.biases):
        np.testing.assert_allclose(a, d, rtol=1e-12, atol=1e-15)



def test_a_batch_that_views_the_momentum_velocity_is_copied():
    """A momentum step writes the velocity while BP4 still reads the batch: rows that view
    the velocity are copied first, as rows that view the parameters or the accumulated
    gradient are (found in review: only those two were checked)."""
    rng = np.random.default_rng(1)
    X0, Y = rng.random((3, 40)), rng.random((3, 2))
    net = cbackprop.Network([40, 30, 2], seed=0)
    ref = reference.Network([40, 30, 2], seed=0)
    for n in (net, ref):
        n.update_mini_batch(X0, Y, 0.5, mu=0.5)
    X = net._engine.velocity[:120].reshape(3, 40)   # w^1's velocity, which the step updates
    Xcopy = X.copy()
    net.update_mini_batch(X, Y, 0.5, mu=0.5)
    ref.update_mini_batch(Xcopy, Y, 0.5, mu=0.5)
    for a, d in zip(net.weights + net.biases, ref.weights + ref.biases):
        np.testing.assert_allclose(a, d, rtol=1e-12, atol=1e-15)
