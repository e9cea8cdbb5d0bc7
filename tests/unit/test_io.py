"""Saving and loading networks (cbackprop._io), tested on plain values, without Network objects.

.npz: round trips bit for bit in both dtypes; a failed save leaves an existing file as it
was; truncated, corrupted, tampered, foreign and malicious files (object arrays whose
unpickling would run code) are refused with a ValueError naming the file and the rule.
network2.py JSON: exact float64 round trips, network2's layout both ways, and refusal of
malformed files.
"""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from cbackprop import _io

DTYPES = [pytest.param(np.float64, id="f64"), pytest.param(np.float32, id="f32")]


def make_params(sizes, dtype=np.float64, seed=0):
    """(weights, biases) for sizes, with values that use every bit of the mantissa."""
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal((n, n_prev)).astype(dtype) for n_prev, n in zip(sizes[:-1], sizes[1:])]
    biases = [rng.standard_normal(n).astype(dtype) for n in sizes[1:]]
    return weights, biases


def network(sizes=(3, 4, 2), dtype=np.float64, activations=None, cost="quadratic", seed=0):
    """The keyword arguments of save_npz for a small network."""
    weights, biases = make_params(sizes, dtype, seed)
    if activations is None:
        activations = ("sigmoid",) * (len(sizes) - 1)
    return dict(sizes=tuple(sizes), activations=tuple(activations), cost=cost, dtype=np.dtype(dtype),
                weights=weights, biases=biases)


def assert_same_network(loaded, net):
    assert loaded["sizes"] == net["sizes"]
    assert loaded["activations"] == net["activations"]
    assert loaded["cost"] == net["cost"]
    assert loaded["dtype"] == net["dtype"]
    for got, want in zip(loaded["weights"] + loaded["biases"], net["weights"] + net["biases"], strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes()   # bitwise


def members(path):
    """The arrays of an .npz as a dict (to be altered and written back with np.savez)."""
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def write_npz(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


@pytest.fixture
def saved(tmp_path):
    """(path, net): a float64 [3, 4, 2] network saved with save_npz."""
    net = network(activations=("tanh", "softmax"), cost="log-likelihood")
    path = tmp_path / "net.npz"
    _io.save_npz(path, **net)
    return path, net


# ---- .npz: round trips and layout ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes, activations, cost", [
    ((3, 4, 2), ("sigmoid", "sigmoid"), "quadratic"),
    ((5, 1), ("softmax",), "log-likelihood"),
    ((6, 7, 5, 3), ("relu", "identity", "sigmoid"), "cross-entropy"),
    ((4, 3, 2), ("tanh", "identity"), "quadratic"),
])
def test_npz_round_trip_is_bitwise(tmp_path, dtype, sizes, activations, cost):
    net = network(sizes, dtype, activations, cost)
    net["weights"][0][0, 0] = -0.0
    net["biases"][-1][0] = np.finfo(dtype).smallest_subnormal
    _io.save_npz(str(tmp_path / "net.npz"), **net)
    loaded = _io.load_npz(tmp_path / "net.npz")
    assert_same_network(loaded, net)
    assert np.signbit(loaded["weights"][0][0, 0])
    assert isinstance(loaded["sizes"], tuple) and all(type(n) is int for n in loaded["sizes"])
    assert all(a.flags.c_contiguous and a.flags.writeable for a in loaded["weights"] + loaded["biases"])
    assert os.listdir(tmp_path) == ["net.npz"]   # no temporary file left


@pytest.mark.parametrize("name", ["net.bin", "net", "net.npz.partial"])
def test_npz_path_is_used_exactly_as_given(tmp_path, name):
    net = network()
    _io.save_npz(pathlib.Path(tmp_path / name), **net)
    assert os.listdir(tmp_path) == [name]
    assert_same_network(_io.load_npz(str(tmp_path / name)), net)


def test_npz_members_are_plain_arrays(saved):
    path, net = saved
    arrays = members(path)
    assert sorted(arrays) == sorted(["format", "version", "sizes", "activations", "cost", "dtype", "checksum",
                                     "weights_0", "weights_1", "biases_0", "biases_1"])
    assert not any(a.dtype.hasobject for a in arrays.values())
    assert arrays["format"].shape == () and str(arrays["format"]) == "cbackprop-network"
    assert arrays["version"].dtype == np.int64 and int(arrays["version"]) == 1
    assert arrays["sizes"].dtype == np.int64 and arrays["sizes"].tolist() == [3, 4, 2]
    assert arrays["activations"].dtype.kind == "U" and arrays["activations"].tolist() == ["tanh", "softmax"]
    assert arrays["cost"].shape == () and str(arrays["cost"]) == "log-likelihood"
    assert str(arrays["dtype"]) == "float64"
    assert str(arrays["checksum"]) == _io.checksum(**net)
    assert str(arrays["checksum"]).startswith("sha256:") and len(str(arrays["checksum"])) == 7 + 64
    assert arrays["weights_1"].dtype == np.float64 and arrays["weights_1"].shape == (2, 4)


