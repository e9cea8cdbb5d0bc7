"""Saving and loading a network's configuration and parameters, in two formats.

* ``.npz``, this project's own: the configuration (sizes, activations, cost, dtype) and the
  parameters bit for bit in the network's dtype, with a SHA-256 checksum over both, so that
  silent corruption is detected on load.  Plain arrays only: nothing is pickled when writing
  and the loader refuses object arrays before reading them.
* JSON in the layout of ``Network.save`` in Michael Nielsen's ``network2.py``, to exchange
  sigmoid networks with that code: values as float64 (``repr`` floats, so they round-trip).

Pure Python and NumPy, on plain values (sizes, names, lists of arrays): this module never
imports the compiled module or the Network classes.  Writes are atomic
(:func:`cbackprop._atomic.atomic_path`): an existing file is replaced whole or left as it
was.  Bad arguments to a save function raise TypeError or ValueError naming the parameter;
a file the loaders cannot accept raises ValueError naming the file, the rule and the value.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os

import numpy as np

from . import _npz
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
# The longest string each text member may declare, in characters ("sha256:" and 64 hex
# digits is 71; the longest name is 14).  activations' entries have the limit of "name".
_MAX_CHARS = {"format": 64, "cost": 64, "dtype": 64, "checksum": 128, "name": 64}
_Invalid = _npz.Invalid


def _as_given(value, limit=60):
    """str(value), shortened: a NumPy scalar as it prints (np.longdouble 1e4000 as 1e+4000, not as
    the inf that formatting it as a Python float gives)."""
    text = str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _names(items, limit=200):
    """'a', 'b', ... (shortened to about limit characters)."""
    return _as_given(", ".join(repr(x) for x in items), limit)


# ---- validation shared by saving and loading ------------------------------------------------
def _check_config(sizes, activations, cost):
    """sizes, activations and cost validated as a Network validates them (cbackprop._validation):
    one known activation per layer, softmax only in the last, and a cost that fits the
    output activation."""
    sizes = check_sizes(sizes)
    activations = check_activations(activations, len(sizes) - 1)
    cost = check_cost(cost, activations[-1])
    return sizes, activations, cost


def _shapes(sizes):
    """The shapes of [w^1, ..., w^L] and of [b^1, ..., b^L] for sizes."""
    return ([(n, n_prev) for n_prev, n in zip(sizes[:-1], sizes[1:])], [(n,) for n in sizes[1:]])


def _config_hash(sizes, activations, cost, dtype):
    """SHA-256 over the configuration as compact, key-sorted JSON: what checksum() starts with."""
    config = {"format": FORMAT, "version": VERSION, "sizes": [int(n) for n in sizes],
              "activations": [str(a) for a in activations], "cost": str(cost), "dtype": dtype.name}
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode("utf-8"))


def checksum(*, sizes, activations, cost, dtype, weights, biases):
    """``"sha256:<hex>"`` over the configuration (as compact, key-sorted JSON) followed by
    every weight then every bias array as little-endian bytes in C order.  The arrays'
    shapes follow from sizes, so the byte stream determines the network."""
    dtype = np.dtype(dtype)
    h = _config_hash(sizes, activations, cost, dtype)
    little = dtype.newbyteorder("<")
    for arr in [*weights, *biases]:
        h.update(np.ascontiguousarray(arr, dtype=little))
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


def load_npz(path, *, into=None):
    """Read a network written by :func:`save_npz`.

    Returns a dict with sizes (tuple of int), activations (tuple of str), cost (str), dtype
    (np.dtype), weights and biases (lists of new C-contiguous arrays of dtype).

    Raises ValueError naming path for a file that is not a readable .npz archive (empty,
    truncated, corrupt), is not a cbackprop network, has an unsupported version, misses or
    has unexpected members, has members of the wrong kind or shape, unknown names, softmax
    before the last layer, a cost that does not fit the output activation, a checksum that
    does not match or non-finite parameters.  A missing file raises FileNotFoundError.

    Limits, checked before anything the file declares is allocated: the archive's members
    are stored or deflated (what np.savez and np.savez_compressed write), their compressed
    sizes add up to no more than the file, each member's .npy header is at most 10,000
    bytes and its data exactly what the header declares; ``format``, ``cost`` and ``dtype``
    are strings of at most 64 characters, ``checksum`` of at most 128, ``sizes`` and
    ``activations`` have at most as many entries as the archive has members, activation
    names at most 64 characters; every parameter has exactly the shape sizes implies, in C
    order.  The parameters are then read twice, in chunks: once through the checksum and
    the finiteness check (nothing is allocated for them), and only if the file passes, into
    the arrays returned.  So refusing a file takes memory in proportion to its member
    directory, never to what it declares, and loading a valid one takes its parameters'
    size and a chunk of 1 MiB.

    into, if given, is called with the checked configuration (a dict of sizes, activations,
    cost and dtype) once the whole file has passed, and returns (weights, biases): lists of
    writable C-contiguous float arrays of the shapes sizes implies (their dtype may differ
    from the file's), which the parameters are read into and which the result holds.  A
    value that becomes non-finite in that dtype raises ValueError naming it.
    """
    p = os.fspath(path)
    with _regular(p) as f:
        with _refusing(p):
            archive = _archive(f)
            config, headers = _verified(archive)
        with archive:
            L = len(headers) // 2
            if into is None:
                dest = ([np.empty(h.shape, dtype=config["dtype"]) for _, h in headers[:L]],
                        [np.empty(h.shape, dtype=config["dtype"]) for _, h in headers[L:]])
            else:
                dest = _destinations(into(dict(config)), config["sizes"])
            with _refusing(p):
                for (key, header), out in zip(headers, dest[0] + dest[1]):
                    _fill(archive, key, header, out)
    return dict(config, weights=dest[0], biases=dest[1])


def _regular(p):
    """p opened for binary reading if it is a regular file (FileNotFoundError if missing)."""
    try:
        return _npz.open_regular(p)
    except _Invalid as exc:
        raise ValueError(f"{p!r}: {exc}") from None


@contextlib.contextmanager
def _refusing(p):
    """What reading the archive raises, as ValueError naming the file p."""
    try:
        yield
    except _Invalid as exc:
        raise ValueError(f"{p!r}: {exc}") from None
    except _npz.UNREADABLE as exc:
        raise ValueError(f"{p!r} is not a readable .npz archive (truncated or corrupt?): "
                         f"{type(exc).__name__}: {_as_given(exc, 200)}") from exc


def _archive(f):
    head = f.read(4)
    if not head:
        raise _Invalid("not a readable .npz archive: the file is empty")
    if not _npz.is_zip(head):
        raise _Invalid(f"not a readable .npz archive: it starts with {head!r}, not with a zip header")
    f.seek(0)
    return _npz.Archive(f, os.fstat(f.fileno()).st_size)


def _verified(archive):
    """(configuration, [(key, Header)] of weights_<i> then biases_<i>) once every rule is
    met: members, their headers, and the parameters streamed through the finiteness check
    and (versioned files) the checksum."""
    keys = archive.keys
    legacy = "format" not in keys and "sizes" in keys and all(
        k == "sizes" or k.startswith(("weights_", "biases_")) for k in keys)
    config, recorded = _legacy_config(archive) if legacy else _versioned_config(archive)
    headers = _parameter_headers(archive, config)
    actual = _stream_check(archive, config, headers, hashing=not legacy)
    if not legacy and recorded != actual:
        raise _Invalid(f"checksum mismatch: the file records {_short(recorded, 80)} but its contents "
                       f"hash to {actual!r}; the file is corrupt or was modified")
    return config, headers


def _versioned_config(archive):
    keys = archive.keys
    if "format" not in keys:
        raise _Invalid(f"not a cbackprop network file: it has no 'format' member "
                       f"(members: {_names(sorted(keys))})")
    fmt = _text(archive, "format")
    if fmt != FORMAT:
        raise _Invalid(f"not a cbackprop network file: format is {_short(fmt)}, expected {FORMAT!r}")
    if "version" not in keys:
        raise _Invalid("missing member 'version'")
    version = _integer(archive, "version")
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
    sizes = _sizes_member(archive)
    activations = _vector(archive, "activations", "U", "a 1-D unicode array")
    cost, dtype_name, recorded = _text(archive, "cost"), _text(archive, "dtype"), _text(archive, "checksum")
    try:
        sizes, activations, cost = _check_config(sizes.tolist(), activations.tolist(), cost)
    except (TypeError, ValueError) as exc:
        raise _Invalid(str(exc)) from None
    if dtype_name not in ("float32", "float64"):
        raise _Invalid(f"dtype must be 'float32' or 'float64', got {dtype_name!r}")
    _members_match(keys, sizes, set(_CONFIG_MEMBERS))
    return _config(sizes, activations, cost, np.dtype(dtype_name)), recorded


def _legacy_config(archive):
    """A file from `cbackprop train --save` before the versioned format (call it version 0):
    only sizes, weights_<i> and biases_<i>, of sigmoid layers trained with the quadratic cost
    (the only kind there was), in the dtype of its arrays, without a checksum."""
    sizes = _sizes_member(archive)
    try:
        sizes, activations, cost = _check_config(sizes.tolist(), "sigmoid", "quadratic")
    except (TypeError, ValueError) as exc:
        raise _Invalid(str(exc)) from None
    L = len(sizes) - 1
    params = _parameter_names(L)
    missing = [k for k in params if k not in archive.keys]
    extra = sorted(archive.keys - set(params) - {"sizes"})
    if missing or extra:
        raise _Invalid(f"an unversioned network file (sizes, weights_<i>, biases_<i>) with "
                       f"{'missing member(s) ' + _names(missing) if missing else ''}"
                       f"{' and ' if missing and extra else ''}"
                       f"{'unexpected member(s) ' + _names(extra) if extra else ''} "
                       f"(sizes {_short(list(sizes), 200)})")
    stored = archive.header("weights_0").dtype
    dtype = stored.newbyteorder("=")
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise _Invalid(f"weights_0 must be float32 or float64, got {stored}")
    return _config(sizes, activations, cost, dtype), None


def _config(sizes, activations, cost, dtype):
    return {"sizes": sizes, "activations": activations, "cost": cost, "dtype": dtype}


def _members_match(keys, sizes, config_members):
    L = len(sizes) - 1
    params = _parameter_names(L)
    missing = [k for k in params if k not in keys]
    described = f"sizes {_short(list(sizes), 200)} has {L} layers"
    if missing:
        raise _Invalid(f"missing member(s) {_names(missing)} ({described})")
    extra = sorted(keys - set(params) - config_members)
    if extra:
        raise _Invalid(f"unexpected member(s) {_names(extra)} ({described})")


# ---- pieces of both .npz readers -----------------------------------------------------------
def _parameter_names(L):
    """The members of an L-layer network's parameters: weights_<i>, then biases_<i>."""
    return [f"weights_{i}" for i in range(L)] + [f"biases_{i}" for i in range(L)]


def _small(archive, key, kinds, ndim, what):
    """A configuration member after checking its header: dtype kind in kinds, ndim
    dimensions, and no more than its limit (characters per string, entries per vector: at
    most one per member of the archive)."""
    header = archive.header(key)
    dt, shape = header.dtype, header.shape
    if dt.kind not in kinds or len(shape) != ndim:
        raise _Invalid(f"{key} must be {what}, got dtype {dt} and shape {shape}")
    if ndim == 1 and shape[0] > len(archive.keys):
        raise _Invalid(f"{key} declares {shape[0]} entries, more than the archive's {len(archive.keys)} "
                       f"members allow (two per layer)")
    limit = _MAX_CHARS.get(key if ndim == 0 else "name")
    if dt.kind == "U" and dt.itemsize // 4 > limit:
        raise _Invalid(f"{key} must hold strings of at most {limit} characters, got dtype {dt}")
    return archive.read(key, header)


def _text(archive, key):
    return str(_small(archive, key, "U", 0, "a 0-d unicode string")[()])


def _integer(archive, key):
    return int(_small(archive, key, "iu", 0, "a 0-d integer")[()])


def _vector(archive, key, kinds, what):
    return _small(archive, key, kinds, 1, what)


def _sizes_member(archive):
    return _vector(archive, "sizes", "iu", "a 1-D integer array")


def _parameter_headers(archive, config):
    """[(key, Header)] of weights_<i> then biases_<i>, each of the shape sizes implies, in
    the file's float dtype, in C order."""
    sizes, dtype = config["sizes"], config["dtype"]
    w_shapes, b_shapes = _shapes(sizes)
    out = []
    for key, shape in zip(_parameter_names(len(sizes) - 1), w_shapes + b_shapes):
        header = archive.header(key)
        if header.shape != shape:
            raise _Invalid(f"{key} must have shape {shape} to match sizes {_short(list(sizes), 200)}, "
                           f"got shape {header.shape}")
        if header.dtype.kind != "f" or header.dtype.itemsize != dtype.itemsize:
            raise _Invalid(f"{key} must hold {dtype} values (the file's dtype), got dtype {header.dtype}")
        if header.fortran_order and sum(d > 1 for d in shape) > 1:
            raise _Invalid(f"{key} is stored in Fortran order; cbackprop reads parameters in C order "
                           f"(as np.save writes a C-contiguous array)")
        out.append((key, header))
    return out


def _stream_check(archive, config, headers, hashing):
    """The checksum of the file's configuration and parameters (None unless hashing), after
    checking every parameter is finite; the parameters pass in chunks, nothing is kept."""
    dtype = config["dtype"]
    little = dtype.newbyteorder("<")
    h = _config_hash(config["sizes"], config["activations"], config["cost"], dtype) if hashing else None
    for key, header in headers:
        done = 0
        for part in archive.chunks(key, header):
            _finite_part(part, done, key, header.shape, dtype)
            if h is not None:
                h.update(part.astype(little, copy=False))
            done += part.size
    return None if h is None else "sha256:" + h.hexdigest()


def _finite_part(part, done, key, shape, dtype, source=None):
    """_Invalid naming the first non-finite value of part, the chunk of key's values from
    flat index done on; source is what is reported (the value as the file holds it)."""
    if not np.isfinite(part).all():
        i = int(np.flatnonzero(~np.isfinite(part))[0])
        where = tuple(int(j) for j in np.unravel_index(done + i, shape))
        value = (part if source is None else source)[i]
        raise _Invalid(f"{key} must hold only finite {dtype} values, got {_as_given(value)} at index {where}")


def _fill(archive, key, header, out):
    """Read key's values into out (C-contiguous, its own dtype), chunk by chunk."""
    flat = out.reshape(-1)
    done = 0
    for part in archive.chunks(key, header):
        with np.errstate(over="ignore"):
            values = part.astype(out.dtype, copy=False)
        if values.dtype.itemsize < part.dtype.itemsize:       # narrowed: may overflow
            _finite_part(values, done, key, header.shape, out.dtype, source=part)
        flat[done:done + part.size] = values
        done += part.size


def _destinations(dest, sizes):
    """load_npz's into() result, checked: (weights, biases), writable C-contiguous float
    arrays of the shapes sizes implies."""
    if not isinstance(dest, (tuple, list)) or len(dest) != 2:
        raise TypeError(f"into must return (weights, biases), got {_short(dest)}")
    weights, biases = (list(d) for d in dest)
    w_shapes, b_shapes = _shapes(sizes)
    for name, arrays, shapes in (("weights", weights, w_shapes), ("biases", biases, b_shapes)):
        if len(arrays) != len(shapes):
            raise ValueError(f"into must return {len(shapes)} {name} arrays, got {len(arrays)}")
        for i, (arr, shape) in enumerate(zip(arrays, shapes)):
            if (not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype.kind != "f"
                    or not arr.flags.c_contiguous or not arr.flags.writeable):
                raise ValueError(f"into's {name}[{i}] must be a writable C-contiguous float array of shape "
                                 f"{shape}, got {_short(arr)}")
    return weights, biases


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
    with io.TextIOWrapper(_regular(p), encoding="utf-8") as f:
        try:
            data = json.load(f, parse_int=_json_int, parse_float=_json_float)
            return _from_network2(data)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p!r} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
                             f"(char {exc.pos})") from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"{p!r} is not valid JSON: it is not UTF-8 text ({exc})") from None
        except RecursionError:
            raise ValueError(f"{p!r} is not a network2.py network: its JSON is nested too "
                             f"deeply") from None
        except _Invalid as exc:
            raise ValueError(f"{p!r}: {exc}") from None


