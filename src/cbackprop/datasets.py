"""The MNIST sample that ships with cbackprop, loaders for the full MNIST, and small data
helpers.  Pure NumPy and the standard library: this module never imports the compiled module
or cbackprop.network.

* load_sample(): the embedded class-balanced sample, ((x_train, y_train), (x_test, y_test)).
* load_npz(path): the same from an .npz with keys train_x, train_y, test_x, test_y.
* load_mnist(path): ((x_train, y_train), (x_val, y_val) or None, (x_test, y_test)) from the
  book-split mnist.npz, a directory of the four MNIST IDX files (plain or .gz, split 50,000 /
  10,000 as in the book) or the book's mnist.pkl.gz (read without running pickled code).
* fetch_mnist(cache_dir): download the IDX files once, verify their md5s, cache them, and
  return load_mnist's result.
* one_hot(labels): the book's target vectors, one row per sample.

    >>> from cbackprop.datasets import load_sample, one_hot
    >>> (x_train, y_train), (x_test, y_test) = load_sample()
    >>> x_train.shape, x_train.dtype, y_train.dtype
    ((10000, 784), dtype('float32'), dtype('uint8'))
    >>> Y_train = one_hot(y_train)            # (10000, 10) float64 targets for Network.sgd

The sample (``cbackprop/data/mnist_sample.npz``) is a class-balanced subset of MNIST: 1,000
training images per digit drawn from the book's 50,000 training images and 200 test images per
digit drawn from the 10,000 MNIST test images (see ``cbackprop/data/README.md`` and
``tools/make_sample.py``).  MNIST is copyright Yann LeCun and Corinna Cortes, a derivative of
NIST data, and is available under the Creative Commons Attribution-Share Alike 3.0 license; the
sample stays under that license, separate from the code's license.

Pixels are returned as the book's float values ``x = u8 / 256`` in float32 (exact; largest
value 255/256), one row of 784 per image, labels as uint8 in 0..9.
"""
from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.client
import importlib
import math
import numbers
import os
import pickle
import struct
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zlib
from importlib import resources

import numpy as np

from ._atomic import atomic_path as _atomic_path

__all__ = ["load_sample", "load_npz", "load_mnist", "fetch_mnist", "one_hot", "SAMPLE_FILE",
           "IDX_FILES", "MNIST_MD5", "MNIST_URL"]

SAMPLE_FILE = "mnist_sample.npz"
N_PIXELS = 784
_KEYS = ("train_x", "train_y", "test_x", "test_y")


def _images(arr, name):
    """uint8 images -> float32 u8/256 rows of 784; float images -> float32/float64 rows as given."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[1:] == (28, 28):
        arr = arr.reshape(arr.shape[0], N_PIXELS)
    if arr.ndim != 2 or arr.shape[1] != N_PIXELS:
        raise ValueError(f"{name} must have shape (n, {N_PIXELS}) or (n, 28, 28), got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(256)
    if arr.dtype.kind == "f":
        out = np.ascontiguousarray(arr, dtype=np.float64 if arr.dtype == np.float64 else np.float32)
        if not np.isfinite(out).all():
            raise ValueError(f"{name} must hold only finite values")
        return out
    raise ValueError(f"{name} must be uint8 pixels (scaled by 1/256) or floats, got dtype {arr.dtype}")


def _labels(arr, name, n, n_classes=10):
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the images, got shape {arr.shape}")
    if n and (arr.min() < 0 or arr.max() >= n_classes):
        bad = arr.min() if arr.min() < 0 else arr.max()
        raise ValueError(f"{name} must lie in [0, {n_classes}), got {bad}")
    return arr.astype(np.uint8)


def _split(npz):
    missing = [k for k in _KEYS if k not in npz.files]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)} "
                         f"(need {', '.join(_KEYS)}; has {', '.join(npz.files) or 'none'})")
    out = []
    for part in ("train", "test"):
        x = _images(npz[f"{part}_x"], f"{part}_x")
        y = _labels(npz[f"{part}_y"], f"{part}_y", x.shape[0])
        out.append((x, y))
    return tuple(out)


def _open_npz(path):
    """np.load(path) after checking that path is a zip archive; OSError / ValueError otherwise."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise OSError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):  # a zip archive (empty or not)
        what = "a single .npy array" if magic == b"\x93NUM" else "not a zip archive"
        raise ValueError(f"{path} is not an .npz file ({what})")
    try:
        return np.load(path, allow_pickle=False)
    except OSError as exc:
        raise OSError(f"cannot read {path}: {exc}") from exc
    except Exception as exc:  # a damaged archive: BadZipFile, ValueError, EOFError ...
        raise ValueError(f"{path} is not a readable .npz file ({type(exc).__name__}: {exc})") from exc