def test_save_npz_converts_parameters_to_dtype(tmp_path):
    net = network(dtype=np.float32)
    given = dict(net, weights=[w.astype(np.float64) for w in net["weights"]],
                 biases=[b.tolist() for b in net["biases"]])
    _io.save_npz(tmp_path / "net.npz", **given)
    assert_same_network(_io.load_npz(tmp_path / "net.npz"), net)


def test_io_does_not_import_the_compiled_module(tmp_path):
    code = ("import sys; sys.modules['cbackprop._core'] = None; sys.modules['cbackprop.network'] = None; "
            "import numpy as np; from cbackprop import _io; p = sys.argv[1]; "
            "_io.save_npz(p + '.npz', sizes=[2, 1], activations=['sigmoid'], cost='quadratic', dtype='float32', "
            "weights=[np.ones((1, 2))], biases=[np.ones(1)]); d = _io.load_npz(p + '.npz'); "
            "_io.save_network2_json(p + '.json', sizes=d['sizes'], cost='quadratic', weights=d['weights'], "
            "biases=d['biases']); _io.load_network2_json(p + '.json'); print('ok')")
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code, str(tmp_path / "net")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ok\n"


# ---- saving atomically ----------------------------------------------------------------------
@pytest.mark.parametrize("exc", [OSError("No space left on device"), KeyboardInterrupt("interrupted")])
def test_failed_npz_save_leaves_the_old_file(tmp_path, monkeypatch, exc):
    path = tmp_path / "net.npz"
    _io.save_npz(path, **network(seed=1))
    before = path.read_bytes()

    def savez_then_fail(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise exc

    monkeypatch.setattr(np, "savez", savez_then_fail)
    with pytest.raises(type(exc), match=str(exc)):
        _io.save_npz(path, **network(seed=2))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["net.npz"]


def test_failed_json_save_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "net.json"
    net = network(seed=1)
    _io.save_network2_json(path, sizes=net["sizes"], cost="quadratic", weights=net["weights"], biases=net["biases"])
    before = path.read_bytes()

    def dump_then_fail(obj, fp, **kw):
        fp.write('{"sizes": [3, 4, 2], "weights": [[[0.5')
        raise OSError("No space left on device")

    monkeypatch.setattr(json, "dump", dump_then_fail)
    with pytest.raises(OSError, match="No space left"):
        _io.save_network2_json(path, sizes=net["sizes"], cost="cross-entropy", weights=net["weights"],
                               biases=net["biases"])
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["net.json"]


@pytest.mark.parametrize("change, exc, match", [
    (dict(sizes=[3]), ValueError, r"sizes must list at least 2 layers"),
    (dict(sizes=[3, 4, 2.0]), TypeError, r"sizes\[2\] must be an integer"),
    (dict(activations=("sigmoid",)), ValueError,
     r"activations must name one activation per layer after the input \(2 for sizes with 3 entries\), got 1"),
    (dict(activations=42), TypeError, r"activations must be a name or a list of names .*got 42"),
    (dict(activations=("swish", "sigmoid")), ValueError, r"activations\[0\] must be one of \('sigmoid', .*got 'swish'"),
    (dict(activations=("softmax", "sigmoid")), ValueError,
     r"activations\[0\] is 'softmax', which is only allowed for the output layer"),
    (dict(cost="hinge"), ValueError,
     r"cost must be one of \('quadratic', 'cross-entropy', 'log-likelihood'\), got 'hinge'"),
    (dict(cost=None), TypeError, r"cost must be a name from .*got None"),
    (dict(cost="log-likelihood"), ValueError, r"cost='log-likelihood' needs a softmax output layer"),
    (dict(dtype=np.float16), ValueError, r"dtype must be float32 or float64, got float16"),
    (dict(weights=[np.zeros((4, 3))]), ValueError, r"weights must be a list of 2 arrays .*got 1"),
    (dict(weights=[np.zeros((4, 3)), np.zeros((4, 2))]), ValueError,
     r"weights\[1\] must have shape \(2, 4\) to match sizes \[3, 4, 2\], got shape \(4, 2\)"),
    (dict(biases=[np.zeros(4), np.zeros((2, 1))]), ValueError,
     r"biases\[1\] must have shape \(2,\) .*got shape \(2, 1\)"),
    (dict(biases=[np.zeros(4), np.array([0.0, np.nan])]), ValueError,
     r"biases\[1\] must hold only finite float64 values, got nan at index \(1,\)"),
    (dict(biases=[np.zeros(4), np.array(["a", "b"])]), TypeError,
     r"biases\[1\] must hold real numbers, got an array of dtype <U1"),
    (dict(dtype=np.float32, biases=[np.zeros(4), np.array([1e300, 0.0])]), ValueError,
     r"biases\[1\] must hold only finite float32 values, got 1e\+300 at index \(0,\)"),
])
def test_save_npz_refuses_bad_arguments(tmp_path, change, exc, match):
    with pytest.raises(exc, match=match):
        _io.save_npz(tmp_path / "net.npz", **dict(network(), **change))
    assert os.listdir(tmp_path) == []


# ---- loading damaged files ------------------------------------------------------------------
def test_truncated_npz_is_refused(saved, tmp_path):
    path, _ = saved
    raw = path.read_bytes()
    cuts = sorted(set(range(0, len(raw), 17)) | set(range(len(raw) - 40, len(raw))))
    bad = tmp_path / "cut.npz"
    for cut in cuts:
        bad.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match=r"cut\.npz'.* not a readable \.npz archive") as info:
            _io.load_npz(bad)
        if cut == 0:
            assert "the file is empty" in str(info.value)


