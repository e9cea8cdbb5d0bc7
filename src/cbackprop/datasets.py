"""The MNIST sample that ships with cbackprop, and small data helpers.  Pure NumPy: this module
never imports the compiled module or cbackprop.network.

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

import numbers
from importlib import resources

import numpy as np

__all__ = ["load_sample", "load_npz", "one_hot", "SAMPLE_FILE"]

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


def load_npz(path):
    """((x_train, y_train), (x_test, y_test)) from an .npz with keys train_x, train_y, test_x,
    test_y, such as the book-split ``mnist.npz``.

    Images may be (n, 784) or (n, 28, 28); uint8 pixels become the book's float32 values
    u8/256, float pixels are kept (as float32 or float64).  Labels must be integers in 0..9
    and come back as uint8.  Raises OSError if the file cannot be read and ValueError if it
    is not a suitable .npz.
    """
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise OSError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):  # a zip archive (empty or not)
        what = "a single .npy array" if magic == b"\x93NUM" else "not a zip archive"
        raise ValueError(f"{path} is not an .npz file ({what})")
    try:
        npz = np.load(path, allow_pickle=False)
    except OSError as exc:
        raise OSError(f"cannot read {path}: {exc}") from exc
    except Exception as exc:  # a damaged archive: BadZipFile, ValueError, EOFError ...
        raise ValueError(f"{path} is not a readable .npz file ({type(exc).__name__}: {exc})") from exc
    with npz:
        try:
            return _split(npz)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        except Exception as exc:  # a damaged member: BadZipFile, zlib.error, EOFError ...
            raise ValueError(f"{path} is not a readable .npz file ({type(exc).__name__}: {exc})") from exc


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