def _read_npz(path, split):
    with _open_npz(path) as npz:
        try:
            return split(npz)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        except Exception as exc:  # a damaged member: BadZipFile, zlib.error, EOFError ...
            raise ValueError(f"{path} is not a readable .npz file ({type(exc).__name__}: {exc})") from exc


def load_npz(path):
    """((x_train, y_train), (x_test, y_test)) from an .npz with keys train_x, train_y, test_x,
    test_y, such as the book-split ``mnist.npz``.

    Images may be (n, 784) or (n, 28, 28); uint8 pixels become the book's float32 values
    u8/256, float pixels are kept (as float32 or float64).  Labels must be integers in 0..9
    and come back as uint8.  Raises OSError if the file cannot be read and ValueError if it
    is not a suitable .npz.  (load_mnist reads the same files, and the validation split too.)
    """
    return _read_npz(path, _split)


def load_sample():
    """The embedded class-balanced MNIST sample: ((x_train, y_train), (x_test, y_test)).

    x_train float32 (10000, 784), x_test float32 (2000, 784): the book's values u8/256 in
    [0, 255/256]; y_train (10000,), y_test (2000,): uint8 labels 0..9, 1,000 resp. 200 per
    class.  Each call reads the file again and returns new arrays.
    """
    ref = resources.files(__package__).joinpath("data").joinpath(SAMPLE_FILE)
    with resources.as_file(ref) as path, np.load(path, allow_pickle=False) as npz:
        return _split(npz)