# An integer literal of more digits than this is beyond the float64 range (about 1.8e308).
_MAX_INT_DIGITS = 309


def _json_int(text):
    """json's parse_int: int(text), or _Invalid for a literal too long to be a layer size or a
    float64 value (before Python's limit on int conversion speaks, without the file's name)."""
    digits = len(text) - text.startswith("-")
    if digits > _MAX_INT_DIGITS:
        raise _Invalid(f"every number must be a layer size or a finite float64 value, got an integer "
                       f"literal of {digits} digits ({_as_given(text, 40)})")
    return int(text)


class _Literal(float):
    """A JSON number beyond the float64 range: inf, but printed as the file wrote it."""

    def __new__(cls, text):
        self = super().__new__(cls, text)
        self.text = text
        return self

    def __repr__(self):
        return _as_given(self.text, 40)

    __str__ = __repr__

    def __format__(self, spec):
        return repr(self)


_Literal.__name__ = "float"     # what it is to the reader: "got 1e999 of type float"


def _json_float(text):
    """json's parse_float: float(text), kept as written (_Literal) if it overflows."""
    value = float(text)
    return value if math.isfinite(value) else _Literal(text)


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
    if not {int, float, _Literal}.issuperset(map(type, values)):
        j = next(j for j, x in enumerate(values) if type(x) not in (int, float, _Literal))
        raise _Invalid(f"{name}[{j}]{suffix} must be a number, got {_json_kind(values[j])}")


def _to_float64(values, name):
    """values (a list, or a list of equal-length lists, of JSON numbers) as a float64 array;
    _Invalid naming the first value that is not finite in float64, as the file wrote it."""
    try:
        arr = np.array(values, dtype=np.float64)
    except OverflowError:                       # an integer literal beyond the float64 range
        values = [[_to_float(x) for x in row] if isinstance(row, list) else _to_float(row) for row in values]
        arr = np.array(values, dtype=np.float64)
    if not np.isfinite(arr).all():
        _finite_or_raise(arr, name, source=np.array(values, dtype=object), error=_Invalid)
    return arr


def _to_float(x):
    try:
        return float(x)
    except OverflowError:
        return _Literal(str(x))


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
