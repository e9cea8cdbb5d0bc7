"""Saving and loading a network's configuration and parameters, in two formats.

* ``.npz``, this project's own: the configuration (sizes, activations, cost, dtype) and the
  parameters bit for bit in the network's dtype, with a SHA-256 checksum over both, so that
  silent corruption is detected on load.  Plain arrays only: nothing is pickled when writing
  and the loader uses ``allow_pickle=False`` and refuses object arrays before reading them.
* JSON in the layout of ``Network.save`` in Michael Nielsen's ``network2.py``, to exchange
  sigmoid networks with that code: values as float64 (``repr`` floats, so they round-trip).

Pure Python and NumPy, on plain values (sizes, names, lists of arrays): this module never
imports the compiled module or the Network classes.  Writes are atomic
(:func:`cbackprop._atomic.atomic_path`): an existing file is replaced whole or left as it
was.  Bad arguments to a save function raise TypeError or ValueError naming the parameter;
a file the loaders cannot accept raises ValueError naming the file, the rule and the value.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import zipfile
import zlib

import numpy as np

from ._atomic import atomic_path
from ._validation import (COSTS, _finite_or_raise, _short, as_parameter_list, check_activations,
                      check_cost, check_dtype, check_sizes)

FORMAT = "cbackprop-network"
VERSION = 1                     # what save_npz writes
SUPPORTED_VERSIONS = (1,)       # what load_npz reads
# cost name here -> network2.py's cost class name (str(cost.__name__) in its JSON)
NETWORK2_COSTS = {"quadratic": "QuadraticCost", "cross-entropy": "CrossEntropyCost"}
_NETWORK2_KEYS = ("sizes", "weights", "biases", "cost")
_CONFIG_MEMBERS = ("format", "version", "sizes", "activations", "cost", "dtype", "checksum")

# What reading a damaged archive can raise, from zipfile, zlib and numpy.lib.format: a
# truncated or corrupt file (EOF, bad CRC, bad headers, absurd offsets -> OSError, struct.error,
# OverflowError), flipped flag bits (encryption -> RuntimeError, unknown compression or zip
# version -> NotImplementedError), a damaged directory (KeyError).
_UNREADABLE = (zipfile.BadZipFile, zlib.error, struct.error, EOFError, OSError, ValueError,
               KeyError, NotImplementedError, RuntimeError, OverflowError)


class _Invalid(ValueError):
    """A loader's complaint about the file's contents; the public function adds the path."""


def _names(items):
    return ", ".join(repr(x) for x in items)


# ---- validation shared by saving and loading ------------------------------------------------
def _check_config(sizes, activations, cost):
    """sizes, activations and cost validated as a Network validates them (cbackprop._common):
    one known activation per layer, softmax only in the last, and a cost that fits the
    output activation."""
    sizes = check_sizes(sizes)
    activations = check_activations(activations, len(sizes) - 1)
    cost = check_cost(cost, activations[-1])
    return sizes, activations, cost


def _shapes(sizes):
    """The shapes of [w^1, ..., w^L] and of [b^1, ..., b^L] for sizes."""
    return ([(n, n_prev) for n_prev, n in zip(sizes[:-1], sizes[1:])], [(n,) for n in sizes[1:]])


def checksum(*, sizes, activations, cost, dtype, weights, biases):
    """``"sha256:<hex>"`` over the configuration (as compact, key-sorted JSON) followed by
    every weight then every bias array as little-endian bytes in C order.  The arrays'
    shapes follow from sizes, so the byte stream determines the network."""
    dtype = np.dtype(dtype)
    config = {"format": FORMAT, "version": VERSION, "sizes": [int(n) for n in sizes],
              "activations": [str(a) for a in activations], "cost": str(cost), "dtype": dtype.name}
    h = hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    little = dtype.newbyteorder("<")
    for arr in [*weights, *biases]:
        h.update(np.ascontiguousarray(arr, dtype=little).tobytes())
    return "sha256:" + h.hexdigest()


# ---- .npz -----------------------------------------------------------------------------------------
def save_npz(path, *, sizes, activations, cost, dtype, weights, biases):
    """Write a network to path (str or os.PathLike) as an uncompressed .npz, atomically.

    Members: ``format`` ("cbackprop-network"), ``version`` (int64, 1), ``sizes`` (int64),
    ``activations``, ``cost``, ``dtype`` ("float32"/"float64"), ``checksum`` (see
    :func:`checksum`), all strings as unicode arrays, and ``weights_0 .. weights_{L-1}``,
    ``biases_0 .. biases_{L-1}`` in dtype.  path is used exactly as given: no ".npz" is
    appended.  Everything is validated before the file is touched: sizes, activations and
    cost as a Network checks them (so cost must fit the output activation), parameters of
    the shapes sizes implies, converted to dtype, finite.
    """
    sizes, activations, cost = _check_config(sizes, activations, cost)
    dtype = check_dtype(dtype)
    w_shapes, b_shapes = _shapes(sizes)
    weights = as_parameter_list(weights, "weights", w_shapes, dtype, sizes)
    biases = as_parameter_list(biases, "biases", b_shapes, dtype, sizes)
    members = {
        "format": np.array(FORMAT, dtype=str),
        "version": np.array(VERSION, dtype=np.int64),
        "sizes": np.array(sizes, dtype=np.int64),
        "activations": np.array(activations, dtype=str),
        "cost": np.array(cost, dtype=str),
        "dtype": np.array(dtype.name, dtype=str),
        "checksum": np.array(checksum(sizes=sizes, activations=activations, cost=cost, dtype=dtype,
                                      weights=weights, biases=biases), dtype=str),
    }
    for i, (w, b) in enumerate(zip(weights, biases)):
        members[f"weights_{i}"] = w
        members[f"biases_{i}"] = b
    # Through an open file: given a name, np.savez would append ".npz" to it.
    with atomic_path(os.fspath(path)) as tmp, open(tmp, "wb") as f:
        np.savez(f, **members)


def load_npz(path):
    """Read a network written by :func:`save_npz`.

    Returns a dict with sizes (tuple of int), activations (tuple of str), cost (str), dtype
    (np.dtype), weights and biases (lists of new C-contiguous arrays of dtype).  Opens with
    ``allow_pickle=False``; raises ValueError naming path for a file that is not a readable
    .npz archive (empty, truncated, corrupt), is not a cbackprop network, has an unsupported
    version, misses or has unexpected members, has members of the wrong kind or shape,
    unknown names, softmax before the last layer, a cost that does not fit the output
    activation, a checksum that does not match or non-finite parameters.  A missing file
    raises FileNotFoundError.
    """
    p = os.fspath(path)
    with open(p, "rb") as f:
        try:
            return _read_npz(f)
        except _Invalid as exc:
            raise ValueError(f"{p!r}: {exc}") from None
        except _UNREADABLE as exc:
            raise ValueError(f"{p!r} is not a readable .npz archive (truncated or corrupt?): "
                             f"{type(exc).__name__}: {exc}") from exc


def _read_npz(f):
    head = f.read(4)
    if not head:
        raise _Invalid("not a readable .npz archive: the file is empty")
    if head not in (b"PK\x03\x04", b"PK\x05\x06"):  # a zip's first member, or an empty zip
        raise _Invalid(f"not a readable .npz archive: it starts with {head!r}, not with a zip header")
    f.seek(0)
    with np.load(f, allow_pickle=False) as npz:
        keys = _member_keys(npz)
        if "format" not in keys and "sizes" in keys and all(
                k == "sizes" or k.startswith(("weights_", "biases_")) for k in keys):
            return _read_legacy(npz, keys)
        if "format" not in keys:
            raise _Invalid(f"not a cbackprop network file: it has no 'format' member "
                           f"(members: {_names(sorted(keys))})")
        fmt = _text(npz, "format")
        if fmt != FORMAT:
            raise _Invalid(f"not a cbackprop network file: format is {fmt!r}, expected {FORMAT!r}")
        if "version" not in keys:
            raise _Invalid("missing member 'version'")
        version = _integer(npz, "version")
        if version not in SUPPORTED_VERSIONS:
            supported = f"supported versions: {', '.join(map(str, SUPPORTED_VERSIONS))}"
            if version > max(SUPPORTED_VERSIONS):
                raise _Invalid(f"file format version {version} is newer than this cbackprop supports "
                               f"({supported}); a newer cbackprop is needed to load it")
            raise _Invalid(f"file format version {version} is not supported ({supported})")
        missing = [k for k in _CONFIG_MEMBERS if k not in keys]
        if missing:
            raise _Invalid(f"missing member(s) {_names(missing)} (a version {version} file has "
                           f"{_names(_CONFIG_MEMBERS)}, weights_<i> and biases_<i>)")

        sizes = _sizes_member(npz)
        activations = _member(npz, "activations")
        if activations.dtype.kind != "U" or activations.ndim != 1:
            raise _Invalid(f"activations must be a 1-D unicode array, got dtype {activations.dtype} "
                           f"and shape {activations.shape}")
        cost, dtype_name, recorded = _text(npz, "cost"), _text(npz, "dtype"), _text(npz, "checksum")
        try:
            sizes, activations, cost = _check_config(sizes.tolist(), activations.tolist(), cost)
        except (TypeError, ValueError) as exc:
            raise _Invalid(str(exc)) from None
        if dtype_name not in ("float32", "float64"):
            raise _Invalid(f"dtype must be 'float32' or 'float64', got {dtype_name!r}")
        dtype = np.dtype(dtype_name)

        L = len(sizes) - 1
        params = _parameter_names(L)
        missing = [k for k in params if k not in keys]
        if missing:
            raise _Invalid(f"missing member(s) {_names(missing)} (sizes {list(sizes)} has {L} layers)")
        extra = sorted(keys - set(params) - set(_CONFIG_MEMBERS))
        if extra:
            raise _Invalid(f"unexpected member(s) {_names(extra)} (sizes {list(sizes)} has {L} layers)")
        weights, biases = _parameters(npz, sizes, dtype)

    actual = checksum(sizes=sizes, activations=activations, cost=cost, dtype=dtype,
                      weights=weights, biases=biases)
    if recorded != actual:
        raise _Invalid(f"checksum mismatch: the file records {recorded!r} but its contents hash to "
                       f"{actual!r}; the file is corrupt or was modified")
    return _network(sizes, activations, cost, dtype, weights, biases)


def _read_legacy(npz, keys):
    """A file from `cbackprop train --save` before the versioned format (call it version 0):
    only sizes, weights_<i> and biases_<i>, of sigmoid layers trained with the quadratic cost
    (the only kind there was), in the dtype of its arrays, without a checksum."""
    sizes = _sizes_member(npz)
    try:
        sizes, activations, cost = _check_config(sizes.tolist(), "sigmoid", "quadratic")
    except (TypeError, ValueError) as exc:
        raise _Invalid(str(exc)) from None
    L = len(sizes) - 1
    params = _parameter_names(L)
    missing = [k for k in params if k not in keys]
    extra = sorted(keys - set(params) - {"sizes"})
    if missing or extra:
        raise _Invalid(f"an unversioned network file (sizes, weights_<i>, biases_<i>) with "
                       f"{'missing member(s) ' + _names(missing) if missing else ''}"
                       f"{' and ' if missing and extra else ''}"
                       f"{'unexpected member(s) ' + _names(extra) if extra else ''} (sizes {list(sizes)})")
    dtype = _member(npz, "weights_0").dtype
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise _Invalid(f"weights_0 must be float32 or float64, got {dtype}")
    weights, biases = _parameters(npz, sizes, dtype)
    return _network(sizes, activations, cost, dtype, weights, biases)


# ---- pieces of both .npz readers -----------------------------------------------------------
def _sizes_member(npz):
    sizes = _member(npz, "sizes")
    if sizes.dtype.kind not in "iu" or sizes.ndim != 1:
        raise _Invalid(f"sizes must be a 1-D integer array, got dtype {sizes.dtype} and shape {sizes.shape}")
    return sizes


def _parameter_names(L):
    """The members of an L-layer network's parameters: weights_<i>, then biases_<i>."""
    return [f"weights_{i}" for i in range(L)] + [f"biases_{i}" for i in range(L)]