def one_hot(labels, n_classes=10, dtype=np.float64):
    """(m, n_classes) array of dtype with a 1 in column labels[i] of row i, zeros elsewhere:
    the target vectors y(x) of the book (network.py's vectorized_result, one row per sample)."""
    if isinstance(n_classes, (bool, np.bool_)) or not isinstance(n_classes, numbers.Integral) or n_classes < 1:
        raise ValueError(f"n_classes must be an integer >= 1, got {n_classes!r}")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must hold integers, got an array of dtype {labels.dtype}")
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise ValueError(f"labels must lie in [0, {n_classes}), got {bad}")
    out = np.zeros((labels.shape[0], int(n_classes)), dtype=dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out


# ==== full MNIST: load_mnist (npz, IDX, the book's mnist.pkl.gz) and fetch_mnist =============
#: The four IDX files of MNIST, as published, in the order load_mnist reads them.
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
#: md5 of each IDX file's uncompressed content (the canonical MNIST files).
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
#: Default base URL for fetch_mnist: a public mirror of the four ``<name>.gz`` files.
MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
#: The book's split of the 60,000 MNIST training images: the first 50,000 train, the rest validate.
BOOK_N_TRAIN = 50_000

_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_IDX_BYTES = 1 << 31         # payload one IDX file may declare (MNIST's largest: 47,040,000)
_MAX_DOWNLOAD = 256 * 1024 * 1024  # bytes fetch_mnist accepts per file (largest .gz: 9.9 MB)
_CHUNK = 1 << 22
_GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


@contextlib.contextmanager
def _open_data(path):
    """A binary stream over path's content, gunzipped when the file starts with the gzip magic."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise OSError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with f:
        gz = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        if gz:
            with gzip.GzipFile(fileobj=f, mode="rb") as g:
                yield g
        else:
            yield f


def _read(f, n, path):
    """Up to n bytes of f (fewer only at the end of the data), read in chunks."""
    chunks, left = [], n
    try:
        while left > 0:
            chunk = f.read(min(left, _CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except _GZIP_ERRORS as exc:
        raise ValueError(f"{path} is a damaged or truncated gzip file "
                         f"({type(exc).__name__}: {exc})") from None
    return b"".join(chunks)


def _read_idx(path, magic):
    """The uint8 payload of one IDX file, (n, 784) for images, (n,) for labels, strictly checked."""
    kind, ndim = ("image", 3) if magic == _IMAGES_MAGIC else ("label", 1)
    header = 4 + 4 * ndim
    with _open_data(path) as f:
        head = _read(f, header, path)
        if len(head) >= 4:
            got = int.from_bytes(head[:4], "big")
            if got != magic:
                raise ValueError(f"{path} is not an IDX {kind} file: magic number {got} "
                                 f"(0x{got:08x}), expected {magic} (0x{magic:08x})")
        if len(head) < header:
            raise ValueError(f"{path} is truncated: {len(head)} bytes, shorter than the "
                             f"{header}-byte header of an IDX {kind} file")
        dims = struct.unpack(f">{ndim}I", head[4:])
        if ndim == 3 and dims[1:] != (28, 28):
            raise ValueError(f"{path}: MNIST images are 28x28, the header says {dims[1]}x{dims[2]}")
        n_bytes = math.prod(dims)
        what = f"{dims[0]} images of 28x28" if ndim == 3 else f"{dims[0]} labels"
        if n_bytes > _MAX_IDX_BYTES:
            raise ValueError(f"{path}: the header declares {what} ({n_bytes} bytes), "
                             f"more than this loader accepts ({_MAX_IDX_BYTES})")
        data = _read(f, n_bytes, path)
        if len(data) < n_bytes:
            raise ValueError(f"{path} is truncated: the header declares {what}, which need "
                             f"{header + n_bytes} bytes, but the data ends after "
                             f"{header + len(data)}")
        if _read(f, 1, path):
            raise ValueError(f"{path} is longer than its header declares: {what} need exactly "
                             f"{header + n_bytes} bytes")
    arr = np.frombuffer(data, dtype=np.uint8)
    return arr.reshape(dims[0], N_PIXELS) if ndim == 3 else arr


def _idx_paths(directory):
    """{name: path} of the four IDX files in directory, each plain or .gz (plain preferred)."""
    paths, missing = {}, []
    for name in IDX_FILES:
        for candidate in (name, name + ".gz"):
            path = os.path.join(directory, candidate)
            if os.path.isfile(path):
                paths[name] = path
                break
        else:
            missing.append(name)
    if missing:
        raise ValueError(f"{directory} lacks the IDX file(s) {', '.join(missing)} (plain or .gz); "
                         f"a directory given as MNIST data must hold all four of "
                         f"{', '.join(IDX_FILES)}")
    return paths


def _load_idx_files(paths, n_train):
    parts = []
    for images, labels in ((IDX_FILES[0], IDX_FILES[1]), (IDX_FILES[2], IDX_FILES[3])):
        x = _read_idx(paths[images], _IMAGES_MAGIC)
        y = _read_idx(paths[labels], _LABELS_MAGIC)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{paths[labels]} holds {y.shape[0]} labels but "
                             f"{paths[images]} holds {x.shape[0]} images")
        if y.size and y.max() > 9:
            first = int(np.argmax(y > 9))
            raise ValueError(f"{paths[labels]}: labels must lie in 0..9, got {int(y[first])} "
                             f"at item {first}")
        parts.append((x, y))
    (x, y), (xt, yt) = parts
    if x.shape[0] <= n_train:
        return (_book_values(x), y.copy()), None, (_book_values(xt), yt.copy())
    return ((_book_values(x[:n_train]), y[:n_train].copy()),
            (_book_values(x[n_train:]), y[n_train:].copy()),
            (_book_values(xt), yt.copy()))


def _book_values(u8):
    """uint8 pixels -> a new float32 array u8/256 (exact: 1/256 is a power of two)."""
    out = u8.astype(np.float32)
    out *= np.float32(1 / 256)
    return out


def _unit_images(arr, name):
    """_images, then float32 (a fresh, writable array) with every pixel in [0, 1)."""
    x = _images(arr, name)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not x.flags.writeable or np.may_share_memory(x, arr):
        x = x.copy()
    if x.size:
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi >= 1:
            raise ValueError(f"{name} pixels must lie in [0, 1), the book's values u8/256, got "
                             f"values from {lo:g} to {hi:g} (store uint8 pixels 0..255 instead)")
    return x


def _split_mnist(npz):
    missing = [k for k in _KEYS if k not in npz.files]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)} "
                         f"(need {', '.join(_KEYS)}, optionally val_x and val_y; "
                         f"has {', '.join(npz.files) or 'none'})")
    val_keys = [k for k in ("val_x", "val_y") if k in npz.files]
    if len(val_keys) == 1:
        raise ValueError(f"has {val_keys[0]} without {'val_y' if val_keys[0] == 'val_x' else 'val_x'}")
    out = []
    for part in ("train", "val", "test"):
        if part == "val" and not val_keys:
            out.append(None)
            continue
        x = _unit_images(npz[f"{part}_x"], f"{part}_x")
        out.append((x, _labels(npz[f"{part}_y"], f"{part}_y", x.shape[0])))
    return tuple(out)


# ---- the book's mnist.pkl.gz, through an unpickler that builds NumPy arrays and nothing else ----
class _RefusedGlobal(pickle.UnpicklingError):
    pass


def _latin1_encode(obj, encoding="utf-8", errors="strict"):
    """codecs.encode restricted to what pickle protocols 0-2 use for bytes: str -> latin1."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise _RefusedGlobal(f"refusing _codecs.encode({type(obj).__name__}, {encoding!r}, "
                             f"{errors!r}): only latin1-encoded bytes are allowed")
    return obj.encode("latin1")


def _numpy_function(*candidates):
    """The first of (module, name) that imports, without touching numpy.core if numpy._core
    exists (NumPy 2 warns on numpy.core)."""
    for module, name in candidates:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                obj = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if obj is not None:
            return obj
    return None


@functools.lru_cache(maxsize=None)
def _pickle_globals():
    """(module, name) -> object: the only globals a MNIST pickle may refer to."""
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): _latin1_encode}
    reconstruct = _numpy_function(("numpy._core.multiarray", "_reconstruct"),
                                  ("numpy.core.multiarray", "_reconstruct"))
    frombuffer = _numpy_function(("numpy._core.numeric", "_frombuffer"),
                                 ("numpy.core.numeric", "_frombuffer"))
    for core in ("numpy._core", "numpy.core"):
        if reconstruct is not None:
            allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        if frombuffer is not None:
            allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    """Builds NumPy arrays, tuples, lists, numbers and strings; refuses every other global
    (so a pickle that would call os.system fails before anything runs)."""

    def find_class(self, module, name):
        obj = _pickle_globals().get((module, name))
        if obj is None:
            raise _RefusedGlobal(f"refusing to load {module}.{name}: an MNIST pickle may only "
                                 f"hold NumPy arrays")
        return obj

    def persistent_load(self, pid):
        raise _RefusedGlobal("refusing a persistent id: an MNIST pickle may only hold NumPy arrays")