def test_flipped_byte_in_a_parameter_is_refused(saved, tmp_path):
    path, net = saved
    raw = path.read_bytes()
    start = raw.find(net["weights"][1].tobytes())
    assert start > 0 and raw.count(net["weights"][1].tobytes()) == 1
    bad = tmp_path / "flipped.npz"
    for i in range(start, start + net["weights"][1].nbytes):
        for mask in (0x01, 0x80):
            damaged = bytearray(raw)
            damaged[i] ^= mask
            bad.write_bytes(bytes(damaged))
            with pytest.raises(ValueError, match=r"flipped\.npz'.*(Bad CRC-32 for file 'weights_1\.npy'|"
                                                 r"checksum mismatch)"):
                _io.load_npz(bad)


@pytest.mark.slow
def test_any_flipped_byte_is_refused_or_harmless(saved, tmp_path):
    """Some bytes of a zip are not covered by its CRCs (timestamps, version fields): flipping
    them may leave a loadable file, which must then hold exactly the saved network."""
    path, net = saved
    raw = path.read_bytes()
    bad = tmp_path / "flipped.npz"
    refused = 0
    for i in range(len(raw)):
        damaged = bytearray(raw)
        damaged[i] ^= 0xFF
        bad.write_bytes(bytes(damaged))
        try:
            loaded = _io.load_npz(bad)
        except ValueError as exc:
            assert "flipped.npz" in str(exc)
            refused += 1
        else:
            assert_same_network(loaded, net)
    assert refused > 0.7 * len(raw)   # 79% with numpy 2.4


@pytest.mark.parametrize("change", [
    pytest.param(lambda a: a["weights_0"].__setitem__((1, 2), np.nextafter(a["weights_0"][1, 2], 9.0)), id="weight"),
    pytest.param(lambda a: a["biases_1"].__setitem__(0, -a["biases_1"][0]), id="bias-sign"),
    pytest.param(lambda a: a.__setitem__("cost", np.array("quadratic")), id="cost"),
    pytest.param(lambda a: a.__setitem__("activations", np.array(["sigmoid", "softmax"])), id="activations"),
])
def test_npz_checksum_detects_a_modified_network(saved, tmp_path, change):
    """A file rewritten with a valid zip but altered contents (the zip CRCs match) is caught by the checksum."""
    path, _ = saved
    arrays = members(path)
    change(arrays)
    with pytest.raises(ValueError, match=r"tampered\.npz': checksum mismatch: the file records 'sha256:[0-9a-f]{64}' "
                                         r"but its contents hash to 'sha256:[0-9a-f]{64}'"):
        _io.load_npz(write_npz(tmp_path / "tampered.npz", arrays))