def _parameters(npz, sizes, dtype):
    """([w^1, ..., w^L], [b^1, ..., b^L]) read from the members, shapes checked."""
    w_shapes, b_shapes = _shapes(sizes)
    weights = [_parameter(npz, f"weights_{i}", sh, dtype, sizes) for i, sh in enumerate(w_shapes)]
    biases = [_parameter(npz, f"biases_{i}", sh, dtype, sizes) for i, sh in enumerate(b_shapes)]
    return weights, biases


def _network(sizes, activations, cost, dtype, weights, biases):
    """What load_npz returns, once every parameter is checked to be finite."""
    for name, arr in zip(_parameter_names(len(sizes) - 1), weights + biases):
        _finite_or_raise(arr, name, error=_Invalid)
    return {"sizes": sizes, "activations": activations, "cost": cost, "dtype": dtype,
            "weights": weights, "biases": biases}


def _member_keys(npz):
    """The set of member names without ".npy"; every member must be a .npy array."""
    keys = set()
    for zname in npz.zip.namelist():
        if not zname.endswith(".npy"):
            raise _Invalid(f"unexpected member {zname!r}: every member must be a .npy array")
        keys.add(zname[:-4])
    return keys


def _member(npz, key, shape=None, sizes=None):
    """npz[key], after checking the member's .npy header: no object dtype (its data would be
    unpickled), no more data declared than the member holds, and shape (that sizes implies)
    if given, so that a damaged header cannot make it allocate an arbitrary amount of memory."""
    info = npz.zip.getinfo(key + ".npy")
    with npz.zip.open(info) as m:
        version = np.lib.format.read_magic(m)
        if version == (1, 0):
            declared, _, dt = np.lib.format.read_array_header_1_0(m)
        elif version == (2, 0):
            declared, _, dt = np.lib.format.read_array_header_2_0(m)
        else:
            raise _Invalid(f"member {key} uses .npy format version {version[0]}.{version[1]}, "
                           f"which is not supported here (1.0 and 2.0 are)")
    if dt.hasobject:
        raise _Invalid(f"member {key} holds Python objects (dtype {dt}); loading it would unpickle "
                       f"data, which is refused")
    if shape is not None and declared != shape:
        raise _Invalid(f"{key} must have shape {shape} to match sizes {list(sizes)}, got shape {declared}")
    if math.prod(declared) * dt.itemsize > info.file_size:
        raise _Invalid(f"member {key} declares shape {declared} of {dt}, more data than its "
                       f"{info.file_size} bytes (truncated or corrupt?)")
    return npz[key]


