"""cbackprop.datasets.load_mnist and fetch_mnist on small files the tests write (an .npz, IDX
files plain and gzipped, the book's pickle layout), damaged and malicious files, downloads from
a local http.server, and `cbackprop train --data ... --plot ...`."""
from __future__ import annotations

import codecs
import gzip
import hashlib
import http.server
import io
import os
import pickle
import re
import struct
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import cbackprop.network  # noqa: F401  the compiled module (rebuilt if editable) before capsys
from cbackprop import datasets
from cbackprop.__main__ import main

SHARED_MNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist.npz"
TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = datasets.IDX_FILES
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---- writing test data ------------------------------------------------------------------------
def idx_images(u8):
    u8 = np.asarray(u8, dtype=np.uint8).reshape(-1, 28, 28)
    return struct.pack(">IIII", 2051, u8.shape[0], 28, 28) + u8.tobytes()


def idx_labels(y):
    y = np.asarray(y, dtype=np.uint8)
    return struct.pack(">II", 2049, y.shape[0]) + y.tobytes()


def make_u8(n_train=40, n_test=15, seed=0):
    """Random uint8 images (every pixel value 0..255 occurs) and labels 0..9."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n_train, 784), dtype=np.uint8)
    x[0, :256] = np.arange(256)
    return (x, rng.integers(0, 10, n_train).astype(np.uint8),
            rng.integers(0, 256, (n_test, 784), dtype=np.uint8),
            rng.integers(0, 10, n_test).astype(np.uint8))


def idx_contents(x, y, xt, yt):
    """{IDX file name: uncompressed bytes}."""
    return {TRAIN_IMAGES: idx_images(x), TRAIN_LABELS: idx_labels(y),
            TEST_IMAGES: idx_images(xt), TEST_LABELS: idx_labels(yt)}


def write_idx_dir(directory, contents, gz=False):
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        gzipped = gz if isinstance(gz, bool) else name in gz
        if gzipped:
            with gzip.open(directory / (name + ".gz"), "wb", compresslevel=1) as f:
                f.write(data)
        else:
            (directory / name).write_bytes(data)
    return directory


def book(u8):
    return u8.astype(np.float32) / np.float32(256)


def assert_part(part, u8, labels):
    x, y = part
    assert x.dtype == np.float32 and x.flags.c_contiguous and x.flags.writeable
    assert y.dtype == np.uint8 and y.shape == (u8.shape[0],)
    assert x.shape == (u8.shape[0], 784)
    assert np.array_equal(x, book(u8)) and np.array_equal(y, labels)
    if x.size:
        assert 0 <= x.min() and x.max() < 1


class Py2Pickler(pickle._Pickler):
    """Pickles the way Python 2's cPickle wrote the book's mnist.pkl.gz: bytes as py2 str
    (BINSTRING, read back with encoding='latin1') and _reconstruct from numpy.core.multiarray."""
    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj):
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes

    def save_global(self, obj, name=None):
        if getattr(obj, "__name__", None) == "_reconstruct":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)

    dispatch[type(len)] = save_global  # builtin functions such as _reconstruct


def book_pickle_data(seed=0):
    """((tr_x, tr_y), (va_x, va_y), (te_x, te_y)) as in mnist.pkl.gz: float32 u8/256, int64."""
    x, y, xt, yt = make_u8(30, 12, seed)
    xv, yv = x[20:], y[20:]
    parts = [(book(a), b.astype(np.int64)) for a, b in ((x[:20], y[:20]), (xv, yv), (xt, yt))]
    return tuple(parts), ((x[:20], y[:20]), (xv, yv), (xt, yt))


def write_pickle(path, obj, protocol=2, gz=True, py2=False):
    buf = io.BytesIO()
    if py2:
        Py2Pickler(buf, protocol=2).dump(obj)
    else:
        pickle.dump(obj, buf, protocol=protocol)
    data = buf.getvalue()
    path.write_bytes(gzip.compress(data, compresslevel=1) if gz else data)
    return path


# ---- .npz -------------------------------------------------------------------------------------
def test_load_mnist_npz_with_and_without_validation(tmp_path):
    x, y, xt, yt = make_u8()
    path = tmp_path / "mnist.npz"
    np.savez(path, train_x=x[:30], train_y=y[:30], val_x=x[30:].reshape(-1, 28, 28),
             val_y=y[30:].astype(np.int64), test_x=xt, test_y=yt)
    train, val, test = datasets.load_mnist(path)
    assert_part(train, x[:30], y[:30])
    assert_part(val, x[30:], y[30:])
    assert_part(test, xt, yt)

    no_val = tmp_path / "noval.npz"
    np.savez(no_val, train_x=x, train_y=y, test_x=xt, test_y=yt)
    train, val, test = datasets.load_mnist(str(no_val))
    assert val is None
    assert_part(train, x, y)
    assert_part(test, xt, yt)

    floats = tmp_path / "floats.npz"  # float pixels already in [0, 1) are kept (as float32)
    np.savez(floats, train_x=book(x).astype(np.float64), train_y=y, test_x=book(xt), test_y=yt)
    train, val, test = datasets.load_mnist(floats)
    assert val is None
    assert_part(train, x, y)


@pytest.mark.parametrize("change, needle", [
    (dict(val_x=np.zeros((2, 784), np.uint8)), "has val_x without val_y"),
    (dict(train_x=np.ones((40, 784), np.float32)), r"train_x pixels must lie in \[0, 1\)"),
    (dict(test_x=np.full((15, 784), -0.5)), r"test_x pixels must lie in \[0, 1\)"),
    (dict(train_y=np.full(40, 10)), r"train_y must lie in \[0, 10\)"),
    (dict(test_x=np.zeros((15, 783), np.uint8)), r"test_x must have shape \(n, 784\)"),
    (dict(train_y=np.zeros(39, np.uint8)), r"train_y must have shape \(40,\)"),
    (dict(test_x=None), "missing key"),
])
def test_load_mnist_npz_rejects(tmp_path, change, needle):
    x, y, xt, yt = make_u8()
    arrays = dict(train_x=x, train_y=y, test_x=xt, test_y=yt)
    arrays.update(change)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=needle) as info:
        datasets.load_mnist(path)
    assert str(path) in str(info.value)


# ---- IDX --------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True, (TRAIN_IMAGES, TEST_LABELS)], ids=["plain", "gz", "mixed"])
def test_load_mnist_idx_directory(tmp_path, gz):
    x, y, xt, yt = make_u8()
    d = write_idx_dir(tmp_path / "idx", idx_contents(x, y, xt, yt), gz)
    train, val, test = datasets.load_mnist(d, n_train=30)  # the book's split, scaled down
    assert_part(train, x[:30], y[:30])
    assert_part(val, x[30:], y[30:])
    assert_part(test, xt, yt)
    # default n_train = 50,000: no more training images than that, so no validation split
    train, val, test = datasets.load_mnist(d)
    assert val is None
    assert_part(train, x, y)
    assert_part(test, xt, yt)
    # a plain file is preferred over its .gz when both exist
    (d / (TEST_LABELS + ".gz")).write_bytes(b"not even gzip")
    (d / TEST_LABELS).write_bytes(idx_labels(yt))
    assert np.array_equal(datasets.load_mnist(d)[2][1], yt)


def test_load_mnist_idx_empty_test_set(tmp_path):
    x, y, _, _ = make_u8()
    contents = idx_contents(x, y, np.zeros((0, 784), np.uint8), np.zeros(0, np.uint8))
    train, val, test = datasets.load_mnist(write_idx_dir(tmp_path, contents))
    assert test[0].shape == (0, 784) and test[1].shape == (0,)


def _idx_case(case):
    """(file name, bytes) that replace one good IDX file, and the message expected."""
    x, y, xt, yt = make_u8()
    good = idx_contents(x, y, xt, yt)
    if case == "truncated images":
        return TRAIN_IMAGES, good[TRAIN_IMAGES][:-1], r"is truncated: the header declares 40 images of 28x28, which need 31376 bytes, but the data ends after 31375"
    if case == "truncated header":
        return TEST_IMAGES, good[TEST_IMAGES][:10], "is truncated: 10 bytes, shorter than the 16-byte header"
    if case == "empty":
        return TEST_LABELS, b"", "is truncated: 0 bytes"
    if case == "oversized":
        return TRAIN_LABELS, good[TRAIN_LABELS] + b"\x00", "is longer than its header declares: 40 labels need exactly 48 bytes"
    if case == "wrong magic":  # the label file where the images belong
        return TRAIN_IMAGES, good[TRAIN_LABELS], r"is not an IDX image file: magic number 2049 \(0x00000801\), expected 2051"
    if case == "wrong magic labels":
        return TEST_LABELS, struct.pack(">II", 2052, 15) + yt.tobytes(), "is not an IDX label file: magic number 2052"
    if case == "not 28x28":
        return TEST_IMAGES, struct.pack(">IIII", 2051, 1, 27, 28) + bytes(27 * 28), "MNIST images are 28x28, the header says 27x28"
    if case == "count mismatch":
        return TEST_LABELS, idx_labels(yt[:-1]), "holds 14 labels but .* holds 15 images"
    if case == "label 10":
        bad = yt.copy()
        bad[3] = 10
        return TEST_LABELS, idx_labels(bad), "labels must lie in 0..9, got 10 at item 3"
    if case == "huge header":
        return TRAIN_IMAGES, struct.pack(">IIII", 2051, 2**32 - 1, 28, 28), "more than this loader accepts"
    raise AssertionError(case)


IDX_CASES = ["truncated images", "truncated header", "empty", "oversized", "wrong magic",
             "wrong magic labels", "not 28x28", "count mismatch", "label 10", "huge header"]


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("case", IDX_CASES)
def test_load_mnist_idx_rejects_bad_files(tmp_path, case, gz):
    x, y, xt, yt = make_u8()
    contents = idx_contents(x, y, xt, yt)
    name, data, needle = _idx_case(case)
    contents[name] = data
    d = write_idx_dir(tmp_path / "idx", contents, gz)
    with pytest.raises(ValueError, match=needle) as info:
        datasets.load_mnist(d)
    assert name in str(info.value)


def test_load_mnist_idx_damaged_gzip_and_missing_files(tmp_path):
    x, y, xt, yt = make_u8()
    d = write_idx_dir(tmp_path / "idx", idx_contents(x, y, xt, yt), gz=True)
    whole = (d / (TRAIN_IMAGES + ".gz")).read_bytes()
    (d / (TRAIN_IMAGES + ".gz")).write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=f"{TRAIN_IMAGES}.gz is a damaged or truncated gzip file"):
        datasets.load_mnist(d)
    (d / (TRAIN_IMAGES + ".gz")).write_bytes(whole[:-4] + b"\x00\x00\x00\x00")  # bad length
    with pytest.raises(ValueError, match="damaged or truncated gzip"):
        datasets.load_mnist(d)

    os.remove(d / (TRAIN_IMAGES + ".gz"))
    os.remove(d / (TEST_LABELS + ".gz"))
    with pytest.raises(ValueError, match=f"lacks the IDX file.s. {TRAIN_IMAGES}, {TEST_LABELS} "):
        datasets.load_mnist(d)


def test_load_mnist_other_paths(tmp_path):
    with pytest.raises(OSError, match="cannot read"):
        datasets.load_mnist(tmp_path / "missing.npz")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not MNIST data in a form load_mnist reads"):
        datasets.load_mnist(text)
    x, y, xt, yt = make_u8()
    single = tmp_path / TRAIN_IMAGES
    single.write_bytes(idx_images(x))
    with pytest.raises(ValueError, match="is a single IDX file; pass the directory"):
        datasets.load_mnist(single)
    gz = tmp_path / (TRAIN_LABELS + ".gz")
    gz.write_bytes(gzip.compress(idx_labels(y)))
    with pytest.raises(ValueError, match="is a single IDX file; pass the directory"):
        datasets.load_mnist(gz)
    for bad in (-1, 2.5, True, "10"):
        with pytest.raises(ValueError, match="n_train must be an integer >= 0"):
            datasets.load_mnist(tmp_path, n_train=bad)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_MNIST.exists(), reason="../shared/data/mnist.npz not available")
def test_real_mnist_idx_md5_and_book_split(tmp_path):
    """IDX files rebuilt from the book-split mnist.npz are byte for byte the canonical MNIST
    files (their md5s are MNIST_MD5), and load_mnist splits them as the book does."""
    with np.load(SHARED_MNIST) as d:
        arrays = {k: d[k] for k in d.files}
    contents = idx_contents(np.concatenate([arrays["train_x"], arrays["val_x"]]),
                            np.concatenate([arrays["train_y"], arrays["val_y"]]),
                            arrays["test_x"], arrays["test_y"])
    for name, data in contents.items():
        assert hashlib.md5(data).hexdigest() == datasets.MNIST_MD5[name], name
    d = write_idx_dir(tmp_path / "idx", contents)
    del contents
    train, val, test = datasets.load_mnist(d)
    assert_part(train, arrays["train_x"], arrays["train_y"])
    assert_part(val, arrays["val_x"], arrays["val_y"])
    assert_part(test, arrays["test_x"], arrays["test_y"])
    # the same from the .npz itself
    train2, val2, test2 = datasets.load_mnist(SHARED_MNIST)
    for a, b in zip((train, val, test), (train2, val2, test2)):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


# ---- the book's mnist.pkl.gz ------------------------------------------------------------------
@pytest.mark.parametrize("protocol, py2, gz", [
    (2, True, True),    # as Python 2's cPickle wrote mnist.pkl.gz
    (0, False, True), (2, False, True), (4, False, True), (5, False, True),
    (pickle.DEFAULT_PROTOCOL, False, False),  # an uncompressed .pkl
], ids=["py2", "p0", "p2", "p4", "p5", "plain"])
def test_load_mnist_book_pickle(tmp_path, protocol, py2, gz):
    obj, expected = book_pickle_data()
    path = write_pickle(tmp_path / ("mnist.pkl.gz" if gz else "mnist.pkl"), obj, protocol, gz, py2)
    parts = datasets.load_mnist(path, n_train=3)  # n_train does not apply to a pickle
    for part, (u8, labels) in zip(parts, expected):
        assert_part(part, u8, labels)


def test_book_pickle_lists_and_uint8_pixels(tmp_path):
    obj, expected = book_pickle_data()
    as_lists = [[(u8 * 1).reshape(-1, 28, 28), y] for u8, y in expected]  # uint8 images, lists
    parts = datasets.load_mnist(write_pickle(tmp_path / "m.pkl.gz", as_lists, 4))
    for part, (u8, labels) in zip(parts, expected):
        assert_part(part, u8, labels)


def _bad_pickles():
    obj, _ = book_pickle_data()
    (tr, va, te) = obj
    return [
        ({"train": tr}, re.escape("expected a pickled ((train_x, train_y), (val_x, val_y), "
                                  "(test_x, test_y)), got a dict")),
        ((tr, va), "got a tuple of length 2"),
        ((tr, va, (te[0],)), "the test part is a tuple of length 1, not a pair of arrays"),
        ((tr, va, (te[0], te[1].tolist())), "the test part is a tuple of length 2, not a pair"),
        ((tr, (va[0] * 2, va[1]), te), r"val_x pixels must lie in \[0, 1\)"),
        ((tr, va, (te[0], te[1] + 10)), r"test_y must lie in \[0, 10\)"),
        (((tr[0], tr[1].astype(np.float64)), va, te), "train_y must hold integer class labels"),
        (((tr[0][:, :700], tr[1]), va, te), r"train_x must have shape \(n, 784\)"),
        (((np.ones((1, 784), dtype=object), tr[1][:1]), va, te), "refusing dtype object"),
        (((tr[0].astype(np.int16), tr[1]), va, te), "train_x must be uint8 pixels .* or floats"),
        (((tr[0], tr[1][:-1]), va, te), r"train_y must have shape \(20,\)"),
        (((np.full((1, 784), np.nan, np.float32), tr[1][:1]), va, te), "train_x must hold only finite values"),
    ]


@pytest.mark.parametrize("index", range(12))
def test_book_pickle_rejects_bad_content(tmp_path, index):
    obj, needle = _bad_pickles()[index]
    path = write_pickle(tmp_path / "bad.pkl.gz", obj, 4)
    with pytest.raises(ValueError, match=needle) as info:
        datasets.load_mnist(path)
    assert str(path) in str(info.value)


def test_book_pickle_refuses_arrays_that_are_not_what_they_seem(tmp_path):
    obj, _ = book_pickle_data()
    strided = write_pickle(tmp_path / "strided.pkl.gz", ((Strided(), obj[0][1]), obj[1], obj[2]), 4)
    # numpy pickles arrays through _reconstruct or _frombuffer, never by calling ndarray
    with pytest.raises(ValueError, match=r"strided\.pkl\.gz: refusing to call numpy\.ndarray"):
        datasets.load_mnist(strided)
    huge = write_pickle(tmp_path / "huge.pkl.gz", ((Huge(), obj[0][1]), obj[1], obj[2]), 4)
    with pytest.raises(ValueError, match=r"huge\.pkl\.gz: refusing to call numpy\.ndarray"):
        datasets.load_mnist(huge)


def test_book_pickle_damaged(tmp_path):
    obj, _ = book_pickle_data()
    raw = pickle.dumps(obj, protocol=4)
    truncated = tmp_path / "truncated.pkl.gz"
    truncated.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(ValueError, match="is not a readable MNIST pickle"):
        datasets.load_mnist(truncated)
    cut = tmp_path / "cut.pkl.gz"
    cut.write_bytes(gzip.compress(raw)[:100])
    with pytest.raises(ValueError, match="damaged or truncated gzip file"):
        datasets.load_mnist(cut)
    junk = tmp_path / "junk.pkl.gz"
    junk.write_bytes(gzip.compress(b"\x80\x04junk that is not a pickle"))
    with pytest.raises(ValueError, match="is not a readable MNIST pickle"):
        datasets.load_mnist(junk)


class RunsShell:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.target}",))


class RunsExec:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (exec, (f"open({str(self.target)!r}, 'w').write('pwned')",))


class Strided:  # 10**9 "images" over a 1-byte buffer: would need 3 TB as float32
    def __reduce__(self):
        return (np.ndarray, ((10**9, 784), np.dtype("u1"), b"x", 0, (0, 0)))


class Huge:  # asks NumPy for a 2**50-byte array while unpickling
    def __reduce__(self):
        return (np.ndarray, ((2**50,), np.dtype("u1")))


class Rot13:
    def __reduce__(self):
        return (codecs.encode, ("abc", "rot13"))


@pytest.mark.parametrize("protocol", [0, 2, 5])
@pytest.mark.parametrize("kind, needle", [
    ("system", r"refusing to load (posix|os|nt)\.system: an MNIST pickle may only hold NumPy arrays"),
    ("exec", r"refusing to load (builtins|__builtin__)\.exec"),  # protocols < 3 say __builtin__
    ("hidden", r"refusing to load (posix|os|nt)\.system"),
    ("codecs", r"refusing _codecs\.encode\(str, 'rot13'"),
])
def test_malicious_pickle_is_refused_without_running(tmp_path, kind, needle, protocol):
    target = tmp_path / "pwned"
    obj, _ = book_pickle_data()
    payload = {"system": lambda: RunsShell(target), "exec": lambda: RunsExec(target),
               "hidden": lambda: ((obj[0][0], RunsShell(target)), obj[1], obj[2]),
               "codecs": lambda: ((Rot13(), obj[0][1]), obj[1], obj[2])}[kind]()
    path = write_pickle(tmp_path / "evil.pkl.gz", payload, protocol)
    with pytest.raises(ValueError, match=needle) as info:
        datasets.load_mnist(path)
    assert str(path) in str(info.value)
    assert not target.exists()
    # the same through the command line: exit 2 with the message, no traceback, nothing run
    assert main(["--data", str(path), "--epochs", "1"]) == 2
    assert not target.exists()


def test_malicious_pickle_via_cli_message(tmp_path, capsys):
    target = tmp_path / "pwned"
    path = write_pickle(tmp_path / "mnist.pkl.gz", RunsShell(target), 2)
    assert main(["--data", str(path)]) == 2
    err = capsys.readouterr().err
    assert "argument --data:" in err and "refusing to load" in err and "Traceback" not in err
    assert not target.exists()


# ---- fetch_mnist over a local http.server -----------------------------------------------------
@pytest.fixture
def server(tmp_path, monkeypatch):
    """A ThreadingHTTPServer on 127.0.0.1 serving tmp_path/www; .url is the base URL of
    tmp_path/www/mnist/, .requests the paths requested."""
    root = tmp_path / "www"
    (root / "mnist").mkdir(parents=True)
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(dir=root / "mnist", requests=requests,
                              url=f"http://127.0.0.1:{httpd.server_address[1]}/mnist")
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def serve(server, contents):
    """Write contents as <name>.gz into the served directory; {name: md5 of the content}."""
    write_idx_dir(server.dir, contents, gz=True)
    return {name: hashlib.md5(data).hexdigest() for name, data in contents.items()}


def cache_listing(cache):
    return sorted(p.name for p in cache.iterdir())


def test_fetch_mnist_downloads_verifies_and_caches(server, tmp_path):
    x, y, xt, yt = make_u8()
    checksums = serve(server, idx_contents(x, y, xt, yt))
    cache = tmp_path / "cache" / "mnist"  # created by fetch_mnist
    train, val, test = datasets.fetch_mnist(cache, server.url, checksums=checksums, n_train=30,
                                            timeout=10)
    assert_part(train, x[:30], y[:30])
    assert_part(val, x[30:], y[30:])
    assert_part(test, xt, yt)
    assert sorted(server.requests) == sorted(f"/mnist/{n}.gz" for n in datasets.IDX_FILES)
    assert cache_listing(cache) == sorted(n + ".gz" for n in datasets.IDX_FILES)  # no .part left
    for name in datasets.IDX_FILES:  # what is cached is what was served
        assert (cache / (name + ".gz")).read_bytes() == (server.dir / (name + ".gz")).read_bytes()
    # load_mnist reads the cache directly, with the default split (no validation here)
    assert datasets.load_mnist(cache)[1] is None

    # cached and valid: nothing is downloaded again (a trailing slash on the URL is fine)
    server.requests.clear()
    again = datasets.fetch_mnist(cache, server.url + "/", checksums=checksums)
    assert server.requests == []
    assert_part(again[0], x, y)

    # sha256 checksums work too; a corrupt cached file is replaced by a fresh download
    sha = {name: hashlib.sha256(data).hexdigest().upper()
           for name, data in idx_contents(x, y, xt, yt).items()}
    (cache / (TEST_LABELS + ".gz")).write_bytes(b"garbage")
    server.requests.clear()
    datasets.fetch_mnist(cache, server.url, checksums=sha)
    assert server.requests == [f"/mnist/{TEST_LABELS}.gz"]
    assert cache_listing(cache) == sorted(n + ".gz" for n in datasets.IDX_FILES)


def test_fetch_mnist_checksum_mismatch_leaves_no_bad_file(server, tmp_path):
    x, y, xt, yt = make_u8()
    checksums = serve(server, idx_contents(x, y, xt, yt))
    good = checksums[TRAIN_LABELS]
    wrong = dict(checksums, **{TRAIN_LABELS: "0" * 32})
    cache = tmp_path / "cache"
    with pytest.raises(ValueError) as info:
        datasets.fetch_mnist(cache, server.url, checksums=wrong)
    message = str(info.value)
    assert f"checksum mismatch for {TRAIN_LABELS}" in message
    assert "0" * 32 in message and good in message and "md5" in message
    # the file verified before the mismatch stays; the bad one and any temporary are gone
    assert cache_listing(cache) == [TRAIN_IMAGES + ".gz"]

    # a served file that is not gzip: refused, nothing saved
    (server.dir / (TRAIN_LABELS + ".gz")).write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ValueError, match=f"{TRAIN_LABELS}.gz downloaded from {server.url}/"
                                         f"{TRAIN_LABELS}.gz is a damaged or truncated gzip "
                                         r"file \(BadGzipFile: .*\); it was not saved"):
        datasets.fetch_mnist(cache, server.url, checksums=checksums)
    assert cache_listing(cache) == [TRAIN_IMAGES + ".gz"]

    # a missing file on the server: OSError naming the URL, nothing saved
    os.remove(server.dir / (TRAIN_LABELS + ".gz"))
    with pytest.raises(OSError, match=f"cannot download {server.url}/{TRAIN_LABELS}.gz: HTTP 404"):
        datasets.fetch_mnist(cache, server.url, checksums=checksums)
    assert cache_listing(cache) == [TRAIN_IMAGES + ".gz"]


def test_fetch_mnist_checks_its_arguments(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="checksums must have exactly the keys"):
        datasets.fetch_mnist(cache, "http://127.0.0.1:9/", checksums={"a": "0" * 32})
    bad = dict(datasets.MNIST_MD5, **{TEST_LABELS: "xyz"})
    with pytest.raises(ValueError, match=f"checksum for {TEST_LABELS} must be an md5"):
        datasets.fetch_mnist(cache, "http://127.0.0.1:9/", checksums=bad)
    with pytest.raises(ValueError, match="url must be an http"):
        datasets.fetch_mnist(cache, "ftp://example.org/mnist/")
    with pytest.raises(ValueError, match="timeout must be"):
        datasets.fetch_mnist(cache, timeout=0)
    assert not cache.exists()  # nothing created before the arguments are checked
    assert datasets.MNIST_URL.startswith("https://")
    assert set(datasets.MNIST_MD5) == set(datasets.IDX_FILES)


@pytest.mark.skipif(not SHARED_MNIST.exists(), reason="../shared/data/mnist.npz not available")
def test_fetch_real_mnist_with_the_default_checksums(server, tmp_path):
    """The whole MNIST, rebuilt as IDX .gz files and served locally, passes the default md5
    check and loads with the book's 50,000 / 10,000 split."""
    with np.load(SHARED_MNIST) as d:
        arrays = {k: d[k] for k in d.files}
    contents = idx_contents(np.concatenate([arrays["train_x"], arrays["val_x"]]),
                            np.concatenate([arrays["train_y"], arrays["val_y"]]),
                            arrays["test_x"], arrays["test_y"])
    serve(server, contents)
    del contents
    train, val, test = datasets.fetch_mnist(tmp_path / "cache", server.url)
    assert train[0].shape == (50000, 784) and val[0].shape == (10000, 784)
    assert np.array_equal(val[1], arrays["val_y"]) and np.array_equal(test[1], arrays["test_y"])
    assert np.array_equal(train[0][-1], book(arrays["train_x"][-1]))