def _describe(obj):
    if isinstance(obj, np.ndarray):
        return f"an array of shape {obj.shape} and dtype {obj.dtype}"
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of length {len(obj)}"
    return f"a {type(obj).__name__}"


def _load_pickle(path):
    with _open_data(path) as f:
        try:
            head = f.peek(4)[:4]
        except _GZIP_ERRORS as exc:
            raise ValueError(f"{path} is a damaged or truncated gzip file "
                             f"({type(exc).__name__}: {exc})") from None
        if head in (b"\x00\x00\x08\x03", b"\x00\x00\x08\x01"):
            raise ValueError(f"{path} is a single IDX file; pass the directory that holds "
                             f"all four ({', '.join(IDX_FILES)})")
        try:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
        except _RefusedGlobal as exc:
            raise ValueError(f"{path}: {exc}") from None
        except _GZIP_ERRORS as exc:
            raise ValueError(f"{path} is a damaged or truncated gzip file "
                             f"({type(exc).__name__}: {exc})") from None
        except MemoryError as exc:  # e.g. a pickled call np.ndarray(shape=(10**12,))
            raise ValueError(f"{path}: not enough memory to unpickle it "
                             f"({type(exc).__name__}: {exc})") from None
        except Exception as exc:  # UnpicklingError, EOFError, ValueError, TypeError ...
            raise ValueError(f"{path} is not a readable MNIST pickle "
                             f"({type(exc).__name__}: {exc})") from None
    layout = "((train_x, train_y), (val_x, val_y), (test_x, test_y))"
    if not isinstance(obj, (tuple, list)) or len(obj) != 3:
        raise ValueError(f"{path}: expected a pickled {layout}, got {_describe(obj)}")
    out = []
    for part, pair in zip(("train", "val", "test"), obj):
        if (not isinstance(pair, (tuple, list)) or len(pair) != 2
                or not all(isinstance(a, np.ndarray) for a in pair)):
            raise ValueError(f"{path}: expected a pickled {layout}; the {part} part is "
                             f"{_describe(pair)}, not a pair of arrays")
        for arr, name in zip(pair, (f"{part}_x", f"{part}_y")):
            # A pickled np.ndarray(shape, dtype, buffer, offset, strides) call can make a tiny
            # buffer look huge with zero strides; real pickled arrays are contiguous.
            if not (arr.flags.c_contiguous or arr.flags.f_contiguous):
                raise ValueError(f"{path}: {name} is not a contiguous array (strides "
                                 f"{arr.strides} for shape {arr.shape})")
        try:
            x = _unit_images(pair[0], f"{part}_x")
            out.append((x, _labels(pair[1], f"{part}_y", x.shape[0])))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return tuple(out)