def _text(npz, key):
    arr = _member(npz, key)
    if arr.dtype.kind != "U" or arr.ndim != 0:
        raise _Invalid(f"{key} must be a 0-d unicode string, got dtype {arr.dtype} and shape {arr.shape}")
    return str(arr[()])


def _integer(npz, key):
    arr = _member(npz, key)
    if arr.dtype.kind not in "iu" or arr.ndim != 0:
        raise _Invalid(f"{key} must be a 0-d integer, got dtype {arr.dtype} and shape {arr.shape}")
    return int(arr[()])


def _parameter(npz, key, shape, dtype, sizes):
    """A weight or bias member of the shape sizes implies, stored in the file's dtype, as a
    C-contiguous array of dtype in native byte order."""
    arr = _member(npz, key, shape, sizes)
    if arr.dtype.kind != "f" or arr.dtype.itemsize != dtype.itemsize:
        raise _Invalid(f"{key} must hold {dtype} values (the file's dtype), got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=dtype)


# ---- network2.py JSON -------------------------------------------------------------------------
def save_network2_json(path, *, sizes, cost, weights, biases, activations=None):
    """Write a network to path as JSON in network2.py's layout, atomically::

        {"sizes": [...], "weights": [w.tolist(), ...],
         "biases": [b.reshape(-1, 1).tolist(), ...], "cost": "CrossEntropyCost"}

    (biases as column vectors (n, 1), the cost as its network2 class name).  Values are
    written as float64, shortest repr, so they read back exactly.  Only cost "quadratic" and
    "cross-entropy" exist in network2.  network2 has only sigmoid neurons: pass activations
    to have that checked (it is not stored).
    """
    sizes = check_sizes(sizes)
    if isinstance(cost, str) and cost in COSTS and cost not in NETWORK2_COSTS:
        raise ValueError(f"cost {cost!r} cannot be saved in network2.py's JSON format: network2 knows only "
                         + " and ".join(f"{k!r} ({v})" for k, v in NETWORK2_COSTS.items()))
    cost = check_cost(cost, "sigmoid")
    if activations is not None:
        acts = check_activations(activations, len(sizes) - 1)
        for i, a in enumerate(acts):
            if a != "sigmoid":
                raise ValueError(f"activations[{i}] must be 'sigmoid' to save in network2.py's JSON format "
                                 f"(network2 has only sigmoid neurons), got {a!r}")
    w_shapes, b_shapes = _shapes(sizes)
    weights = as_parameter_list(weights, "weights", w_shapes, np.float64, sizes)
    biases = as_parameter_list(biases, "biases", b_shapes, np.float64, sizes)
    data = {"sizes": list(sizes),
            "weights": [w.tolist() for w in weights],
            "biases": [b.reshape(-1, 1).tolist() for b in biases],
            "cost": NETWORK2_COSTS[cost]}
    with atomic_path(os.fspath(path)) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, allow_nan=False)


