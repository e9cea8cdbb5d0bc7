"""Data and input files for the command line (``cbackprop train|evaluate|predict``).

A data set is a dict ``{split: (x, y)}`` with split in ``train``, ``val``, ``test``:

* ``x``: one sample per row, ``(n, n_in)``, or ``(n, d1, d2, ...)`` (flattened to
  ``d1*d2*...`` inputs); uint8 values are pixels and become the book's ``u8/256``, floats
  are taken as they are;
* ``y``: ``(n,)`` integer class labels ``0..k-1``, or ``(n, n_out)`` target rows (one-hot
  or any real targets; the accuracy then compares the arg-max).

They come from an ``.npz`` with members ``train_x``, ``train_y``, ``val_x``, ``val_y``,
``test_x``, ``test_y`` (any subset of whole pairs), a directory of ``.npy`` files with those
names (read memory-mapped, so under MPI each rank reads only its rows), a directory of the
four MNIST IDX files, or the book's ``mnist.pkl.gz`` (the last two through
:func:`cbackprop.datasets.load_mnist`).  Every problem is a :class:`DataError` (a
ValueError) whose message names the file, the member, the rule and the value.

Before a member of an ``.npz`` is read, its header is checked: no object arrays, and the
declared size must agree with the archive's record of it and fit in this machine's memory,
so a small hostile file cannot make the reader allocate what it declares.  Every reader
takes ``max_images`` (the command line's ``--max-images``, default
:data:`cbackprop.datasets.MAX_IMAGES`): at most that many samples in all (the rows of the
``*_x`` arrays, or of the INPUT files), checked from the headers before any data is read;
the MNIST formats pass it to :func:`cbackprop.datasets.load_mnist`.
"""
from __future__ import annotations

import math
import os
import zipfile

import numpy as np

from ._model import _physical_memory
from .datasets import MAX_IMAGES

SPLITS = ("train", "val", "test")
SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".pbm", ".ppm", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """A data or input file the command line cannot use."""


# ---- raw arrays from files ----------------------------------------------------------------------
def _magic(path):
    try:
        with open(path, "rb") as f:
            return f.read(6)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None