def test_npz_non_finite_parameter_is_refused(saved, tmp_path):
    path, net = saved
    arrays = members(path)
    arrays["biases_1"][1] = np.inf
    net["biases"][1] = arrays["biases_1"]
    arrays["checksum"] = np.array(_io.checksum(**net))   # consistent checksum: the finiteness check speaks
    with pytest.raises(ValueError, match=r"inf\.npz': biases_1 must hold only finite float64 values, got inf at index \(1,\)"):
        _io.load_npz(write_npz(tmp_path / "inf.npz", arrays))


@pytest.mark.parametrize("version, match", [
    (2, r"file format version 2 is newer than this cbackprop supports \(supported versions: 1\); "
        r"a newer cbackprop is needed"),
    (0, r"file format version 0 is not supported \(supported versions: 1\)"),
])
def test_npz_unsupported_version_is_refused(saved, tmp_path, version, match):
    path, _ = saved
    arrays = members(path)
    arrays["version"] = np.array(version, dtype=np.int64)
    with pytest.raises(ValueError, match=r"v\.npz': " + match):
        _io.load_npz(write_npz(tmp_path / "v.npz", arrays))


@pytest.mark.parametrize("key", ["sizes", "activations", "cost", "dtype", "checksum", "weights_1", "biases_0"])
def test_npz_missing_member_is_refused(saved, tmp_path, key):
    path, _ = saved
    arrays = members(path)
    del arrays[key]
    with pytest.raises(ValueError, match=rf"missing\.npz': missing member\(s\) '{key}'"):
        _io.load_npz(write_npz(tmp_path / "missing.npz", arrays))


def test_npz_unexpected_member_is_refused(saved, tmp_path):
    path, _ = saved
    arrays = members(path)
    arrays["weights_2"] = np.zeros((1, 2))
    with pytest.raises(ValueError, match=r"unexpected member\(s\) 'weights_2' \(sizes \[3, 4, 2\] has 2 layers\)"):
        _io.load_npz(write_npz(tmp_path / "extra.npz", arrays))


@pytest.mark.parametrize("key, value, match", [
    ("weights_1", np.zeros((4, 2)),
     r"weights_1 must have shape \(2, 4\) to match sizes \[3, 4, 2\], got shape \(4, 2\)"),
    ("biases_0", np.zeros((4, 1)), r"biases_0 must have shape \(4,\) to match sizes \[3, 4, 2\], got shape \(4, 1\)"),
    ("sizes", np.array([3, 5, 2]),
     r"weights_0 must have shape \(5, 3\) to match sizes \[3, 5, 2\], got shape \(4, 3\)"),
    ("sizes", np.array([3, 4, 2, 1]), r"activations must name one activation per layer after the input \(3 for sizes "
                                      r"with 4 entries\), got 2"),
    ("sizes", np.array([3, 0, 2]), r"sizes\[1\] must be an integer >= 1, got 0"),
    ("sizes", np.array([3.0, 4.0, 2.0]), r"sizes must be a 1-D integer array, got dtype float64"),
    ("activations", np.array(["tanh", "swish"]), r"activations\[1\] must be one of \('sigmoid', .*got 'swish'"),
    ("activations", np.array(["softmax", "softmax"]),
     r"activations\[0\] is 'softmax', which is only allowed for the output"),
    ("activations", np.array(["tanh", "sigmoid"]), r"cost='log-likelihood' needs a softmax output layer"),
    ("cost", np.array("hinge"), r"cost must be one of \('quadratic', 'cross-entropy', 'log-likelihood'\), got 'hinge'"),
    ("cost", np.array("cross-entropy"), r"cost='cross-entropy' needs a sigmoid output layer"),
    ("cost", np.array(["quadratic"]), r"cost must be a 0-d unicode string, got dtype <U9 and shape \(1,\)"),
    ("dtype", np.array("float16"), r"dtype must be 'float32' or 'float64', got 'float16'"),
    ("biases_1", np.zeros(2, dtype=np.float32),
     r"biases_1 must hold float64 values \(the file's dtype\), got dtype float32"),
    ("format", np.array("mnist-data"),
     r"not a cbackprop network file: format is 'mnist-data', expected 'cbackprop-network'"),
    ("version", np.array("1"), r"version must be a 0-d integer, got dtype <U1"),
])
def test_npz_inconsistent_member_is_refused(saved, tmp_path, key, value, match):
    path, _ = saved
    arrays = members(path)
    arrays[key] = value
    with pytest.raises(ValueError, match=r"bad\.npz': " + match):
        _io.load_npz(write_npz(tmp_path / "bad.npz", arrays))