def load_network2_json(path):
    """Read a network from network2.py's JSON (see :func:`save_network2_json`).

    Returns a dict with sizes (tuple of int), cost ("quadratic" or "cross-entropy"),
    activations (all "sigmoid"), weights and biases (lists of float64 arrays, biases of shape
    (n,)).  Biases may be columns [[b1], [b2], ...] as network2 writes them or flat lists.
    Raises ValueError naming path for invalid JSON (with its position), missing keys, an
    unknown cost, sizes that are not a list of at least 2 positive integers, shapes that do
    not match sizes, and values that are not finite numbers.  A missing file raises
    FileNotFoundError.
    """
    p = os.fspath(path)
    with open(p, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p!r} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
                             f"(char {exc.pos})") from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"{p!r} is not valid JSON: it is not UTF-8 text ({exc})") from None
        except RecursionError:
            raise ValueError(f"{p!r} is not a network2.py network: its JSON is nested too "
                             f"deeply") from None
    try:
        return _from_network2(data)
    except _Invalid as exc:
        raise ValueError(f"{p!r}: {exc}") from None


def _json_kind(value):
    """How a JSON value is described in messages."""
    if isinstance(value, list):
        return f"an array of {len(value)} entries"
    if isinstance(value, dict):
        return "an object"
    return _short(value)