def _member_header(zf, info, path):
    """(shape, dtype) of one .npy member from its header, checked before any data is read."""
    with zf.open(info) as f:
        try:
            major, _ = np.lib.format.read_magic(f)
            read = {1: np.lib.format.read_array_header_1_0}.get(major, np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(f)
            header = f.tell() if f.seekable() else None
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: member {info.filename!r} is not a readable .npy array ({exc})") from None
    if dtype.hasobject:
        raise DataError(f"{path}: member {info.filename!r} holds Python objects (dtype {dtype}); "
                        f"only numeric arrays are read")
    nbytes = math.prod(shape) * dtype.itemsize
    if header is not None and header + nbytes != info.file_size:
        raise DataError(f"{path}: member {info.filename!r} declares shape {shape} of {dtype} "
                        f"({nbytes} bytes) but the archive records {info.file_size - header}")
    return shape, dtype, nbytes


def _too_many(path, n, max_images, who="{path} holds"):
    return DataError(f"{who.format(path=path)} {n} samples, more than --max-images allows ({max_images}); give a "
                     f"larger --max-images to read it")


def read_npz(path, max_images=MAX_IMAGES, counted=None):
    """{key: array} of every member of an .npz, each header checked before it is read: at
    most max_images rows in all in the members counted(key) is true of (default: the
    *_x members)."""
    counted = counted or (lambda key: key.endswith("_x"))
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable .npz file ({exc})") from None
    with zf:
        members = [i for i in zf.infolist() if i.filename.endswith(".npy")]
        total = rows = 0
        for info in members:
            shape, _, nbytes = _member_header(zf, info, path)
            total += nbytes
            if counted(info.filename[:-4]):
                rows += shape[0] if shape else 1
        if rows > max_images:
            raise _too_many(path, rows, max_images)
        if total > _physical_memory():
            raise DataError(f"{path} declares {total / 2**30:.3g} GiB of arrays, more than this machine's "
                            f"memory ({_physical_memory() / 2**30:.3g} GiB)")
        out = {}
        for info in members:
            try:
                with zf.open(info) as f:
                    out[info.filename[:-4]] = np.lib.format.read_array(f, allow_pickle=False)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
                raise DataError(f"{path}: member {info.filename!r} is damaged ({exc})") from None
        return out


def _read_npy_dir(path, max_images=MAX_IMAGES):
    """{key: memory-mapped array} of the <split>_x.npy / <split>_y.npy files in a directory
    (at most max_images rows of *_x in all)."""
    out = {}
    for split in SPLITS:
        for part in ("x", "y"):
            file = os.path.join(path, f"{split}_{part}.npy")
            if os.path.isfile(file):
                try:
                    out[f"{split}_{part}"] = np.load(file, mmap_mode="r", allow_pickle=False)
                except (ValueError, OSError, EOFError) as exc:
                    raise DataError(f"{file} is not a readable .npy array ({exc})") from None
    rows = sum(a.shape[0] if a.ndim else 1 for k, a in out.items() if k.endswith("_x"))
    if rows > max_images:
        raise _too_many(path, rows, max_images)
    return out


def _has_idx_files(path):
    from .datasets import IDX_FILES
    return any(os.path.isfile(os.path.join(path, n + s)) for n in IDX_FILES for s in ("", ".gz"))


def _from_mnist(path, max_images=MAX_IMAGES):
    from . import datasets
    try:
        train, val, test = datasets.load_mnist(path, max_images=max_images)
    except (OSError, ValueError) as exc:
        raise DataError(str(exc)) from None
    return {k: v for k, v in (("train", train), ("val", val), ("test", test)) if v is not None}


def _pairs(arrays, path):
    """{split: (x, y)} from {key: array}: whole pairs only, at least one."""
    out = {}
    for split in SPLITS:
        x, y = arrays.get(f"{split}_x"), arrays.get(f"{split}_y")
        if (x is None) != (y is None):
            have, lack = (f"{split}_x", f"{split}_y") if y is None else (f"{split}_y", f"{split}_x")
            raise DataError(f"{path} has {have} without {lack}")
        if x is not None:
            out[split] = (x, y)
    if not out:
        keys = ", ".join(sorted(arrays)) or "none"
        raise DataError(f"{path} holds none of the pairs train_x/train_y, val_x/val_y, test_x/test_y "
                        f"(it has {keys})")
    return out


def read_data(path, max_images=MAX_IMAGES):
    """({split: (x, y)} of raw arrays, "images" for MNIST files else "samples") from --data
    PATH (see the module docstring), at most max_images samples in all."""
    path = os.path.expanduser(os.fspath(path))
    if os.path.isdir(path):
        if _has_idx_files(path):
            return _from_mnist(path, max_images), "images"
        arrays = _read_npy_dir(path, max_images)
        if not arrays:
            raise DataError(f"{path} is a directory without train_x.npy, test_x.npy ... or the MNIST IDX files")
        return _pairs(arrays, path), "samples"
    magic = _magic(path)
    if magic[:2] == b"PK":
        return _pairs(read_npz(path, max_images), path), "samples"
    if magic[:2] == b"\x1f\x8b" or magic[:1] == b"\x80":
        return _from_mnist(path, max_images), "images"
    if magic == b"\x93NUMPY":
        raise DataError(f"{path} is a single .npy array, which holds no labels; give an .npz with "
                        f"train_x, train_y, test_x, test_y ... or a directory of .npy files with those names")
    raise DataError(f"{path} is not an .npz, a directory of .npy or MNIST IDX files, or mnist.pkl.gz")


# ---- checking and converting ---------------------------------------------------------------------
def n_inputs(x, name):
    """Inputs per sample of x (n, d1, d2, ...): d1*d2*..., checked to be a usable array."""
    if x.ndim < 2:
        raise DataError(f"{name} must have one sample per row, shape (n, inputs), got shape {x.shape}")
    if x.dtype != np.uint8 and x.dtype.kind != "f":
        raise DataError(f"{name} must hold uint8 pixels (scaled by 1/256) or floats, got dtype {x.dtype}")
    return math.prod(x.shape[1:])


def n_outputs(y, name, n):
    """Outputs y implies: max label + 1 for labels (n,), the width for targets (n, k)."""
    if y.shape[:1] != (n,) or y.ndim not in (1, 2):
        raise DataError(f"{name} must have shape ({n},) (labels) or ({n}, outputs) (targets) to match "
                        f"the samples, got shape {y.shape}")
    if y.ndim == 2:
        if y.dtype.kind not in "iuf":
            raise DataError(f"{name} target rows must be numbers, got dtype {y.dtype}")
        return y.shape[1]
    if y.dtype.kind not in "iu":
        raise DataError(f"{name} labels must be integers, got dtype {y.dtype}")
    if n == 0:
        return 0
    lo = int(y.min())
    if lo < 0:
        raise DataError(f"{name} labels must be >= 0, got {lo}")
    return int(y.max()) + 1


def shape_of(data, source):
    """(n_in, n_out) the data set implies, every pair checked to agree."""
    n_in, n_out, targets = None, 0, None
    for split, (x, y) in data.items():
        name = f"{source}: {split}"
        k = n_inputs(x, f"{name}_x")
        if n_in is not None and k != n_in:
            raise DataError(f"{name}_x has {k} inputs per sample, train_x or the other splits {n_in}")
        n_in = k
        out = n_outputs(y, f"{name}_y", x.shape[0])
        if targets is not None and targets != (y.ndim == 2):
            raise DataError(f"{name}_y mixes labels and target rows with the other splits")
        targets = y.ndim == 2
        if targets and n_out and out != n_out:
            raise DataError(f"{name}_y has {out} outputs per sample, the other splits {n_out}")
        n_out = max(n_out, out)
    return n_in, n_out


def features(x, name, dtype):
    """x as a C-contiguous (n, n_in) array of dtype: uint8 scaled by 1/256, floats as given
    (finite), more than two dimensions flattened."""
    x = np.asarray(x)
    x = x.reshape(x.shape[0], -1)
    if x.dtype == np.uint8:
        out = x.astype(dtype)
        out *= dtype.type(1 / 256)
        return out
    out = np.ascontiguousarray(x, dtype=dtype)
    if not np.isfinite(out).all():
        raise DataError(f"{name} must hold only finite values (in {dtype})")
    return out


def targets(y, name, n_out, dtype):
    """(labels (n,) intp, Y (n, n_out) of dtype) from labels or target rows."""
    y = np.asarray(y)
    if y.ndim == 1:
        if y.size and int(y.max()) >= n_out:
            raise DataError(f"{name} holds label {int(y.max())}, but the network has {n_out} outputs")
        labels = y.astype(np.intp)
        Y = np.zeros((y.shape[0], n_out), dtype=dtype)
        Y[np.arange(y.shape[0]), labels] = 1
        return labels, Y
    if y.shape[1] != n_out:
        raise DataError(f"{name} has {y.shape[1]} outputs per sample, but the network has {n_out}")
    Y = np.ascontiguousarray(y, dtype=dtype)
    if not np.isfinite(Y).all():
        raise DataError(f"{name} must hold only finite values (in {dtype})")
    return np.argmax(Y, axis=1) if Y.shape[0] else np.zeros(0, np.intp), Y


# ---- inputs to predict ---------------------------------------------------------------------------
def _image(path, n_in, invert):
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataError(f"reading {path} needs Pillow: pip install pillow") from None
    try:
        with Image.open(path) as im:
            u8 = np.asarray(im.convert("L"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot read the image {path}: {exc}") from None
    if u8.size != n_in:
        raise DataError(f"{path} is {u8.shape[1]}x{u8.shape[0]} = {u8.size} pixels, but the model has "
                        f"{n_in} inputs; resize it first")
    return (255 - u8 if invert else u8).reshape(1, n_in)


def _array_input(path, n_in, max_images):
    magic = _magic(path)
    if magic[:2] == b"PK":
        arrays = read_npz(path, max_images, counted=lambda key: key in ("x", "test_x"))
        key = next((k for k in ("x", "test_x") if k in arrays), None)
        if key is None and len(arrays) == 1:
            key = next(iter(arrays))
        if key is None:
            raise DataError(f"{path}: expected a member x or test_x (or a single array), it has "
                            f"{', '.join(sorted(arrays)) or 'none'}")
        x, name = arrays[key], f"{path}: {key}"
    else:
        try:
            x = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{path} is not a readable .npy array ({exc})") from None
        name = path
    if x.ndim >= 1 and math.prod(x.shape) == n_in and (x.ndim == 1 or x.shape[0] != 1):
        x = x.reshape(1, n_in)  # one sample: (n_in,) or an image (28, 28)
    if n_inputs(x, name) != n_in:
        raise DataError(f"{name} has {n_inputs(x, name)} inputs per sample, the model {n_in}")
    return x


def read_inputs(paths, n_in, dtype, invert=False, max_images=MAX_IMAGES):
    """(names, X): every sample of every INPUT (.npy, .npz, or an image file, one sample
    each), at most max_images in all (each file's count checked before it is converted)."""
    names, blocks = [], []
    for path in paths:
        image = os.path.splitext(path)[1].lower() in _IMAGE_SUFFIXES
        x = _image(path, n_in, invert) if image else _array_input(path, n_in, max_images - len(names))
        if len(names) + x.shape[0] > max_images:
            raise _too_many(path, len(names) + x.shape[0], max_images, "the INPUTs up to {path} hold")
        blocks.append(features(x, path, dtype))
        names.extend([path] if image else [f"{path}[{i}]" for i in range(x.shape[0])])
    return names, np.concatenate(blocks) if blocks else np.zeros((0, n_in), dtype)
