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

Limits.  The loaders read files from anywhere, so none of them allocates what a file merely
declares: every declared shape is checked against these limits first, compressed data are
inflated in chunks and never beyond what the limits allow, and a file that breaks a rule is
refused with a ValueError naming it.

* At most ``max_images`` images in all (train, validation and test together; default
  MAX_IMAGES, 100,000; MNIST has 70,000), and exactly one label per image.
* ``.npz``: the rules of NumPy's .npz format as ``cbackprop._npz`` checks them (stored or
  deflated ``.npy`` members with headers of at most 10,000 bytes, holding exactly the data
  they declare, no Python objects); images (n, 784) or (n, 28, 28) of uint8 or floats, labels
  (n,) of integers, checked from the headers before any data is read.
* IDX files: the header's counts are checked before the data is read; a plain file must be
  exactly as long as its header says, a gzipped one is inflated only up to that length.
* The book's pickle: at most ``max_images`` * 6,280 bytes + 1 MiB of pickle data (784
  float64 pixels and a label per image) and 10,000 pickle operations; only NumPy arrays,
  their dtypes and the latin1 bytes of protocols 0-2 are built, through numpy's own
  reconstructors and ``numpy.dtype``; no other object is created, called or has its state
  set (so a refused file cannot change any module).
* fetch_mnist: a download or a cached file that inflates to more than an IDX file of
  ``max_images`` images is refused before its checksum is compared.

So refusing a file takes memory in proportion to the data it really holds, never to what
it declares (a deflated stream holds at most about 1,032 times its size).
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
from typing import NamedTuple

import numpy as np

from . import _npz
from ._atomic import atomic_path as _atomic_path

__all__ = ["load_sample", "load_npz", "load_mnist", "fetch_mnist", "one_hot", "SAMPLE_FILE",
           "IDX_FILES", "MNIST_MD5", "MNIST_URL", "MAX_IMAGES"]

SAMPLE_FILE = "mnist_sample.npz"
N_PIXELS = 784
#: The default limit on the images one call of a loader reads (train, validation and test).
MAX_IMAGES = 100_000
_KEYS = ("train_x", "train_y", "test_x", "test_y")


def _images(arr, name):
    """uint8 images -> float32 u8/256 rows of 784; float images -> float32/float64 rows as given."""
    arr = np.asarray(arr)
    _image_shape(arr.shape, name)
    arr = arr.reshape(arr.shape[0], N_PIXELS)
    if arr.dtype == np.uint8:
        return _book_values(arr)
    if arr.dtype.kind == "f":
        with np.errstate(over="ignore"):   # beyond float32: reported below, as given
            out = np.ascontiguousarray(arr, dtype=np.float64 if arr.dtype == np.float64 else np.float32)
        if not np.isfinite(out).all():
            i = int(np.flatnonzero(~np.isfinite(out))[0])
            where = tuple(int(j) for j in np.unravel_index(i, out.shape))
            raise ValueError(f"{name} must hold only finite values, got {_as_given(arr[where])} at "
                             f"index {where}")
        return out
    raise ValueError(f"{name} must be uint8 pixels (scaled by 1/256) or floats, got dtype {arr.dtype}")


def _as_given(value, limit=40):
    """str(value) shortened (a NumPy scalar as it prints: np.longdouble 1e4000 as 1e+4000)."""
    text = str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _image_shape(shape, name):
    """ValueError unless shape is (n, 784) or (n, 28, 28)."""
    if not (len(shape) == 2 and shape[1] == N_PIXELS or len(shape) == 3 and shape[1:] == (28, 28)):
        raise ValueError(f"{name} must have shape (n, {N_PIXELS}) or (n, 28, 28), got shape {tuple(shape)}")


def _labels(arr, name, n, n_classes=10):
    arr = np.asarray(arr)
    _label_kind(arr.dtype, arr.shape, name, n)
    if n and (arr.min() < 0 or arr.max() >= n_classes):
        bad = arr.min() if arr.min() < 0 else arr.max()
        raise ValueError(f"{name} must lie in [0, {n_classes}), got {bad}")
    return arr.astype(np.uint8)