def _from_network2(data):
    if not isinstance(data, dict):
        raise _Invalid(f"the JSON must be an object with keys {_names(_NETWORK2_KEYS)} (network2.py's "
                       f"layout), got {_json_kind(data)}")
    missing = [k for k in _NETWORK2_KEYS if k not in data]
    if missing:
        raise _Invalid(f"missing key(s) {_names(missing)} (network2.py writes {_names(_NETWORK2_KEYS)})")
    if not isinstance(data["sizes"], list):
        raise _Invalid(f"sizes must be a list of layer sizes such as [784, 30, 10], "
                       f"got {_json_kind(data['sizes'])}")
    try:
        sizes = check_sizes(data["sizes"])
    except (TypeError, ValueError) as exc:
        raise _Invalid(str(exc)) from None
    names = {v: k for k, v in NETWORK2_COSTS.items()}
    if not isinstance(data["cost"], str) or data["cost"] not in names:
        raise _Invalid(f"cost must be {' or '.join(map(repr, names))} (the costs network2.py defines), "
                       f"got {_json_kind(data['cost'])}")
    L = len(sizes) - 1
    w_shapes, b_shapes = _shapes(sizes)
    for key in ("weights", "biases"):
        if not isinstance(data[key], list) or len(data[key]) != L:
            raise _Invalid(f"{key} must be a list of {L} entries (one per layer after the input for sizes "
                           f"{list(sizes)}), got {_json_kind(data[key])}")
    weights = [_json_matrix(w, f"weights[{i}]", shape, sizes)
               for i, (w, shape) in enumerate(zip(data["weights"], w_shapes))]
    biases = [_json_vector(b, f"biases[{i}]", shape[0], sizes)
              for i, (b, shape) in enumerate(zip(data["biases"], b_shapes))]
    return {"sizes": sizes, "cost": names[data["cost"]], "activations": ("sigmoid",) * L,
            "weights": weights, "biases": biases}