def _check_n_train(n_train):
    if isinstance(n_train, (bool, np.bool_)) or not isinstance(n_train, numbers.Integral) or n_train < 0:
        raise ValueError(f"n_train must be an integer >= 0, got {n_train!r}")
    return int(n_train)


def load_mnist(path, *, n_train=BOOK_N_TRAIN):
    """Read MNIST from path: ``((x_train, y_train), val, (x_test, y_test))``, where ``val`` is
    ``(x_val, y_val)`` or ``None`` when the source has no validation images.

    Every ``x_*`` is a new, C-contiguous float32 array of shape (n, 784), one row-major 28x28
    image per row, with pixels in [0, 1): the book's values u8/256 (largest 255/256).  Every
    ``y_*`` is a new uint8 array of shape (n,) with labels 0..9.

    path may be

    * an ``.npz`` with keys train_x, train_y, test_x, test_y and optionally val_x, val_y (the
      keys of the book-split mnist.npz), images (n, 784) or (n, 28, 28), uint8 (scaled by
      1/256) or float (already in [0, 1)); without val_x/val_y, val is None;
    * a directory holding the four IDX files ``train-images-idx3-ubyte``,
      ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``,
      each plain or gzipped (``<name>.gz``; a plain file is preferred when both exist).  The
      headers are checked strictly: magic number 2051 (images) or 2049 (labels), 28x28
      images, as many labels as images, and exactly as many bytes as the header declares.
      The training images are split as the book splits them: the first ``n_train`` (default
      50,000) train, the rest (the last 10,000 of MNIST) validate; val is None when there
      are no more than ``n_train`` training images;
    * the book's ``mnist.pkl.gz`` (or the same pickle uncompressed): a pickle of
      ``((tr_x, tr_y), (va_x, va_y), (te_x, te_y))`` with float32 images and int64 labels,
      read with encoding='latin1' as the book's mnist_loader reads it, through an unpickler
      that builds NumPy arrays and refuses every other object (a pickle that would run code
      is refused before anything runs).  n_train does not apply.

    Raises OSError if path cannot be read, ValueError if it is not MNIST data in one of these
    forms (bad magic number, truncated or oversized file, wrong shapes, labels outside 0..9,
    pixels outside [0, 1), a refused pickle ...), with a message that names the file.
    """
    n_train = _check_n_train(n_train)
    path = os.path.expanduser(os.fspath(path))
    if os.path.isdir(path):
        return _load_idx_files(_idx_paths(path), n_train)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise OSError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if magic[:2] == b"PK":
        return _read_npz(path, _split_mnist)
    if magic[:2] == _GZIP_MAGIC or magic[:1] == b"\x80":
        return _load_pickle(path)
    if magic in (b"\x00\x00\x08\x03", b"\x00\x00\x08\x01"):
        raise ValueError(f"{path} is a single IDX file; pass the directory that holds all four "
                         f"({', '.join(IDX_FILES)})")
    raise ValueError(f"{path} is not MNIST data in a form load_mnist reads: expected an .npz, "
                     f"the book's mnist.pkl.gz, or a directory of the four IDX files")


# ---- fetch_mnist: download the IDX files once, verify them, cache them -----------------------
def _checksum_algorithm(name, hexdigest):
    if not isinstance(hexdigest, str) or len(hexdigest) not in (32, 64) or not all(
            c in "0123456789abcdefABCDEF" for c in hexdigest):
        raise ValueError(f"checksum for {name} must be an md5 (32 hex digits) or sha256 "
                         f"(64 hex digits), got {hexdigest!r}")
    return "md5" if len(hexdigest) == 32 else "sha256"