def _label_kind(dtype, shape, name, n):
    if dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer class labels, got dtype {dtype}")
    if tuple(shape) != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the images, got shape {tuple(shape)}")


def _check_max_images(max_images):
    if isinstance(max_images, (bool, np.bool_)) or not isinstance(max_images, numbers.Integral) \
            or max_images < 0:
        raise ValueError(f"max_images must be an integer >= 0, got {max_images!r}")
    return int(max_images)


def _too_many(n, what, max_images):
    """ValueError's message for n declared images beyond max_images."""
    return (f"{what} {n} images in all, more than this loader accepts (max_images={max_images}; "
            f"MNIST has 70,000)")


def _npz_parts(archive, parts, max_images):
    """{part: (x, y)} from the members <part>_x, <part>_y of an open _npz.Archive: every
    header checked (shapes, kinds, one label per image, at most max_images images in all)
    before any data is read, then labels, then images, as stored."""
    headers = {}
    for part in parts:
        hx, hy = archive.header(f"{part}_x"), archive.header(f"{part}_y")
        _image_shape(hx.shape, f"{part}_x")
        if hx.dtype != np.uint8 and hx.dtype.kind != "f":
            raise ValueError(f"{part}_x must be uint8 pixels (scaled by 1/256) or floats, got dtype {hx.dtype}")
        _label_kind(hy.dtype, hy.shape, f"{part}_y", hx.shape[0])
        headers[part] = hx, hy
    total = sum(hx.shape[0] for hx, _ in headers.values())
    if total > max_images:
        raise ValueError(_too_many(total, "the file declares", max_images))
    labels = {part: archive.read(f"{part}_y", hy) for part, (_, hy) in headers.items()}
    return {part: (archive.read(f"{part}_x", hx), labels[part]) for part, (hx, _) in headers.items()}


def _missing_keys(keys, extra=""):
    missing = [k for k in _KEYS if k not in keys]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)} (need {', '.join(_KEYS)}{extra}; "
                         f"has {', '.join(sorted(keys)) or 'none'})")


def _split(archive, max_images):
    _missing_keys(archive.keys)
    arrays = _npz_parts(archive, ("train", "test"), max_images)
    out = []
    for part, (x, y) in arrays.items():
        x = _images(x, f"{part}_x")
        out.append((x, _labels(y, f"{part}_y", x.shape[0])))
    return tuple(out)


def _open_file(path):
    """path opened for binary reading: OSError if it cannot be, ValueError unless it is a
    regular file (a FIFO would block, a device never end)."""
    try:
        return _npz.open_regular(path)
    except _npz.Invalid as exc:
        raise ValueError(f"{path}: {exc}") from None
    except OSError as exc:
        raise _cannot_read(path, exc) from exc


def _cannot_read(path, exc):
    """exc (from opening path) as the same kind of OSError, with its errno, saying "cannot
    read <path>: <reason>"."""
    err = type(exc)(f"cannot read {path}: {exc.strerror or exc}")
    err.errno = exc.errno
    return err


def _read_npz(path, split, max_images):
    """split(archive, max_images) of the .npz at path; OSError if it cannot be read,
    ValueError naming it if it is not a suitable .npz."""
    with _open_file(path) as f:
        magic = f.read(4)
        if not _npz.is_zip(magic):
            what = "a single .npy array" if magic == b"\x93NUM" else "not a zip archive"
            raise ValueError(f"{path} is not an .npz file ({what})")
        f.seek(0)
        try:
            with _npz.Archive(f, os.fstat(f.fileno()).st_size) as archive:
                return split(archive, max_images)
        except ValueError as exc:     # _npz.Invalid and the checks of split
            raise ValueError(f"{path}: {exc}") from None
        except _npz.UNREADABLE as exc:  # a damaged archive: BadZipFile, zlib.error, EOFError ...
            raise ValueError(f"{path} is not a readable .npz file ({type(exc).__name__}: {exc})") from exc