def test_npz_header_declaring_more_data_than_the_member_holds_is_refused(saved, tmp_path):
    """A damaged .npy header must not make load_npz allocate what it declares (here 8 TB)."""
    import io
    import zipfile

    path, _ = saved
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": "<i8", "fortran_order": False, "shape": (10**12,)})
    member.write(np.array([3, 4, 2], dtype="<i8").tobytes())
    bad = tmp_path / "huge.npz"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, member.getvalue() if name == "sizes.npy" else src.read(name))
    with pytest.raises(ValueError, match=r"huge\.npz': member sizes declares shape \(1000000000000,\) of int64, "
                                         r"more data than its \d+ bytes"):
        _io.load_npz(bad)


def test_npz_of_another_kind_is_refused(tmp_path):
    # what `cbackprop train --save` wrote before this format existed (parameters only) loads
    # as a sigmoid/quadratic network (test_persistence.py); anything else without a format is
    # refused
    other = write_npz(tmp_path / "other.npz", {"sizes": np.array([2, 1]), "weights_0": np.zeros((1, 2)),
                                               "labels": np.zeros(1)})
    with pytest.raises(ValueError, match=r"other\.npz': not a cbackprop network file: it has no 'format' member "
                                         r"\(members: 'labels', 'sizes', 'weights_0'\)"):
        _io.load_npz(other)
    legacy = write_npz(tmp_path / "legacy.npz", {"sizes": np.array([2, 1]), "weights_0": np.zeros((1, 2)),
                                                 "biases_0": np.zeros(1)})
    assert _io.load_npz(legacy)["activations"] == ("sigmoid",)


@pytest.mark.parametrize("content, match", [
    (b"", r"not a readable \.npz archive: the file is empty"),
    (b"sizes,weights\n", r"not a readable \.npz archive: it starts with b'size', not with a zip header"),
    (b"\x93NUMPY", r"not a readable \.npz archive: it starts with b'\\x93NUM', not with a zip header"),
])
def test_npz_not_a_zip_is_refused(tmp_path, content, match):
    path = tmp_path / "net.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"net\.npz': " + match):
        _io.load_npz(path)


def test_npz_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        _io.load_npz(tmp_path / "nothing.npz")