def _content_digest(path, algorithm, label=None):
    """Hex digest of path's content, gunzipped if it is a gzip file (label names it in errors)."""
    h = hashlib.new(algorithm, usedforsecurity=False)
    with _open_data(path) as f:
        while True:
            chunk = _read(f, _CHUNK, label or path)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def _download(opener, url, target, name, want, algorithm, timeout):
    """url -> a temporary file next to target; checked; then os.replace'd onto target."""
    with _atomic_path(target, suffix=".part") as tmp:
        with open(tmp, "wb") as out:
            try:
                with opener.open(url, timeout=timeout) as response:
                    size = 0
                    while True:
                        chunk = response.read(1 << 20)
                        if not chunk:
                            break
                        size += len(chunk)
                        if size > _MAX_DOWNLOAD:
                            raise ValueError(f"{url} is larger than {_MAX_DOWNLOAD} bytes; "
                                             f"not an MNIST file")
                        out.write(chunk)
            except urllib.error.HTTPError as exc:
                exc.close()
                raise OSError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
            except urllib.error.URLError as exc:
                raise OSError(f"cannot download {url}: {exc.reason}") from exc
            except (OSError, http.client.HTTPException) as exc:
                raise OSError(f"cannot download {url}: {type(exc).__name__}: {exc}") from exc
        try:
            got = _content_digest(tmp, algorithm, label=f"{name}.gz downloaded from {url}")
        except ValueError as exc:
            raise ValueError(f"{exc}; it was not saved") from None
        if got != want:
            raise ValueError(f"checksum mismatch for {name} downloaded from {url}: expected "
                             f"{algorithm} {want}, got {got}; the download was discarded")


def fetch_mnist(cache_dir, url=MNIST_URL, *, timeout=60.0, checksums=None, n_train=BOOK_N_TRAIN):
    """Download MNIST's four IDX files into cache_dir (once) and return load_mnist's result:
    ``((x_train, y_train), (x_val, y_val) or None, (x_test, y_test))``.

    For each name in IDX_FILES, ``<url>/<name>.gz`` is fetched with urllib (timeout in
    seconds per request) unless cache_dir already holds a valid ``<name>.gz``.  A file is
    valid when the checksum of its uncompressed content matches ``checksums[name]``, an md5
    or sha256 hex digest; the default, MNIST_MD5, holds the canonical MNIST md5s.  Each
    download goes to a temporary file in cache_dir, is verified, and is then renamed onto
    ``<name>.gz`` (os.replace), so the cache never holds a partial or unverified file; a
    cached file that fails the check is deleted and downloaded again.  cache_dir is created
    if needed ("~" is expanded).  url may be http(s):// or file://.

    Raises ValueError on a checksum mismatch (naming the file and both checksums; the bad
    download is discarded) or a download that is not a gzip file, OSError when a download
    or the cache fails, and whatever load_mnist raises for the verified files.
    """
    n_train = _check_n_train(n_train)
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not (
            math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https", "file"):
        raise ValueError(f"url must be an http://, https:// or file:// URL, got {url!r}")
    checksums = MNIST_MD5 if checksums is None else dict(checksums)
    if set(checksums) != set(IDX_FILES):
        raise ValueError(f"checksums must have exactly the keys {', '.join(IDX_FILES)}, "
                         f"got {', '.join(map(str, checksums)) or 'none'}")
    wanted = {name: (checksums[name].lower(), _checksum_algorithm(name, checksums[name]))
              for name in IDX_FILES}
    cache_dir = os.path.expanduser(os.fspath(cache_dir))
    try:
        os.makedirs(cache_dir, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create the cache directory {cache_dir}: {exc.strerror or exc}") from exc
    opener = urllib.request.build_opener()
    base = url.rstrip("/") + "/"
    paths = {}
    for name in IDX_FILES:
        want, algorithm = wanted[name]
        target = os.path.join(cache_dir, name + ".gz")
        if os.path.isfile(target):
            try:
                valid = _content_digest(target, algorithm) == want
            except ValueError:
                valid = False
            if valid:
                paths[name] = target
                continue
            os.unlink(target)
        _download(opener, base + name + ".gz", target, name, want, algorithm, timeout)
        paths[name] = target
    return _load_idx_files(paths, n_train)