def load_npz(path, *, max_images=MAX_IMAGES):
    """((x_train, y_train), (x_test, y_test)) from an .npz with keys train_x, train_y, test_x,
    test_y, such as the book-split ``mnist.npz``.

    Images may be (n, 784) or (n, 28, 28); uint8 pixels become the book's float32 values
    u8/256, float pixels are kept (as float32 or float64).  Labels must be integers in 0..9
    and come back as uint8.  At most max_images images in all (see the module's limits).
    Raises OSError if the file cannot be read and ValueError if it is not a suitable .npz.
    (load_mnist reads the same files, and the validation split too.)
    """
    return _read_npz(os.fspath(path), _split, _check_max_images(max_images))


def load_sample():
    """The embedded class-balanced MNIST sample: ((x_train, y_train), (x_test, y_test)).

    x_train float32 (10000, 784), x_test float32 (2000, 784): the book's values u8/256 in
    [0, 255/256]; y_train (10000,), y_test (2000,): uint8 labels 0..9, 1,000 resp. 200 per
    class.  Each call reads the file again and returns new arrays.
    """
    ref = resources.files(__package__).joinpath("data").joinpath(SAMPLE_FILE)
    with resources.as_file(ref) as path:
        return _read_npz(os.fspath(path), _split, MAX_IMAGES)


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
_CHUNK = 1 << 20
_GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


def _idx_bytes(max_images):
    """The length of the largest IDX file load_mnist accepts: header and max_images images."""
    return 16 + max_images * N_PIXELS


@contextlib.contextmanager
def _open_data(path):
    """A binary stream over path's content, gunzipped when the file starts with the gzip magic."""
    with _open_file(path) as f:
        gz = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        if gz:
            with gzip.GzipFile(fileobj=f, mode="rb") as g:
                yield g
        else:
            yield f


def _chunks(f, n, path):
    """Up to n bytes of f (fewer only at the end of the data), as a list of chunks: memory
    follows the data that is there, not n."""
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
    return chunks


def _read(f, n, path):
    return b"".join(_chunks(f, n, path))