class Payload:
    """Unpickling this creates the file `marker`: proof that pickled data was executed."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


@pytest.mark.parametrize("key", ["format", "sizes", "weights_0"])
def test_npz_with_object_array_is_refused_without_unpickling(saved, tmp_path, key):
    path, _ = saved
    marker = tmp_path / "pwned"
    arrays = members(path)
    arrays[key] = np.array([Payload(marker)], dtype=object)
    evil = write_npz(tmp_path / "evil.npz", arrays)
    with np.load(evil, allow_pickle=True) as npz:    # the payload is live ...
        npz[key]
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ValueError, match=rf"evil\.npz': member {key} holds Python objects \(dtype object\); "
                                         rf"loading it would unpickle data, which is refused"):
        _io.load_npz(evil)                            # ... but never run by load_npz
    assert not marker.exists()


def test_pickle_file_is_refused_without_unpickling(tmp_path):
    import pickle

    marker = tmp_path / "pwned"
    path = tmp_path / "net.npz"
    path.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ValueError, match=r"not a readable \.npz archive: it starts with b'\\x80"):
        _io.load_npz(path)
    assert not marker.exists()


# ---- network2.py JSON ---------------------------------------------------------------------------
NETWORK2_LITERAL = {
    "sizes": [2, 3, 1],
    "weights": [[[0.1, -0.2], [0.30000000000000004, 4], [-5e-324, 1.7976931348623157e308]],
                [[0.5, -0.25, 1e-300]]],
    "biases": [[[0.5], [-0.5], [0]], [[0.125]]],
    "cost": "CrossEntropyCost",
}


def json_net(dtype=np.float64, sizes=(3, 4, 2)):
    net = network(sizes, dtype)
    return dict(sizes=net["sizes"], cost="cross-entropy", weights=net["weights"], biases=net["biases"])


def test_network2_json_from_a_literal_network2_file(tmp_path):
    path = tmp_path / "network2.json"
    with open(path, "w") as f:      # as network2.py's Network.save writes it
        json.dump(NETWORK2_LITERAL, f)
    loaded = _io.load_network2_json(path)
    assert loaded["sizes"] == (2, 3, 1)
    assert loaded["cost"] == "cross-entropy"
    assert loaded["activations"] == ("sigmoid", "sigmoid")
    assert [w.shape for w in loaded["weights"]] == [(3, 2), (1, 3)]
    assert [b.shape for b in loaded["biases"]] == [(3,), (1,)]
    assert all(a.dtype == np.float64 for a in loaded["weights"] + loaded["biases"])
    assert loaded["weights"][0].tolist() == NETWORK2_LITERAL["weights"][0]
    assert loaded["weights"][1].tolist() == NETWORK2_LITERAL["weights"][1]
    assert loaded["biases"][0].tolist() == [0.5, -0.5, 0.0]
    assert loaded["biases"][1].tolist() == [0.125]


def test_network2_json_accepts_flat_biases_and_quadratic_cost(tmp_path):
    path = tmp_path / "flat.json"
    path.write_text(json.dumps(dict(NETWORK2_LITERAL, biases=[[0.5, -0.5, 0], [0.125]], cost="QuadraticCost")))
    loaded = _io.load_network2_json(str(path))
    assert loaded["cost"] == "quadratic"
    assert loaded["biases"][0].tolist() == [0.5, -0.5, 0.0] and loaded["biases"][0].shape == (3,)


def test_network2_json_layout_is_network2s(tmp_path):
    path = tmp_path / "net.json"
    net = json_net()
    _io.save_network2_json(path, **net)
    data = json.loads(path.read_text())
    assert list(data) == ["sizes", "weights", "biases", "cost"]
    assert data["sizes"] == [3, 4, 2] and data["cost"] == "CrossEntropyCost"
    # what network2.load does with it
    assert [np.array(w).shape for w in data["weights"]] == [(4, 3), (2, 4)]
    assert [np.array(b).shape for b in data["biases"]] == [(4, 1), (2, 1)]
    assert repr(float(net["weights"][0][0, 0])) in path.read_text()   # shortest round-trip repr
    assert os.listdir(tmp_path) == ["net.json"]


def test_network2_json_float64_round_trip_is_exact(tmp_path):
    net = json_net()
    tricky = [-0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.1, 1 / 3, -2 / 3, 1e-300, 123456789.0]
    net["weights"][0].flat[:9] = tricky
    path = tmp_path / "net.json"
    _io.save_network2_json(path, **net)
    loaded = _io.load_network2_json(path)
    assert loaded["sizes"] == net["sizes"] and loaded["cost"] == "cross-entropy"
    for got, want in zip(loaded["weights"] + loaded["biases"], net["weights"] + net["biases"], strict=True):
        assert got.dtype == np.float64 and got.tobytes() == want.tobytes()
    assert np.signbit(loaded["weights"][0].flat[0])


def test_network2_json_float32_parameters_widen_exactly(tmp_path):
    net = json_net(np.float32)
    _io.save_network2_json(tmp_path / "net.json", **net)
    loaded = _io.load_network2_json(tmp_path / "net.json")
    for got, want in zip(loaded["weights"] + loaded["biases"], net["weights"] + net["biases"], strict=True):
        assert got.dtype == np.float64 and np.array_equal(got, want.astype(np.float64))
        assert np.array_equal(got.astype(np.float32), want)


@pytest.mark.parametrize("change, exc, match", [
    (dict(cost="log-likelihood"), ValueError,
     r"cost 'log-likelihood' cannot be saved in network2\.py's JSON format: network2 knows only "
     r"'quadratic' \(QuadraticCost\) and 'cross-entropy' \(CrossEntropyCost\)"),
    (dict(cost="CrossEntropyCost"), ValueError, r"cost must be one of \('quadratic', .*got 'CrossEntropyCost'"),
    (dict(activations=("sigmoid", "softmax")), ValueError,
     r"activations\[1\] must be 'sigmoid' to save in network2\.py's JSON format .*got 'softmax'"),
    (dict(weights=[np.zeros((4, 3)), np.zeros((2, 3))]), ValueError,
     r"weights\[1\] must have shape \(2, 4\) to match sizes \[3, 4, 2\], got shape \(2, 3\)"),
    (dict(biases=[np.zeros(4), np.array([np.nan, 0.0])]), ValueError,
     r"biases\[1\] must hold only finite float64 values, got nan"),
])
def test_save_network2_json_refuses_bad_arguments(tmp_path, change, exc, match):
    with pytest.raises(exc, match=match):
        _io.save_network2_json(tmp_path / "net.json", **dict(json_net(), **change))
    assert os.listdir(tmp_path) == []


def test_save_network2_json_accepts_all_sigmoid_activations(tmp_path):
    _io.save_network2_json(tmp_path / "net.json", activations=["sigmoid", "sigmoid"], **json_net())
    assert _io.load_network2_json(tmp_path / "net.json")["activations"] == ("sigmoid", "sigmoid")


def literal(**change):
    return json.dumps(dict(NETWORK2_LITERAL, **change))


def drop(key):
    return json.dumps({k: v for k, v in NETWORK2_LITERAL.items() if k != key})


W0 = NETWORK2_LITERAL["weights"][0]


@pytest.mark.parametrize("text, match", [
    ('{"sizes": [2, 1], "weights": ', r"is not valid JSON: Expecting value at line 1 column 30 \(char 29\)"),
    ('{"sizes": [2, 1],\n "cost": QuadraticCost}', r"is not valid JSON: Expecting value at line 2 column 10"),
    ("", r"is not valid JSON: Expecting value at line 1 column 1 \(char 0\)"),
    ("[1, 2]",
     r"the JSON must be an object with keys 'sizes', 'weights', 'biases', 'cost' .*got an array of 2 entries"),
    (drop("cost"), r"missing key\(s\) 'cost'"),
    (drop("biases"), r"missing key\(s\) 'biases'"),
    (literal(cost="LogLikelihoodCost"), r"cost must be 'QuadraticCost' or 'CrossEntropyCost' \(the costs network2\.py "
                                        r"defines\), got 'LogLikelihoodCost'"),
    (literal(cost="cross-entropy"), r"cost must be 'QuadraticCost' or 'CrossEntropyCost' .*got 'cross-entropy'"),
    (literal(sizes=[2]), r"sizes must list at least 2 layers \(input and output\), got \[2\]"),
    (literal(sizes=[2, 0, 1]), r"sizes\[1\] must be an integer >= 1, got 0"),
    (literal(sizes=[2, 3.0, 1]), r"sizes\[1\] must be an integer, got 3\.0"),
    (literal(sizes=[2, True, 1]), r"sizes\[1\] must be an integer, got True"),
    (literal(sizes="2 3 1"), r"sizes must be a list of layer sizes such as \[784, 30, 10\], got '2 3 1'"),
    (literal(sizes=[2, 4, 1]), r"weights\[0\] must be a list of 4 rows of 2 numbers \(shape \(4, 2\) to match sizes "
                               r"\[2, 4, 1\]\), got an array of 3 entries"),
    (literal(weights=[W0]),
     r"weights must be a list of 2 entries \(one per layer after the input for sizes \[2, 3, 1\]\), "
                            r"got an array of 1 entries"),
    (literal(weights=[W0, [[0.5, -0.25]]]),
     r"weights\[1\]\[0\] must be a list of 3 numbers .*got an array of 2 entries"),
    (literal(weights=[W0, [0.5, -0.25, 1.0]]),
     r"weights\[1\] must be a list of 1 rows of 3 numbers .*got an array of 3"),
    (literal(weights=[W0, [[0.5, "0.25", 1.0]]]), r"weights\[1\]\[0\]\[1\] must be a number, got '0\.25'"),
    (literal(weights=[W0, [[0.5, True, 1.0]]]), r"weights\[1\]\[0\]\[1\] must be a number, got True"),
    (literal(weights=[W0, [[0.5, None, 1.0]]]), r"weights\[1\]\[0\]\[1\] must be a number, got None"),
    (literal(weights=[W0, [[0.5, float("nan"), 1.0]]]),
     r"weights\[1\] must hold only finite float64 values, got nan at index \(0, 1\)"),
    (literal(weights=[W0, [[0.5, 1.0, float("-inf")]]]),
     r"weights\[1\] must hold only finite float64 values, got -inf at index \(0, 2\)"),
    (literal(weights=[W0, [[0.5, 1.0, 9 * 10**308]]]),   # the value as written, shortened
     r"weights\[1\] must hold only finite float64 values, got 9000000000000000000000000000000000000\.\.\. "
     r"at index \(0, 2\)$"),
    (literal(biases=[[[0.5], [-0.5]], [[0.125]]]),
     r"biases\[0\] must be a column of 3 numbers \[\[b1\], \[b2\], \.\.\.\] "
                                                   r"\(as network2\.py writes it\) or a flat list of 3 numbers"),
    (literal(biases=[[[0.5], -0.5, [0]], [[0.125]]]),
     r"biases\[0\]\[1\] must be a one-number list, as biases\[0\] is a column"),
    (literal(biases=[[[0.5], [-0.5, 1], [0]], [[0.125]]]), r"biases\[0\]\[1\] must be a one-number list"),
    (literal(biases=[[[0.5], ["-0.5"], [0]], [[0.125]]]), r"biases\[0\]\[1\]\[0\] must be a number, got '-0\.5'"),
    (literal(biases=[[0.5, [-0.5], 0], [[0.125]]]), r"biases\[0\]\[1\] must be a number, got an array of 1 entries"),
    (literal(biases=[[[0.5], [-0.5], [0]], {"b": 1}]), r"biases\[1\] must be a column of 1 numbers .*got an object"),
])
def test_load_network2_json_refuses_malformed_files(tmp_path, text, match):
    path = tmp_path / "net.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"net\.json'.* " + match):
        _io.load_network2_json(path)


def test_load_network2_json_refuses_huge_literals_and_non_utf8(tmp_path):
    path = tmp_path / "net.json"
    path.write_text(literal().replace("1e-300", "1e999"))
    with pytest.raises(ValueError, match=r"net\.json': weights\[1\] must hold only finite float64 values, "
                                         r"got 1e999 at index \(0, 2\)"):
        _io.load_network2_json(path)
    path.write_bytes(b'{"sizes": "\xff"}')
    with pytest.raises(ValueError, match=r"net\.json' is not valid JSON: it is not UTF-8 text"):
        _io.load_network2_json(path)
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match=r"net\.json' is not a network2\.py network: its JSON is nested too deeply"):
        _io.load_network2_json(path)


def test_load_network2_json_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        _io.load_network2_json(tmp_path / "nothing.json")


# ---- load_npz(into=...): the parameters read straight into the caller's arrays -------------------
def test_load_npz_into_fills_the_callers_arrays_after_the_file_passed(tmp_path):
    net = network((3, 4, 2), np.float64, seed=3)
    path = tmp_path / "net.npz"
    _io.save_npz(path, **net)
    blob = np.full(4 * 3 + 4 + 2 * 4 + 2, np.nan, dtype=np.float32)   # as a network's one buffer
    views = ([blob[:12].reshape(4, 3), blob[16:24].reshape(2, 4)], [blob[12:16], blob[24:26]])
    seen = []

    def into(config):
        seen.append(config)
        return views
    d = _io.load_npz(path, into=into)
    assert seen == [{"sizes": (3, 4, 2), "activations": net["activations"], "cost": net["cost"],
                     "dtype": np.dtype(np.float64)}]
    assert all(a is b for a, b in zip(d["weights"] + d["biases"], views[0] + views[1]))
    for got, want in zip(d["weights"] + d["biases"], net["weights"] + net["biases"]):
        assert np.array_equal(got, want.astype(np.float32))


def test_load_npz_into_is_not_called_for_a_refused_file_and_its_errors_pass(tmp_path, saved):
    path, net = saved
    arrays = members(path)
    arrays["biases_1"] = arrays["biases_1"] + 1.0                      # checksum mismatch
    bad = write_npz(tmp_path / "bad.npz", arrays)
    calls = []
    with pytest.raises(ValueError, match="checksum mismatch"):
        _io.load_npz(bad, into=lambda config: calls.append(config))
    assert calls == []

    def failing(config):
        raise RuntimeError("no memory for the network")
    with pytest.raises(RuntimeError, match="no memory for the network"):
        _io.load_npz(path, into=failing)
    with pytest.raises(ValueError, match=r"into's weights\[0\] must be a writable C-contiguous float array"):
        _io.load_npz(path, into=lambda c: ([np.zeros((1, 1))] * 2, [np.zeros(1)] * 2))


def test_load_npz_into_a_narrower_dtype_names_a_value_that_overflows(tmp_path):
    net = network((2, 2), np.float64)
    net["weights"][0][1, 0] = 1e300
    path = tmp_path / "big.npz"
    _io.save_npz(path, **net)
    dest = ([np.empty((2, 2), np.float32)], [np.empty(2, np.float32)])
    with pytest.raises(ValueError, match=r"big\.npz': weights_0 must hold only finite float32 values, got 1e\+300 "
                                         r"at index \(1, 0\)"):
        _io.load_npz(path, into=lambda config: dest)


def test_loading_takes_the_parameters_and_a_chunk(tmp_path):
    """caf6bcd read every member whole, then hashed copies of them (peak 2-3x the parameters)."""
    import tracemalloc

    net = network((1000, 1000), np.float64)            # 8 MB of weights
    path = tmp_path / "net.npz"
    _io.save_npz(path, **net)
    tracemalloc.start()
    try:
        _io.load_npz(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8_008_000 + (3 << 20), peak