# ---- the command line: --data with IDX / pickle, --plot ---------------------------------------
def test_cli_data_idx_directory_and_pickle(tmp_path, capsys):
    (x, y), (xt, yt) = datasets.load_sample()
    u8 = lambda a: np.round(a * 256).astype(np.uint8)  # noqa: E731
    d = write_idx_dir(tmp_path / "idx", idx_contents(u8(x[:500]), y[:500], u8(xt[:100]), yt[:100]), gz=True)
    assert main(["--data", str(d), "--epochs", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("best test accuracy") and "/100) at epoch" in out

    obj = ((x[:500], y[:500].astype(np.int64)), (x[500:600], y[500:600].astype(np.int64)),
           (xt[:100], yt[:100].astype(np.int64)))
    pkl = write_pickle(tmp_path / "mnist.pkl.gz", obj, 2)
    assert main(["--data", str(pkl), "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "on 500 images, evaluating on 100 test images" in out

    (d / (TRAIN_IMAGES + ".gz")).unlink()
    assert main(["--data", str(d), "--epochs", "1"]) == 2
    assert "argument --data:" in capsys.readouterr().err


def test_cli_plot_writes_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    (x, y), (xt, yt) = datasets.load_sample()
    u8 = lambda a: np.round(a * 256).astype(np.uint8)  # noqa: E731
    d = write_idx_dir(tmp_path / "idx", idx_contents(u8(x[:600]), y[:600], u8(xt[:150]), yt[:150]))
    png = tmp_path / "curves.png"
    assert main(["--data", str(d), "--epochs", "3", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert f"wrote learning curves to {png}" in out
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "idx"]  # no temporary

    # no suffix: PNG; .svg by its suffix
    plain = tmp_path / "curves"
    assert main(["--epochs", "1", "--quiet", "--data", str(d), "--plot", str(plain)]) == 0
    assert plain.read_bytes().startswith(PNG_SIGNATURE)
    svg = tmp_path / "curves.svg"
    assert main(["--epochs", "1", "--quiet", "--data", str(d), "--plot", str(svg)]) == 0
    assert b"<svg" in svg.read_bytes()[:1000]
    capsys.readouterr()


@pytest.mark.parametrize("target, needle", [
    ("curves.xyz", "argument --plot: cannot write a plot as .xyz; use one of"),
    ("no/such/dir/curves.png", "argument --plot: directory"),
    (".", "argument --plot: '.' is a directory"),
])
def test_cli_plot_bad_target_fails_before_training(tmp_path, capsys, monkeypatch, target, needle):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    assert main(["--epochs", "1", "--plot", target]) == 2
    captured = capsys.readouterr()
    assert needle in captured.err and captured.out == ""


def test_fetch_mnist_from_a_file_url(tmp_path):
    x, y, xt, yt = make_u8()
    contents = idx_contents(x, y, xt, yt)
    mirror = write_idx_dir(tmp_path / "mirror", contents, gz=True)
    checksums = {name: hashlib.md5(data).hexdigest() for name, data in contents.items()}
    train, val, test = datasets.fetch_mnist(tmp_path / "cache", mirror.as_uri(), checksums=checksums)
    assert val is None
    assert_part(train, x, y)
    assert_part(test, xt, yt)


# ---- limits: max_images, what is not a regular file, values as given -----------------------------
def test_max_images_is_checked_from_the_headers(tmp_path):
    x, y, xt, yt = make_u8()                                       # 40 + 15 images
    d = write_idx_dir(tmp_path / "idx", idx_contents(x, y, xt, yt), gz=True)
    assert datasets.load_mnist(d, max_images=55)[0][0].shape == (40, 784)
    with pytest.raises(ValueError, match=r"the headers declare 55 images, more than this loader accepts "
                                         r"\(max_images=54 in all\)"):
        datasets.load_mnist(d, max_images=54)
    with pytest.raises(ValueError, match=rf"{TRAIN_IMAGES}\.gz: the header declares 40 images, more than"):
        datasets.load_mnist(d, max_images=39)
    npz = tmp_path / "m.npz"
    np.savez_compressed(npz, train_x=x, train_y=y, test_x=xt, test_y=yt)
    with pytest.raises(ValueError, match=r"m\.npz: the file declares 55 images in all, more than this loader"):
        datasets.load_npz(npz, max_images=54)
    assert datasets.load_npz(npz, max_images=55)[1][0].shape == (15, 784)
    pkl = write_pickle(tmp_path / "m.pkl.gz", book_pickle_data()[0], 4)   # 20 + 10 + 12
    with pytest.raises(ValueError, match=r"m\.pkl\.gz: the pickle holds 42 images in all"):
        datasets.load_mnist(pkl, max_images=41)
    for bad in (-1, 1.5, "9", True, None):
        with pytest.raises(ValueError, match="max_images must be an integer >= 0"):
            datasets.load_mnist(d, max_images=bad)
    assert datasets.MAX_IMAGES == 100_000 and "MAX_IMAGES" in datasets.__all__


def test_a_label_file_is_read_before_the_images(tmp_path, monkeypatch):
    """A refused label file costs no image data: the labels are read (and checked) first."""
    x, y, xt, yt = make_u8()
    bad = yt.copy()
    bad[0] = 11
    contents = idx_contents(x, y, xt, bad)
    d = write_idx_dir(tmp_path / "idx", contents)
    read = []
    real = datasets._idx_data
    monkeypatch.setattr(datasets, "_idx_data", lambda header: read.append(os.path.basename(header.path))
                        or real(header))
    with pytest.raises(ValueError, match="labels must lie in 0..9, got 11 at item 0"):
        datasets.load_mnist(d)
    assert read == [TRAIN_LABELS, TEST_LABELS]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "data.npz"
    os.mkfifo(fifo)
    for load in (datasets.load_mnist, datasets.load_npz):
        with pytest.raises(ValueError, match=r"data\.npz: it is a FIFO \(named pipe\), not a regular file"):
            load(fifo)


def test_float_images_beyond_float32_are_reported_as_given(tmp_path):
    x, y, xt, yt = make_u8()
    images = np.zeros((40, 784), dtype=np.longdouble)
    images[2, 5] = np.longdouble("1e4000")
    path = tmp_path / "ld.npz"
    np.savez(path, train_x=images, train_y=y, test_x=xt, test_y=yt)
    with pytest.raises(ValueError, match=r"ld\.npz: train_x must hold only finite values, got 1e\+4000 at "
                                         r"index \(2, 5\)"):
        datasets.load_npz(path)


def test_fetch_mnist_refuses_a_download_bigger_than_max_images_allows(tmp_path):
    x, y, xt, yt = make_u8()
    contents = idx_contents(x, y, xt, yt)
    mirror = write_idx_dir(tmp_path / "mirror", contents, gz=True)
    checksums = {name: hashlib.md5(data).hexdigest() for name, data in contents.items()}
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=rf"{TRAIN_IMAGES}\.gz downloaded from .* holds more than 7856 bytes, "
                                         r"more than an IDX file of max_images images; not an MNIST file; "
                                         r"it was not saved"):
        datasets.fetch_mnist(cache, mirror.as_uri(), checksums=checksums, max_images=10)
    assert cache_listing(cache) == []