def _joined(chunks):
    """The chunks as one new uint8 array, each chunk dropped once copied."""
    out = np.empty(sum(map(len, chunks)), dtype=np.uint8)
    pos = 0
    for i, chunk in enumerate(chunks):
        out[pos:pos + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
        pos += len(chunk)
        chunks[i] = None
    return out


class _IdxHeader(NamedTuple):
    path: str
    count: int          # images or labels
    length: int         # bytes of the header
    n_bytes: int        # bytes of the data
    what: str           # "40 images of 28x28", "40 labels"


def _idx_header(path, magic, max_images):
    """The checked header of one IDX file (magic, 28x28 images, at most max_images items); a
    plain file's length is checked against it too, before any data is read."""
    kind, ndim = ("image", 3) if magic == _IMAGES_MAGIC else ("label", 1)
    length = 4 + 4 * ndim
    with _open_data(path) as f:
        head = _read(f, length, path)
        if len(head) >= 4:
            got = int.from_bytes(head[:4], "big")
            if got != magic:
                raise ValueError(f"{path} is not an IDX {kind} file: magic number {got} "
                                 f"(0x{got:08x}), expected {magic} (0x{magic:08x})")
        if len(head) < length:
            raise ValueError(f"{path} is truncated: {len(head)} bytes, shorter than the "
                             f"{length}-byte header of an IDX {kind} file")
        dims = struct.unpack(f">{ndim}I", head[4:])
        if ndim == 3 and dims[1:] != (28, 28):
            raise ValueError(f"{path}: MNIST images are 28x28, the header says {dims[1]}x{dims[2]}")
        if dims[0] > max_images:
            raise ValueError(f"{path}: the header declares {dims[0]} {kind}s, more than this loader "
                             f"accepts (max_images={max_images} in all; MNIST has 70,000)")
        header = _IdxHeader(path, dims[0], length, math.prod(dims),
                            f"{dims[0]} images of 28x28" if ndim == 3 else f"{dims[0]} labels")
        if not isinstance(f, gzip.GzipFile):
            _idx_length(header, os.fstat(f.fileno()).st_size - length)
    return header


def _idx_length(header, got):
    """ValueError unless got, the bytes after the header, are what the header declares."""
    if got < header.n_bytes:
        raise ValueError(f"{header.path} is truncated: the header declares {header.what}, which need "
                         f"{header.length + header.n_bytes} bytes, but the data ends after "
                         f"{header.length + got}")
    if got > header.n_bytes:
        raise ValueError(f"{header.path} is longer than its header declares: {header.what} need "
                         f"exactly {header.length + header.n_bytes} bytes")


def _idx_data(header):
    """The uint8 data of the IDX file that header describes, read in chunks up to what the
    header declares (and one byte more, to refuse a longer file)."""
    with _open_data(header.path) as f:
        _read(f, header.length, header.path)
        chunks = _chunks(f, header.n_bytes, header.path)
        _idx_length(header, sum(map(len, chunks)) + len(_read(f, 1, header.path)))
    return _joined(chunks)


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


def _load_idx_files(paths, n_train, max_images):
    """The four IDX files' headers first (counts, lengths of plain files, at most max_images
    images in all), then the labels (0..9), then the images."""
    pairs = ((IDX_FILES[0], IDX_FILES[1]), (IDX_FILES[2], IDX_FILES[3]))
    headers = []
    for images, labels in pairs:
        hx = _idx_header(paths[images], _IMAGES_MAGIC, max_images)
        hy = _idx_header(paths[labels], _LABELS_MAGIC, max_images)
        if hy.count != hx.count:
            raise ValueError(f"{paths[labels]} holds {hy.count} labels but {paths[images]} holds "
                             f"{hx.count} images")
        headers.append((hx, hy))
    total = sum(hx.count for hx, _ in headers)
    if total > max_images:
        raise ValueError(f"{paths[IDX_FILES[0]]} and {paths[IDX_FILES[2]]}: the headers declare {total} "
                         f"images, more than this loader accepts (max_images={max_images} in all)")
    labels = []
    for _, hy in headers:
        y = _idx_data(hy)
        if y.size and y.max() > 9:
            first = int(np.argmax(y > 9))
            raise ValueError(f"{hy.path}: labels must lie in 0..9, got {int(y[first])} at item {first}")
        labels.append(y)
    (x, y), (xt, yt) = [(_idx_data(hx).reshape(hx.count, N_PIXELS), y)
                        for (hx, _), y in zip(headers, labels)]
    if x.shape[0] <= n_train:
        return (_book_values(x), y), None, (_book_values(xt), yt)
    return ((_book_values(x[:n_train]), y[:n_train].copy()),
            (_book_values(x[n_train:]), y[n_train:].copy()),
            (_book_values(xt), yt))


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


def _split_mnist(archive, max_images):
    _missing_keys(archive.keys, ", optionally val_x and val_y")
    val_keys = [k for k in ("val_x", "val_y") if k in archive.keys]
    if len(val_keys) == 1:
        raise ValueError(f"has {val_keys[0]} without {'val_y' if val_keys[0] == 'val_x' else 'val_x'}")
    arrays = _npz_parts(archive, ("train", "val", "test") if val_keys else ("train", "test"), max_images)
    out = []
    for part in ("train", "val", "test"):
        if part not in arrays:
            out.append(None)
            continue
        x = _unit_images(arrays[part][0], f"{part}_x")
        out.append((x, _labels(arrays[part][1], f"{part}_y", x.shape[0])))
    return tuple(out)


# ---- the book's mnist.pkl.gz, through an unpickler that builds NumPy arrays and nothing else ----
_MAX_PICKLE_OPS = 10_000        # opcodes (the book's pickle has about 60)


def _pickle_bytes(max_images):
    """The most pickle data load_mnist reads: 784 float64 pixels and an int64 label per image,
    and 1 MiB for the rest."""
    return max_images * (N_PIXELS * 8 + 8) + (1 << 20)


class _RefusedGlobal(pickle.UnpicklingError):
    pass


def _latin1_encode(obj, encoding="utf-8", errors="strict"):
    """codecs.encode restricted to what pickle protocols 0-2 use for bytes: str -> latin1."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise _RefusedGlobal(f"refusing _codecs.encode({type(obj).__name__}, {_as_given(repr(encoding))}, "
                             f"{_as_given(repr(errors))}): only latin1-encoded bytes are allowed")
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


class _Budget:
    """The pickle's (decompressed) stream, with a limit on the bytes it delivers in all: a
    request beyond what is left is refused before anything is read or allocated."""

    def __init__(self, f, limit):
        self._f, self.left, self.limit = f, limit, limit

    def _take(self, n):
        if n > self.left:
            raise _RefusedGlobal(f"the pickle holds more than {self.limit} bytes of data, the most "
                                 f"max_images allows (a request for {n} bytes)")
        self.left -= n

    def read(self, n=-1):
        self._take(self.left + 1 if n is None or n < 0 else n)
        return self._f.read(n)

    def readinto(self, buf):
        self._take(len(buf))
        return self._f.readinto(buf)

    def readline(self):
        line = self._f.readline(self.left + 1)
        self._take(len(line))
        return line


def _simple_dtype(dt):
    """dt if it is a plain number dtype (bool, integer, float), else _RefusedGlobal."""
    if dt.kind not in "biuf" or dt.subdtype is not None or dt.names is not None or dt.hasobject:
        raise _RefusedGlobal(f"refusing dtype {_as_given(dt)}: an MNIST pickle holds arrays of numbers")
    return dt


def _shape(shape):
    if not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape):
        raise _RefusedGlobal(f"refusing the array shape {_as_given(repr(shape))}")
    return shape


def _counted(load_op):
    """load_op, counting the opcodes of the unpickler it runs on against _MAX_PICKLE_OPS."""
    def op(self):
        self._ops += 1
        if self._ops > _MAX_PICKLE_OPS:
            raise _RefusedGlobal(f"the pickle has more than {_MAX_PICKLE_OPS} operations; the "
                                 f"book's has about 60")
        load_op(self)
    return op


class _ArrayUnpickler(pickle._Unpickler):
    """Builds NumPy arrays, tuples, lists, numbers and strings, and nothing else: every global
    but numpy's array reconstructors, numpy.dtype, numpy.ndarray (as an argument) and latin1
    encoding is refused (so a pickle that would call os.system fails before anything runs);
    only the reconstructors, numpy.dtype and the encoding may be called, with checked
    arguments; BUILD may set the state of the arrays and dtypes built here only (never an
    attribute of a global); NEWOBJ, OBJ and INST are refused; the data read and the arrays
    allocated count against the stream's budget, the opcodes against _MAX_PICKLE_OPS.

    The pure-Python unpickler, so that every opcode is in our hands: the C one allocates a
    BINBYTES8's declared length before reading it, and cannot refuse BUILD."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, budget):
        super().__init__(budget, encoding="latin1")
        self._budget, self._made, self._ops = budget, {}, 0
        self._calls = {id(np.dtype): self._dtype, id(_latin1_encode): _latin1_encode}
        for (_, name), fn in _pickle_globals().items():
            if name == "_reconstruct":
                self._calls[id(fn)] = functools.partial(self._reconstruct, fn)
            elif name == "_frombuffer":
                self._calls[id(fn)] = self._frombuffer

    def find_class(self, module, name):
        obj = _pickle_globals().get((module, name))
        if obj is None:
            raise _RefusedGlobal(f"refusing to load {_as_given(module, 60)}.{_as_given(name, 60)}: an "
                                 f"MNIST pickle may only hold NumPy arrays")
        return obj

    def persistent_load(self, pid):
        raise _RefusedGlobal("refusing a persistent id: an MNIST pickle may only hold NumPy arrays")

    def _made_here(self, obj):
        self._made[id(obj)] = obj
        return obj

    def _reconstruct(self, reconstruct, subtype, shape, dtype):
        """numpy's _reconstruct(ndarray, shape, dtype) (shape (0,) in numpy's pickles: the
        data come with BUILD), its allocation counted against the budget."""
        if subtype is not np.ndarray or not isinstance(dtype, (str, bytes)):
            raise _RefusedGlobal(f"refusing _reconstruct({_as_given(repr(subtype))}, ..., "
                                 f"{_as_given(repr(dtype))}): only numpy.ndarray of a dtype name")
        dt = _simple_dtype(np.dtype(dtype.decode("latin1") if isinstance(dtype, bytes) else dtype))
        self._budget._take(math.prod(_shape(shape)) * dt.itemsize)
        return self._made_here(reconstruct(np.ndarray, shape, dt))

    def _frombuffer(self, buf, dtype, shape, order):
        if not isinstance(buf, (bytes, bytearray)) or self._made.get(id(dtype)) is not dtype:
            raise _RefusedGlobal("refusing _frombuffer on anything but pickled bytes and a pickled dtype")
        arr = np.frombuffer(buf, dtype=_simple_dtype(dtype)).reshape(_shape(shape), order=order)
        return self._made_here(arr)

    def _dtype(self, obj, align=False, copy=True):
        if not isinstance(obj, (str, bytes)):
            raise _RefusedGlobal(f"refusing numpy.dtype({_as_given(repr(obj))}): an MNIST pickle holds "
                                 f"arrays of numbers")
        return self._made_here(_simple_dtype(np.dtype(obj, bool(align), True)))   # a copy, never numpy's own

    def load_reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        call = self._calls.get(id(func))
        if call is None or not isinstance(args, tuple):
            what = f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', '')}".strip(".")
            raise _RefusedGlobal(f"refusing to call {_as_given(what or repr(func), 60)}: an MNIST pickle "
                                 f"builds arrays through numpy's reconstructors only")
        self.stack[-1] = call(*args)

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if self._made.get(id(inst)) is not inst:
            raise _RefusedGlobal(f"refusing to set the state of {_describe(inst)}: only the arrays and "
                                 f"dtypes this pickle built may have state")
        inst.__setstate__(state)
        if isinstance(inst, np.dtype):
            _simple_dtype(inst)
        elif inst.dtype.hasobject:
            raise _RefusedGlobal("refusing an array of Python objects")

    def load_bytearray8(self):
        (n,) = struct.unpack("<Q", self.read(8))
        self.append(bytearray(self.read(n)))

    def _refuse_object(self):
        raise _RefusedGlobal("refusing to create an object (NEWOBJ, OBJ or INST): an MNIST pickle "
                             "may only hold NumPy arrays")

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8
    for _op in (pickle.NEWOBJ, pickle.NEWOBJ_EX, pickle.OBJ, pickle.INST):
        dispatch[_op[0]] = _refuse_object
    del _op

    dispatch = {code: _counted(fn) for code, fn in dispatch.items()}


def _describe(obj):
    if isinstance(obj, np.ndarray):
        return f"an array of shape {obj.shape} and dtype {obj.dtype}"
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of length {len(obj)}"
    return f"a {type(obj).__name__}"


def _load_pickle(path, max_images):
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
            obj = _ArrayUnpickler(_Budget(f, _pickle_bytes(max_images))).load()
        except _RefusedGlobal as exc:
            raise ValueError(f"{path}: {exc}") from None
        except _GZIP_ERRORS as exc:
            raise ValueError(f"{path} is a damaged or truncated gzip file "
                             f"({type(exc).__name__}: {exc})") from None
        except MemoryError as exc:
            raise ValueError(f"{path}: not enough memory to unpickle it "
                             f"({type(exc).__name__}: {exc})") from None
        except Exception as exc:  # UnpicklingError, EOFError, ValueError, TypeError ...
            raise ValueError(f"{path} is not a readable MNIST pickle "
                             f"({type(exc).__name__}: {_as_given(exc, 200)})") from None
    return _pickled_parts(path, obj, max_images)


def _pickled_parts(path, obj, max_images):
    """((x, y), (x, y), (x, y)) of the unpickled obj, checked."""
    layout = "((train_x, train_y), (val_x, val_y), (test_x, test_y))"
    if not isinstance(obj, (tuple, list)) or len(obj) != 3:
        raise ValueError(f"{path}: expected a pickled {layout}, got {_describe(obj)}")
    for part, pair in zip(("train", "val", "test"), obj):
        if (not isinstance(pair, (tuple, list)) or len(pair) != 2
                or not all(isinstance(a, np.ndarray) for a in pair)):
            raise ValueError(f"{path}: expected a pickled {layout}; the {part} part is "
                             f"{_describe(pair)}, not a pair of arrays")
        for arr, name in zip(pair, (f"{part}_x", f"{part}_y")):
            if not (arr.flags.c_contiguous or arr.flags.f_contiguous):
                raise ValueError(f"{path}: {name} is not a contiguous array (strides "
                                 f"{arr.strides} for shape {arr.shape})")
    total = sum(pair[0].shape[0] if pair[0].ndim else 0 for pair in obj)
    if total > max_images:
        raise ValueError(f"{path}: " + _too_many(total, "the pickle holds", max_images))
    out = []
    for part, pair in zip(("train", "val", "test"), obj):
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


def load_mnist(path, *, n_train=BOOK_N_TRAIN, max_images=MAX_IMAGES):
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

    At most max_images images are read in all (see the module's limits: every declared
    count and shape is checked before the data are read).

    Raises OSError if path cannot be read, ValueError if it is not MNIST data in one of these
    forms (bad magic number, truncated or oversized file, wrong shapes, labels outside 0..9,
    pixels outside [0, 1), more images than max_images, a refused pickle ...), with a message
    that names the file.
    """
    n_train = _check_n_train(n_train)
    max_images = _check_max_images(max_images)
    path = os.path.expanduser(os.fspath(path))
    if os.path.isdir(path):
        return _load_idx_files(_idx_paths(path), n_train, max_images)
    with _open_file(path) as f:
        magic = f.read(4)
    if magic[:2] == b"PK":
        return _read_npz(path, _split_mnist, max_images)
    if magic[:2] == _GZIP_MAGIC or magic[:1] == b"\x80":
        return _load_pickle(path, max_images)
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


def _content_digest(path, algorithm, label=None, limit=_idx_bytes(MAX_IMAGES)):
    """Hex digest of path's content, gunzipped if it is a gzip file (label names it in
    errors); ValueError once the content passes limit bytes (a gzip bomb is not inflated
    further)."""
    h = hashlib.new(algorithm, usedforsecurity=False)
    size = 0
    with _open_data(path) as f:
        for chunk in iter(lambda: _read(f, _CHUNK, label or path), b""):
            size += len(chunk)
            if size > limit:
                raise ValueError(f"{label or path} holds more than {limit} bytes, more than an IDX file "
                                 f"of max_images images; not an MNIST file")
            h.update(chunk)
    return h.hexdigest()


def _download(opener, url, target, name, want, algorithm, timeout, limit):
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
                        if size > limit + (1 << 20):   # gzip adds far less than 1 MiB
                            raise ValueError(f"{url} is larger than {limit + (1 << 20)} bytes; "
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
            got = _content_digest(tmp, algorithm, label=f"{name}.gz downloaded from {url}", limit=limit)
        except ValueError as exc:
            raise ValueError(f"{exc}; it was not saved") from None
        if got != want:
            raise ValueError(f"checksum mismatch for {name} downloaded from {url}: expected "
                             f"{algorithm} {want}, got {got}; the download was discarded")


def fetch_mnist(cache_dir, url=MNIST_URL, *, timeout=60.0, checksums=None, n_train=BOOK_N_TRAIN,
                max_images=MAX_IMAGES):
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
    download is discarded), a download that is not a gzip file or holds more than an IDX
    file of max_images images (checked while it is inflated, before the checksum), OSError
    when a download or the cache fails, and whatever load_mnist raises for the verified
    files (with max_images).
    """
    n_train = _check_n_train(n_train)
    max_images = _check_max_images(max_images)
    limit = _idx_bytes(max_images)
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
                valid = _content_digest(target, algorithm, limit=limit) == want
            except ValueError:
                valid = False
            if valid:
                paths[name] = target
                continue
            os.unlink(target)
        _download(opener, base + name + ".gz", target, name, want, algorithm, timeout, limit)
        paths[name] = target
    return _load_idx_files(paths, n_train, max_images)