def _check_numbers(values, name, suffix=""):
    """Every entry of the list values a JSON number (int or float, not true/false/null/string);
    entry j is called name[j]suffix in the message."""
    if not {int, float}.issuperset(map(type, values)):
        j = next(j for j, x in enumerate(values) if type(x) not in (int, float))
        raise _Invalid(f"{name}[{j}]{suffix} must be a number, got {_json_kind(values[j])}")


def _to_float64(values, name):
    try:
        arr = np.array(values, dtype=np.float64)
    except OverflowError:  # an integer literal beyond the float64 range
        raise _Invalid(f"{name} must hold only finite float64 values, got an integer beyond the "
                       f"float64 range") from None
    _finite_or_raise(arr, name, error=_Invalid)
    return arr


def _json_matrix(value, name, shape, sizes):
    n, m = shape
    if not isinstance(value, list) or len(value) != n:
        raise _Invalid(f"{name} must be a list of {n} rows of {m} numbers (shape {shape} to match sizes "
                       f"{list(sizes)}), got {_json_kind(value)}")
    for i, row in enumerate(value):
        if not isinstance(row, list) or len(row) != m:
            raise _Invalid(f"{name}[{i}] must be a list of {m} numbers (shape {shape} to match sizes "
                           f"{list(sizes)}), got {_json_kind(row)}")
        _check_numbers(row, f"{name}[{i}]")
    return _to_float64(value, name)


def _json_vector(value, name, n, sizes):
    """A bias vector as a column [[b1], ..., [bn]] (network2) or a flat list [b1, ..., bn]."""
    rule = (f"a column of {n} numbers [[b1], [b2], ...] (as network2.py writes it) or a flat list "
            f"of {n} numbers (to match sizes {list(sizes)})")
    if not isinstance(value, list) or len(value) != n:
        raise _Invalid(f"{name} must be {rule}, got {_json_kind(value)}")
    suffix = ""
    if isinstance(value[0], list):
        for i, entry in enumerate(value):
            if not isinstance(entry, list) or len(entry) != 1:
                raise _Invalid(f"{name}[{i}] must be a one-number list, as {name} is {rule}, "
                               f"got {_json_kind(entry)}")
        value, suffix = [entry[0] for entry in value], "[0]"
    _check_numbers(value, name, suffix)
    return _to_float64(value, name)
