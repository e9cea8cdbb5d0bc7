"""Fuzz every public entry point of cbackprop.Network, the loaders and datasets.load_mnist
with generated bad (and good) input, hostile files among them (tests/hostile.py).

Run as a script, in a subprocess of the test (so that a crash in C shows up as a return
code instead of killing pytest)::

    python tests/fuzzing.py N_CALLS SEED WORKDIR

Generation is driven by a seeded numpy Generator (deterministic, and much faster than
hypothesis for ~10^5 calls).  Every call must either succeed or raise ValueError, TypeError
or MemoryError with a non-empty message; any other exception or warning is a failure.  A
rejected call must leave the network's state bitwise unchanged: parameters, the generator
that sgd shuffles with, num_threads, the momentum velocity, the accumulated gradient and
its sample count.  So must a successful call of a read-only method (feedforward,
backprop, cost, evaluate, trace, total_cost, gradient_buffer, save, save_network2,
gradient_check).  accumulate_gradient may change only the accumulated gradient (by the
summed gradient of its rows) and its count (by the number of rows); zero_gradient and
apply_gradient leave both at zero, apply_gradient without an accumulated gradient (and
no samples=) raises ValueError.  Results of successful calls are checked for shape, type
and range (the output range per output activation), and against what the arguments allow:
hyper-parameters (eta, lmbda, n, mu, samples, sgd's flags and counts) that the rules
refuse must not be accepted.

The pool holds networks of every activation and cost, both dtypes.  Exceptions to the
three allowed types:
- save / load / save_network2 / load_network2 / load_mnist with a path that cannot be
  written or read (a missing directory or file, a directory, a path through a file, a name
  too long) may raise OSError with errno ENOENT, EISDIR, ENOTDIR, EACCES, EPERM,
  ENAMETOOLONG or EROFS, and a save onto a FIFO shutil.SpecialFileError; a file that exists
  but is damaged (truncated, bytes flipped, members altered, the other format, empty) or
  hostile (a decompression bomb, a declared size far beyond its data, a pickle that would
  call or tamper) must raise ValueError, or load, only when what it loads is exactly what
  the file's (checksummed) contents say.  Saves that fail leave an existing file as it was
  and no temporary file behind; a save through a symlink replaces its target.  Everything
  is written inside WORKDIR.
- sgd may raise FloatingPointError (documented: an update made parameters non-finite; the
  parameters are those from before that mini-batch) and passes on what a callback raises.
- every other method that computes from the parameters (COMPUTES) may raise
  FloatingPointError when a value it would return or leave is not finite (inf or NaN from
  finite inputs: values beyond the dtype's range), naming the layer and quantity or the
  cost, with the network bitwise unchanged.
"""
from __future__ import annotations

import collections
import decimal
import errno
import fractions
import gzip
import json
import numbers
import os
import pathlib
import pickle
import shutil
import struct
import sys
import time
import traceback
import warnings

import numpy as np

import cbackprop
import hostile     # tests/hostile.py: this file's directory is on sys.path
from cbackprop import _io, datasets

ALLOWED = (ValueError, TypeError, MemoryError)
# what save/load may raise for a path that cannot be written or read (see the docstring)
PATH_ERRNOS = {errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG,
               errno.EROFS}
SIZES = [[3, 4, 2], [3, 3, 3], [1, 1], [5, 2, 3, 1], [2, 6, 2]]
DTYPES = [np.float64, np.float32]
CONFIGS = [([3, 4, 2], "tanh", "quadratic", "default"),
           ([3, 3, 3], ["relu", "softmax"], "log-likelihood", "default"),
           ([2, 6, 2], "sigmoid", "cross-entropy", "default"),
           ([1, 1], "identity", "quadratic", "large"),
           ([5, 2, 3, 1], ["tanh", "relu", "sigmoid"], "cross-entropy", "large"),
           ([4, 5, 4, 3], ["relu", "identity", "softmax"], "quadratic", "default")]
ACTS = ["sigmoid", "tanh", "relu", "identity", "softmax"]
COSTS = ["quadratic", "cross-entropy", "log-likelihood"]
FLAGS = ("monitor_evaluation_cost", "monitor_evaluation_accuracy", "monitor_training_cost",
         "monitor_training_accuracy")
READ_ONLY = {"feedforward", "backprop", "cost", "evaluate", "get_kernels", "trace", "total_cost", "gradient_buffer",
             "save", "save_network2", "gradient_check", "load", "load_network2", "load_mnist"}
METHODS = ["constructor", "feedforward", "backprop", "cost", "update_mini_batch", "evaluate", "sgd",
           "set_weights", "set_biases", "set_num_threads",
           "trace", "total_cost", "accumulate_gradient", "apply_gradient", "zero_gradient", "gradient_buffer",
           "save", "save_network2", "load", "load_network2", "gradient_check", "load_mnist"]
# relative frequencies: the first ten as before (about 6000 calls each per 92,000); files
# and finite differences are slow (1-2 ms a call), the rest as fast as backprop
WEIGHTS = np.array([6.0] * 10 + [5, 5, 6, 5, 2, 2] + [1.2, 1.2, 1.6, 1.6] + [1.5] + [1.0])
WEIGHTS /= WEIGHTS.sum()
NEW_OBJECT = {"constructor", "load", "load_network2", "load_mnist"}   # calls that do not act on nets[k]
# methods that raise FloatingPointError for non-finite results, changing nothing
COMPUTES = {"feedforward", "backprop", "cost", "update_mini_batch", "evaluate", "trace", "total_cost",
            "accumulate_gradient", "apply_gradient", "gradient_check"}
MAX_IMAGES = 2000   # load_mnist's max_images for the hostile MNIST files

# ---- the run's state, made by setup() ------------------------------------------------------------
rng = np.random.default_rng(0)
nets, pristine, acc_count = [], [], []   # the pool; its first parameters; samples accumulated
REF_NET = None                  # for gradient_check(net=...)
WORKDIR = FILES = BAD = FIFO = ""
SLOTS = []                      # paths that saves write and loads read
saved = {}                      # realpath -> what the last successful save wrote there (see content())
saved_bytes = {}                # realpath -> the file's bytes
HOSTILE = {}                    # "npz" / "json" / "mnist" -> [paths of hostile files]
MNIST = {}                      # "good" -> [paths of valid MNIST data], "bad" -> [damaged ones]
counts = collections.Counter()      # method -> calls
outcomes = collections.Counter()    # "ok" or exception type name
per_method = collections.Counter()  # (method, "ok" / "rejected" / other exception name)
failures = []


def setup(seed, workdir):
    """The pool of networks (both dtypes, one with square layers so that a network's own
    weights have the shape of a valid X, one with a single neuron per layer, then every other
    activation and cost, in hidden and output layers) and the files, in workdir (the cwd)."""
    global rng, REF_NET, WORKDIR, FILES, BAD, FIFO
    rng = np.random.default_rng(seed)
    WORKDIR = os.path.abspath(workdir)
    os.chdir(WORKDIR)                       # relative paths too
    nets[:] = [cbackprop.Network(s, dtype=d, seed=i) for i, (s, d) in
               enumerate((s, d) for s in SIZES for d in DTYPES)]
    nets.extend(cbackprop.Network(s, activations=a, cost=c, init=i, dtype=d, seed=100 + j) for j, ((s, a, c, i), d)
                in enumerate((c, d) for c in CONFIGS for d in DTYPES))
    pristine[:] = [[p.copy() for p in n.weights + n.biases] for n in nets]
    acc_count[:] = [0] * len(nets)
    REF_NET = cbackprop.reference.Network([3, 4, 2], seed=1)
    FILES = os.path.join(WORKDIR, "files")
    os.makedirs(FILES)
    BAD = os.path.join(WORKDIR, "damaged")   # rewritten for each damaged-file call
    FIFO = os.path.join(WORKDIR, "fifo")
    os.mkfifo(FIFO)
    SLOTS[:] = [os.path.join(FILES, "a.npz"), os.path.join(FILES, "b.npz"), os.path.join(FILES, "c.json"),
                os.path.join(FILES, "d"), "rel.npz", os.path.join(FILES, "link")]
    os.symlink("a.npz", os.path.join(FILES, "link"))   # saves write through it, onto a.npz
    make_hostile_files(os.path.join(WORKDIR, "hostile"))
    make_mnist_files(os.path.join(WORKDIR, "mnist"))


def make_hostile_files(d):
    """Every hostile file of tests/hostile.py, at sizes that make refusing them cheap (those
    that must be inflated to be refused, small) and declared sizes that would not fit."""
    small = {"net_checksum_bomb": 0.001, "fetch_gz_bomb": None, "json_many_lists": 0.002, "pkl_zeros_bomb": 0.004}
    for name, (build, how) in hostile.CASES.items():
        if small.get(name, 1.0) is None or "@" in name:
            continue
        sub = os.path.join(d, name)
        os.makedirs(sub)
        kind = {"load": "npz", "load_network2": "json"}.get(how, "mnist")
        HOSTILE.setdefault(kind, []).append(build(sub, small.get(name, 1.0)))
    sub = os.path.join(d, "tamper")
    os.makedirs(sub)
    HOSTILE["mnist"] += [hostile.pkl_tamper_dict(sub), hostile.pkl_dtype_tamper(sub)]


def make_mnist_files(d):
    """Valid MNIST data in each form load_mnist reads, with what it must return."""
    os.makedirs(d)
    g = np.random.default_rng(5)
    x = g.integers(0, 256, (30, 784), dtype=np.uint8)
    y = g.integers(0, 10, 30).astype(np.uint8)
    xt, yt = x[:7].copy(), y[:7].copy()
    want = ((x, y), None, (xt, yt))
    npz = os.path.join(d, "m.npz")
    with open(npz, "wb") as f:
        (np.savez_compressed if g.integers(2) else np.savez)(f, train_x=x, train_y=y, test_x=xt, test_y=yt)
    idx = os.path.join(d, "idx")
    os.makedirs(idx)
    parts = {hostile.IDX_FILES[0]: struct.pack(">4I", 2051, 30, 28, 28) + x.tobytes(),
             hostile.IDX_FILES[1]: struct.pack(">2I", 2049, 30) + y.tobytes(),
             hostile.IDX_FILES[2]: struct.pack(">4I", 2051, 7, 28, 28) + xt.tobytes(),
             hostile.IDX_FILES[3]: struct.pack(">2I", 2049, 7) + yt.tobytes()}
    for i, (name, data) in enumerate(parts.items()):
        with open(os.path.join(idx, name + (".gz" if i % 2 else "")), "wb") as f:
            f.write(gzip.compress(data) if i % 2 else data)
    book = ((x / np.float32(256)).astype(np.float32), y.astype(np.int64))
    pkls = []
    for protocol in (2, 5):
        p = os.path.join(d, f"m{protocol}.pkl.gz")
        with open(p, "wb") as f:
            f.write(gzip.compress(pickle.dumps((book, book, (xt / np.float32(256), yt)), protocol=protocol)))
        pkls.append(p)
    MNIST["good"] = [(npz, want), (idx, want)] + [(p, ((x, y), (x, y), (xt, yt))) for p in pkls]


def damaged_mnist():
    """(path, "maybe"): a damaged copy of a valid MNIST file (ValueError, or the original's
    content when the damage hit nothing checked) or of a valid IDX directory."""
    src, want = MNIST["good"][rng.integers(len(MNIST["good"]))]
    if os.path.isdir(src):
        dst = os.path.join(WORKDIR, "damaged_idx")
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
        victim = os.path.join(dst, sorted(os.listdir(dst))[rng.integers(4)])
    else:
        victim = dst = BAD + os.path.basename(src)
        shutil.copyfile(src, dst)
    with open(victim, "rb") as f:
        b = bytearray(f.read())
    if rng.integers(2):
        b = b[:rng.integers(len(b))]
    else:
        for _ in range(rng.integers(1, 4)):
            b[rng.integers(len(b))] ^= int(rng.integers(1, 256))
    with open(victim, "wb") as f:
        f.write(bytes(b))
    return dst, want


# ---- the pool's state ----------------------------------------------------------------------


def _zbytes(a):
    # None (not allocated yet) and all zeros are the same state
    return b"" if a is None or not a.any() else a.tobytes()


def snapshot(net):
    """(parameters, generator, num_threads, velocity, accumulated gradient, its count)."""
    eng = net._engine
    return (b"".join(p.tobytes() for p in net.weights + net.biases),
            repr(net._rng.bit_generator.state), net.num_threads,
            _zbytes(eng.velocity), _zbytes(eng.accum), net.accumulated)


def restore(k):
    net = nets[k]
    p = pristine[k]
    L = len(net.weights)
    net.weights = p[:L]
    net.biases = p[L:]
    if net._engine.velocity is not None:
        net._engine.velocity[...] = 0


# ---- value generators ------------------------------------------------------------------------
JUNK = [None, "abc", "", b"xy", {}, {"a": 1}, {1: 2}, 1j, 2 + 3j, object(), [], [[]],
        [1, [2, 3]], (1, "a"), set([1.0]), 1.5, 0, -1, True, False, np.bool_(True),
        np.float64(np.nan), float("inf"), 10**400, -10**400, print, Ellipsis,
        decimal.Decimal("1.5"), fractions.Fraction(1, 3), np.array("str"),
        np.array([1 + 2j]), np.array([None, 1.0], dtype=object), np.array(b"\x00\x01")]


def junk():
    return JUNK[rng.integers(len(JUNK))]


def special_values(arr, dtype):
    """Poke NaN, inf, huge, tiny, negative or zero into arr (in place, if float)."""
    if arr.size == 0 or arr.dtype.kind not in "fc":
        return arr
    kind = rng.integers(8)
    flat = arr.reshape(-1)
    idx = rng.integers(flat.size)
    if kind == 0:
        flat[idx] = np.nan
    elif kind == 1:
        flat[idx] = np.inf if rng.integers(2) else -np.inf
    elif kind == 2:
        with np.errstate(over="ignore"):
            flat[idx] = np.array(rng.choice([1e300, -1e300, 3e38, -3e38, 1e39, np.finfo(arr.dtype).max]),
                                 dtype=arr.dtype)
    elif kind == 3:
        flat[idx] = rng.choice([5e-324, -5e-324, 1e-310, 1e-45, -0.0])
    elif kind == 4:
        arr *= -1e6
    elif kind == 5:
        arr[...] = 0
    return arr


def rows(net, n_cols, m, dtype):
    """An array of m rows of n_cols, in one of many (valid or invalid) forms."""
    kind = rng.integers(26)
    base = rng.standard_normal((m, n_cols)).astype(dtype)
    if kind <= 5:          # plain, correct (most calls should reach the kernels)
        return base
    if kind == 6:          # one sample
        return base[0]
    if kind == 7:          # wrong dtype
        t = rng.choice(["f4", "f8", "f2", "i4", "i8", "u1", "?", "g", ">f8", "<f4", ">f4", "c16", "O", "U3",
                        "M8[s]", "m8[s]", "V8"])
        try:
            return base.astype(t)
        except (ValueError, TypeError):
            return base.astype("i2")
    if kind == 8:          # wrong shape
        shapes = [(m, n_cols + 1), (m, max(n_cols - 1, 0)), (n_cols + 1,), (m, n_cols, 1), (1, m, n_cols),
                  (), (0,), (0, n_cols), (0, 0), (n_cols, m) if n_cols != m else (n_cols + 2, m + 1)]
        return rng.standard_normal(shapes[rng.integers(len(shapes))]).astype(dtype)
    if kind == 9:          # non-finite / extreme values
        return special_values(base, dtype)
    if kind == 10:         # non-contiguous: every other column / row, reversed
        wide = rng.standard_normal((2 * m, 2 * n_cols)).astype(dtype)
        return [wide[::2, ::2], wide[:m, ::-1][:, :n_cols], wide[::-2][:m, :n_cols]][rng.integers(3)]
    if kind == 11:         # Fortran order
        return np.asfortranarray(base)
    if kind == 12:         # read-only
        base.flags.writeable = False
        return base
    if kind == 13:         # nested Python lists (maybe ragged)
        lst = base.tolist()
        if rng.integers(3) == 0 and lst:
            lst[0] = lst[0] + [1.0]
        return lst
    if kind == 14:         # bool / int arrays
        return (base > 0) if rng.integers(2) else (base * 10).astype(np.int64)
    if kind == 15:         # parameters of this network or another one
        other = nets[rng.integers(len(nets))] if rng.integers(2) else net
        ps = other.weights + other.biases
        return ps[rng.integers(len(ps))]
    if kind == 16:         # junk objects
        return junk()
    if kind == 17:         # a 0-d array / scalar
        return np.array(1.0, dtype=dtype) if rng.integers(2) else 1.0
    if kind == 18:         # empty
        return np.empty((0, n_cols), dtype=dtype) if rng.integers(2) else np.empty((0,), dtype=dtype)
    if kind == 19:         # a subclass of ndarray
        class Sub(np.ndarray):
            pass
        return base.view(Sub)
    if kind == 20:         # huge magnitudes everywhere
        with np.errstate(over="ignore"):
            return (base * np.float64(rng.choice([1e30, 1e200, -1e300]))).astype(dtype)
    if kind == 21:         # the other float dtype, contiguous
        return base.astype(np.float32 if np.dtype(dtype) == np.float64 else np.float64)
    if kind == 22:         # a view of a float buffer with an odd byte offset (unaligned)
        raw = np.zeros(base.nbytes + 1, dtype=np.uint8)
        arr = raw[1:].view(base.dtype).reshape(base.shape)
        arr[...] = base
        return arr
    if kind == 23:         # a complex array with zero imaginary part
        return base.astype(np.complex128)
    if kind == 24:         # tuple of arrays
        return tuple(base)
    return base


def eta_value(dtype):
    kind = rng.integers(6)
    if kind <= 2:
        return float(rng.choice([0.5, 3.0, 1e-3]))
    if kind == 3:
        return [0.0, -1.0, np.nan, np.inf, -np.inf, 5e-324, 1e-40, 1e39, 1e308, 1e300][rng.integers(10)]
    if kind == 4:
        return [1, np.float32(0.5), np.float64(2.0), np.int64(3), fractions.Fraction(1, 2), 10**400,
                np.float16(1.0), np.longdouble(0.1)][rng.integers(8)]
    return junk()


def int_value(valid_max):
    kind = rng.integers(4)
    if kind <= 1:
        return int(rng.integers(1, valid_max + 1))
    if kind == 2:
        return [0, -1, -10**30, np.int64(1), np.uint8(2), np.int32(-3)][rng.integers(6)]
    v = junk()
    # a valid huge epoch count would train (and grow the history) for ever
    return -5 if isinstance(v, int) and not isinstance(v, bool) and v > valid_max else v


def labels_value(m, n_out):
    kind = rng.integers(8)
    good = rng.integers(0, n_out, size=m)
    if kind <= 2:
        return good
    if kind == 3:
        return good.astype(rng.choice(["i1", "u1", "i2", "u8", "i4", ">i8"]))
    if kind == 4:   # out of range
        bad = good.copy()
        if m:
            bad[rng.integers(m)] = rng.choice([-1, n_out, 2**62, -2**62])
        return bad
    if kind == 5:   # floats, bools, wrong shape
        return [good.astype(float), good.astype(bool), good.reshape(-1, 1), good[:-1], np.append(good, 0),
                good.tolist(), np.uint64(2**64 - 1) * np.ones(m, dtype=np.uint64)][rng.integers(7)]
    return junk()


def lmbda_value():
    kind = rng.integers(5)
    if kind <= 1:
        return float(rng.choice([0.0, 0.1, 5.0]))
    if kind == 2:
        return [0, 1, np.float32(0.5), fractions.Fraction(1, 4), np.int64(2), -0.0][rng.integers(6)]
    if kind == 3:
        return [-0.1, np.nan, np.inf, -np.inf, 1e308, 10**400, -1, 1e300][rng.integers(8)]
    return junk()


def n_value():
    kind = rng.integers(5)
    if kind <= 1:
        return None
    if kind == 2:
        return int(rng.choice([1, 10, 1000, 60000]))
    if kind == 3:
        return [0, -1, np.int64(7), np.uint8(3), 2**70, 1.0, 10.5, True][rng.integers(8)]
    return junk()


def mu_value():
    kind = rng.integers(5)
    if kind <= 1:
        return float(rng.choice([0.0, 0.5, 0.9]))
    if kind == 2:
        return [1.0, 1, 0, np.float32(0.5), fractions.Fraction(1, 2), -0.0][rng.integers(6)]
    if kind == 3:
        return [1.0000001, 2.0, -0.1, np.nan, np.inf, 10**400, -1e-300][rng.integers(7)]
    return junk()


def hyper_kwargs(p):
    """Some of lmbda, n, mu, each with probability p."""
    kw = {}
    for name, gen in (("lmbda", lmbda_value), ("n", n_value), ("mu", mu_value)):
        if rng.random() < p:
            kw[name] = gen()
    return kw


def _real(v):
    """float(v) for a real number that is not a bool (None if it is not one)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        return None
    try:
        return float(v)
    except OverflowError:
        return None


def _count(v, minimum=1):
    return not isinstance(v, (bool, np.bool_)) and isinstance(v, numbers.Integral) and v >= minimum


def bad_hyper(eta, lmbda, n, mu, dtype):
    """Why update_mini_batch / apply_gradient / sgd must refuse these, or None."""
    e, l, u = _real(eta), _real(lmbda), _real(mu)
    info = np.finfo(dtype)
    if e is None or not float(info.tiny) <= e <= float(info.max):
        return f"eta={eta!r}"
    if l is None or not np.isfinite(l) or l < 0:
        return f"lmbda={lmbda!r}"
    if u is None or not np.isfinite(u) or not 0 <= u <= 1:
        return f"mu={mu!r}"
    if n is not None and not _count(n):
        return f"n={n!r}"
    if l > 0 and n is None:
        return "lmbda > 0 without n"
    if l > 0 and not 1 - e * (l / min(int(n), 2**1000)) > 0:
        return "weight decay factor 1 - eta lmbda / n <= 0"
    return None


def activations_value(n_layers):
    kind = rng.integers(6)
    if kind <= 1:   # one name for every layer (softmax fits only a single layer)
        return ACTS[rng.integers(5)]
    if kind == 2:   # one per layer, softmax maybe last
        names = [ACTS[rng.integers(4)] for _ in range(n_layers)]
        if rng.integers(2):
            names[-1] = "softmax"
        return [names, tuple(names), np.array(names), iter(names)][rng.integers(4)]
    if kind == 3:   # wrong length, softmax in a hidden layer, unknown or non-string names
        return [["sigmoid"] * (n_layers + 1), ["softmax"] * max(n_layers, 2), ["Sigmoid"] * n_layers,
                ["sigmoid"] * (n_layers - 1) + [None], [], ["sigmoid"] * (n_layers - 1) + [""],
                ["relu"] * (n_layers - 1) + [b"sigmoid"], ["tanh"] * (n_layers - 1) + [3]][rng.integers(8)]
    if kind == 4:
        return ["ReLU", "sigmoid ", "soft-max", "", "none", b"sigmoid", "linear", "SOFTMAX"][rng.integers(8)]
    return junk()


def cost_value():
    kind = rng.integers(4)
    if kind <= 1:
        return COSTS[rng.integers(3)]
    if kind == 2:
        return ["cross_entropy", "Quadratic", "log_likelihood", "", "mse", b"quadratic", "quadratic ",
                np.str_("cross-entropy"), "CrossEntropyCost"][rng.integers(9)]
    return junk()


def init_value():
    kind = rng.integers(3)
    if kind <= 1:
        return ["large", "default"][rng.integers(2)]
    return ["xavier", "Large", "", b"default", None, 0][rng.integers(6)] if rng.integers(2) else junk()


# ---- files: slots that saves write, damaged copies that loads must refuse -------------------


def content(net, kind):
    if kind == "json":   # network2 JSON holds float64 values, no activations (all sigmoid), no dtype
        return dict(kind=kind, sizes=tuple(net.sizes), activations=tuple(net.activations), cost=net.cost_name,
                    dtype=None, weights=[w.astype(np.float64) for w in net.weights],
                    biases=[b.astype(np.float64) for b in net.biases])
    return dict(kind=kind, sizes=tuple(net.sizes), activations=tuple(net.activations), cost=net.cost_name,
                dtype=net.dtype, weights=[w.copy() for w in net.weights], biases=[b.copy() for b in net.biases])


def slot_path():
    p = SLOTS[rng.integers(len(SLOTS))]
    form = rng.integers(6)
    return pathlib.Path(p) if form == 0 else os.fsencode(p) if form == 1 else p


def npz_members(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_npz(path, members, compressed=False):
    with open(path, "wb") as f:   # through a file: np.savez would append .npz to a name
        (np.savez_compressed if compressed else np.savez)(f, **members)


def damaged_npz(src):
    """(bytes of a damaged copy of the .npz src or None when written here, whether it may
    still load: "equal" (must load as the original), "maybe" (a damaged byte may hit
    nothing checked: ValueError, or equal), "no" (ValueError), what was done)."""
    data = saved_bytes[src]
    kind = int(rng.integers(14))
    b = bytearray(data)
    if kind == 0:
        return bytes(b[:rng.integers(len(b))]), "no", f"damage {kind}"
    if kind <= 2:
        for _ in range(rng.integers(1, 4)):
            b[rng.integers(len(b))] ^= int(rng.integers(1, 256))
        return bytes(b), "maybe", f"damage {kind}"
    if kind == 3:
        i = int(rng.integers(len(b)))
        b[i:i + int(rng.integers(1, 64))] = rng.bytes(int(rng.integers(1, 64)))
        return bytes(b), "maybe", f"damage {kind}"
    if kind == 4:
        return [b"", b"PK\x03\x04", b"PK\x05\x06" + bytes(18), b"PK\x03\x04" + rng.bytes(int(rng.integers(1, 3000))),
                rng.bytes(int(rng.integers(1, 3000))), b"\x93NUMPY\x01\x00"][rng.integers(6)], "no", f"damage {kind}"
    if kind == 5:
        return bytes(b) + rng.bytes(int(rng.integers(1, 100))), "maybe", f"damage {kind}"
    if kind == 6:
        return rng.bytes(int(rng.integers(1, 50))) + bytes(b), "maybe", f"damage {kind}"
    return altered_npz(src)


def altered_npz(src):
    """damaged_npz's altered members, written through numpy into BAD: (None, expect, what)."""
    mem = npz_members(src)
    info = saved[src]
    wkeys = sorted(k for k in mem if k.startswith(("weights_", "biases_")))
    pk = wkeys[rng.integers(len(wkeys))]
    alter = int(rng.integers(17))
    expect = "no"
    compressed = False
    if alter == 0:
        expect = "equal"
    elif alter == 1:
        expect, compressed = "equal", True
    elif alter == 2:   # stored big-endian: the same values, the same checksum
        mem[pk] = mem[pk].astype(mem[pk].dtype.newbyteorder(">"))
        expect = "equal"
    elif alter == 3:
        mem["version"] = np.array(int(rng.choice([0, 2, -1, 2**40])), dtype=np.int64)
    elif alter == 4:
        mem["format"] = np.array(["other", "", "cbackprop-network "][rng.integers(3)])
    elif alter == 5:
        del mem[sorted(mem)[rng.integers(len(mem))]]
    elif alter == 6:
        mem["extra"] = np.zeros(2)
    elif alter == 7:
        s = mem["sizes"].copy()
        s[rng.integers(s.size)] += int(rng.choice([1, -1, 2**40]))
        mem["sizes"] = s
    elif alter == 8:
        a = mem["activations"].copy().astype("U20")
        j = rng.integers(a.size)
        a[j] = [x for x in ["gelu", "softmax", "", "Sigmoid", "tanh"] if x != a[j]][rng.integers(4)]
        mem["activations"] = a
    elif alter == 9:
        mem["dtype"] = np.array(["float16", "int64", "object", "float128"][rng.integers(4)])
    elif alter == 10:
        mem["checksum"] = np.array(["sha256:" + "0" * 64, "", "md5:x"][rng.integers(3)])
    elif alter == 11:   # a non-finite parameter with a checksum that matches
        p = mem[pk].copy()
        p.reshape(-1)[rng.integers(p.size)] = [np.nan, np.inf, -np.inf][rng.integers(3)]
        mem[pk] = p
        ws = [mem[f"weights_{i}"] for i in range(len(info["weights"]))]
        bs = [mem[f"biases_{i}"] for i in range(len(info["biases"]))]
        mem["checksum"] = np.array(_io.checksum(sizes=info["sizes"], activations=info["activations"],
                                                cost=info["cost"], dtype=info["dtype"], weights=ws, biases=bs))
    elif alter == 12:   # one parameter one ulp off: the checksum no longer matches
        p = mem[pk].copy()
        j = rng.integers(p.size)
        p.reshape(-1)[j] = np.nextafter(p.reshape(-1)[j], np.inf)
        mem[pk] = p
    elif alter == 13:
        mem[pk] = np.array([None] * mem[pk].size, dtype=object)   # pickled on save, refused on load
    elif alter == 14:
        mem[pk] = mem[pk].T.copy() if mem[pk].ndim == 2 and mem[pk].shape[0] != mem[pk].shape[1] \
            else np.append(mem[pk], 1.0)
    elif alter == 15:
        other = np.float32 if mem[pk].dtype == np.float64 else np.float64
        mem[pk] = mem[pk].astype(other)
    else:
        mem[["sizes", "version", "cost", "activations"][rng.integers(4)]] = \
            [np.array([3.0, 2.0]), np.array(["3"]), np.array(1.5), np.zeros((2, 2))][rng.integers(4)]
    write_npz(BAD, mem, compressed)
    return None, expect, f"member alteration {alter} of {pk}"


def damaged_json(src):
    """(bytes of a damaged copy of the JSON src, "maybe": a ValueError, or a network
    equal to what the damaged text decodes to)."""
    data = saved_bytes[src]
    kind = int(rng.integers(9))
    b = bytearray(data)
    if kind == 0:
        return bytes(b[:rng.integers(len(b))])
    if kind == 1:
        for _ in range(rng.integers(1, 3)):
            b[rng.integers(len(b))] = int(rng.choice(list(b'0123456789.-+eE[]{},":tfn \xff\x00')))
        return bytes(b)
    if kind == 2:
        return [b"", b"[1, 2]", b"3", b'"x"', b"null", b"{}", b"\xef\xbb\xbf{}", b"[" * 100000,
                b'{"sizes": ' + b"[" * 5000 + b"]" * 5000 + b"}", b"\xff\xfe{", b"NaN"][rng.integers(11)]
    d = json.loads(data)
    L = len(d["sizes"]) - 1
    alter = int(rng.integers(12))
    if alter == 0:
        del d[["sizes", "weights", "biases", "cost"][rng.integers(4)]]
    elif alter == 1:
        d["sizes"] = [[3], [0, 2], ["3", 2], 3.5, [True, 2], [10**6, 10**6], [2.0, 3], None,
                      [10**400, 2]][rng.integers(9)]
    elif alter == 2:
        d["weights"][rng.integers(L)] = ["x", None, [], [[1.0]], [[True]], 1.0][rng.integers(6)]
    elif alter == 3:   # one value replaced
        w = d["weights"][rng.integers(L)]
        w[rng.integers(len(w))][0] = ["1", None, True, [1.0], 10**400, 1e308, -0.0, 5e-324, 0][rng.integers(9)]
    elif alter == 4:   # flat biases (accepted) or ragged columns
        d["biases"] = [[x[0] for x in col] for col in d["biases"]] if rng.integers(2) else \
            [col + [[1.0, 2.0]] for col in d["biases"]]
    elif alter == 5:
        d["cost"] = ["CrossEntropyCost", "QuadraticCost", "LogLikelihoodCost", 3, None, ""][rng.integers(6)]
    elif alter == 6:
        d["extra"] = {"activations": "relu"}
    elif alter == 7:
        d["biases"] = d["biases"][:-1]
    elif alter == 8:
        d["weights"] = d["weights"] + [[[1.0]]]
    elif alter == 9:
        d = [d]
    elif alter == 10:
        d["biases"][0] = {"0": 1.0}
    else:
        d["weights"][0] = [row[:-1] for row in d["weights"][0]]
    try:
        text = json.dumps(d)   # 10**400 and non-finite floats are written as JSON allows (Infinity, NaN)
    except (ValueError, OverflowError):
        text = "{"
    return text.encode()


def decode_network2(data):
    """What load_network2 must load from data if it loads it: my own reading of network2's JSON."""
    d = json.loads(data.decode("utf-8"))
    assert set(d) >= {"sizes", "weights", "biases", "cost"}
    sizes = d["sizes"]
    assert isinstance(sizes, list) and len(sizes) >= 2 and all(type(n) is int and n >= 1 for n in sizes)
    cost = {"QuadraticCost": "quadratic", "CrossEntropyCost": "cross-entropy"}[d["cost"]]
    def num(x):
        assert type(x) in (int, float), x
        return float(x)
    weights = [np.array([[num(x) for x in row] for row in w], dtype=np.float64).reshape(n, n_prev)
               for w, n_prev, n in zip(d["weights"], sizes[:-1], sizes[1:], strict=True)]
    biases = [np.array([num(x[0]) if isinstance(x, list) and len(x) == 1 else num(x) for x in b])
              .reshape(n) for b, n in zip(d["biases"], sizes[1:], strict=True)]
    assert all(np.isfinite(p).all() for p in weights + biases)
    return dict(kind="json", sizes=tuple(sizes), activations=("sigmoid",) * (len(sizes) - 1), cost=cost,
                dtype=None, weights=weights, biases=biases)


def check_loaded(net, want, kwargs):
    assert isinstance(net, cbackprop.Network), type(net)
    assert tuple(net.sizes) == want["sizes"], (net.sizes, want["sizes"])
    assert tuple(net.activations) == want["activations"], (net.activations, want["activations"])
    assert net.cost_name == want["cost"], (net.cost_name, want["cost"])
    dt = kwargs.get("dtype")
    dt = (want["dtype"] or np.dtype(np.float64)) if dt is None else np.dtype(dt)
    assert net.dtype == dt, (net.dtype, dt)
    for i, (a, b) in enumerate(zip(net.weights + net.biases, want["weights"] + want["biases"], strict=True)):
        assert np.array_equal(a, np.asarray(b).astype(dt)), f"parameter {i} differs from the file's"
    seed = kwargs.get("seed")
    if seed is not None:
        # seeded as a new network of that configuration (whose initial draws it made)
        fresh = cbackprop.Network(want["sizes"], activations=want["activations"], cost=want["cost"], seed=seed)
        assert repr(net._rng.bit_generator.state) == repr(fresh._rng.bit_generator.state), "seed not used"


def file_state(p):
    try:
        with open(p, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


class Stop(Exception):
    """What a callback raises: sgd must pass it on."""


class Recorder:
    def __init__(self):
        self.records = []

    def __call__(self, record):
        self.records.append(record)


def raising_callback(record):
    raise Stop(f"stopped by the callback after epoch {record['epoch']}")


def n_rows(X):
    """Rows of a validated X (1 for a single sample)."""
    X = np.asarray(X)
    return 1 if X.ndim == 1 else X.shape[0]


def check_output(net, out, what):
    """The range of the output activation.  Finite inputs and parameters can still give
    NaN after an unbounded hidden layer (relu, identity): its outputs can overflow to
    +-inf, and inf - inf is NaN (the reference computes the same); such rows are skipped."""
    act = net.activations[-1]
    if out.size:
        what += f" (output min {np.min(out)!r}, max {np.max(out)!r}, {np.isnan(out).sum()} NaN)"
    out = out.reshape(-1, out.shape[-1])
    if any(a in ("relu", "identity") for a in net.activations[:-1]):
        out = out[~np.isnan(out).any(axis=1)]
    if act in ("sigmoid", "softmax"):
        assert np.all((out >= 0) & (out <= 1)), f"{act} outside [0, 1] in {what}"
    if act == "softmax":
        s = out.sum(axis=1, dtype=np.float64)
        assert np.all(np.abs(s - 1) < (1e-5 if net.dtype == np.float32 else 1e-12) * out.shape[-1]), \
            f"softmax rows of {what} do not sum to 1: {s}"
    elif act == "tanh":
        assert np.all((out >= -1) & (out <= 1)), f"tanh outside [-1, 1] in {what}"
    elif act == "relu":
        assert not np.any(out < 0), f"relu below 0 in {what}"


def flat_gradient(nabla_b, nabla_w):
    """A gradient in gradient_buffer's layout: per layer w^l then b^l."""
    return np.concatenate([np.concatenate([w.ravel(), b.ravel()]) for w, b in zip(nabla_w, nabla_b)])


def describe(method, args, kwargs):
    def d(a):
        if isinstance(a, np.ndarray):
            return (f"ndarray(shape={a.shape}, dtype={a.dtype}, C={a.flags.c_contiguous}, "
                    f"F={a.flags.f_contiguous}, writeable={a.flags.writeable})")
        r = repr(a)
        return r if len(r) < 80 else r[:77] + "..."
    return f"{method}({', '.join(d(a) for a in args)}, {', '.join(f'{k}={d(v)}' for k, v in kwargs.items())})"


def key(path):
    """The file a path names: saves through a symlink land on its target."""
    return os.path.realpath(os.fsdecode(os.fspath(path)))


def junk_path(for_save):
    """A path that cannot be written (or read), or no path at all; for saves, never one
    outside WORKDIR (as root, a save onto /dev/null would replace it).  A FIFO: refused."""
    opts = [os.path.join(WORKDIR, "missing", "x.npz"), WORKDIR, FILES + os.sep, "",
            os.path.join(WORKDIR, "nul\0.npz"), os.path.join(WORKDIR, "n" * 300),
            os.path.join(SLOTS[0], "sub.npz"), pathlib.Path(WORKDIR, "missing", "y"), None, 3, 1.5, [],
            object(), os.fsencode(os.path.join(WORKDIR, "nul\0.npz")), np.array("x.npz"), ("a", "b"), FIFO]
    if not for_save:
        opts += ["/dev/null", os.path.join(WORKDIR, "missing.npz"), os.path.join(WORKDIR, "n" * 300 + "/x")]
    return opts[rng.integers(len(opts))]


# ---- calls: (args, kwargs, meta) for each method; meta says what the outcome may be -----------
def make_call(k):
    """(method, args, kwargs, meta) of a call on nets[k] (or a new object)."""
    net = nets[k]
    n_in, n_out = net.sizes[0], net.sizes[-1]
    dt = net.dtype
    m = int(rng.choice([1, 1, 2, 3, 5, 17]))
    method = METHODS[rng.choice(len(METHODS), p=WEIGHTS)]
    X = rows(net, n_in, m, dt)
    Y = rows(net, n_out, m, dt) if rng.integers(4) else rng.random((m, n_out)).astype(dt)
    args, kwargs, meta = CALLS.get(method, call_plain)(method, net, X, Y, m)
    return method, args, kwargs, meta


def call_plain(method, net, X, Y, m):
    """The methods on (X), (X, Y) or a hyper-parameter."""
    dt, n_out = net.dtype, net.sizes[-1]
    if method in ("feedforward", "gradient_buffer"):
        return ((X,) if method == "feedforward" else ()), {}, {}
    if method in ("backprop", "cost", "trace", "accumulate_gradient"):
        return (X, Y), {}, {}
    if method == "total_cost":
        kind = rng.integers(3)
        return ((X, Y, lmbda_value()) if kind == 1 else (X, Y)), ({"lmbda": lmbda_value()} if kind == 2 else {}), {}
    if method == "update_mini_batch":
        return (X, Y, eta_value(dt)), (hyper_kwargs(0.5) if rng.integers(3) == 0 else {}), {}
    if method == "zero_gradient":
        return ((junk(),) if rng.integers(8) == 0 else ()), {}, {}
    if method == "evaluate":
        Xa = np.asarray(X) if isinstance(X, np.ndarray) else X
        mm = Xa.shape[0] if isinstance(Xa, np.ndarray) and Xa.ndim == 2 else m
        return (X, labels_value(mm, n_out)), {}, {}
    if method == "set_num_threads":
        return ([1, 2, 64, 0, 65, -1, 1.0, True, "2", None, np.int64(2), 2**70][rng.integers(12)],), {}, {}
    raise AssertionError(method)


def call_constructor(method, net, X, Y, m):
    kind = rng.integers(6)
    if kind == 0:
        sizes = [int(v) for v in rng.integers(1, 6, size=rng.integers(2, 5))]
    elif kind == 1:   # absurd sizes: refused before allocating (MemoryError) or over the limit
        sizes = [int(rng.integers(2**25, 2**31)), int(rng.integers(2**25, 2**31))]
        if rng.integers(3) == 0:
            sizes.append(2**31 + int(rng.integers(10)))
    elif kind == 2:
        sizes = [[], [3], [0, 2], [-1, 2], [2, 0], [2.0, 3], [True, 2], ["3", 2], [None, 1], "32",
                 b"ab", 5, None, {3: 1, 2: 1}, np.array(3), np.array([3, 2]), (3, 2), range(1, 4),
                 [np.int64(2), np.uint8(3)], [10**400, 2], [3 + 0j, 2], iter([2, 3]), [[2], [3]],
                 np.array([2.0, 3.0])][rng.integers(24)]
    else:
        sizes = [int(v) for v in rng.integers(1, 6, size=2)]
    dtype = [np.float64, np.float32, "float32", "f8", np.dtype("f4"), None, np.float16, np.int32,
             "garbage", complex, 3, np.longdouble, ">f8", object][rng.integers(14)] \
        if rng.integers(2) else np.float64
    seed = [None, 0, 7, -1, 2**70, 1.5, "1", True, np.int64(5), [1, 2]][rng.integers(10)] \
        if rng.integers(2) else None
    kw = dict(dtype=dtype, seed=seed)
    n_layers = len(sizes) - 1 if isinstance(sizes, list) and len(sizes) >= 2 else 2
    if rng.integers(3) == 0:
        kw["activations"] = activations_value(n_layers)
    if rng.integers(3) == 0:
        kw["cost"] = cost_value()
    if rng.integers(4) == 0:
        kw["init"] = init_value()
    return (sizes,), kw, {}


def call_apply_gradient(method, net, X, Y, m):
    dt = net.dtype
    kw = hyper_kwargs(0.5)
    if rng.integers(4) == 0:
        kw["samples"] = int_value(20) if rng.integers(4) else None
    meta = {"accumulated": net.accumulated}
    if net.accumulated == 0 and kw.get("samples") is None:
        # nothing accumulated: must be refused, with ValueError when the rest is valid
        eta = eta_value(dt)
        ok = bad_hyper(eta, kw.get("lmbda", 0.0), kw.get("n"), kw.get("mu", 0.0), dt) is None
        meta["must_raise"] = (ValueError,) if ok else ALLOWED
        return (eta,), kw, meta
    return (eta_value(dt),), kw, meta


def call_sgd(method, net, X, Y, m):
    n_in, n_out, dt = net.sizes[0], net.sizes[-1], net.dtype
    epochs = int_value(2)
    mbs = int_value(8) if rng.integers(4) else [10**30, 2**63][rng.integers(2)]
    td = None
    kind = rng.integers(4)
    if kind == 1:
        Xt = rows(net, n_in, m, dt)
        td = (Xt, labels_value(m, n_out))
    elif kind == 2:
        td = [junk(), (X,), (X, None, None), [X, rng.integers(0, n_out, m)]][rng.integers(4)]
    eta = eta_value(dt)
    kw = dict(test_data=td)
    meta = {"extra": (FloatingPointError,), "changes_ok_on": (FloatingPointError,)}
    if rng.integers(2):   # chapter 3: weight decay, momentum, monitoring, stopping, callback
        if rng.integers(4):   # mostly valid other arguments, so that the checks of these are reached
            X = rng.standard_normal((m + 1, n_in)).astype(dt)
            Y = rng.random((m + 1, n_out)).astype(dt)
            epochs, mbs, eta = int(rng.integers(1, 3)), int(rng.integers(1, 9)), float(rng.choice([0.5, 3.0]))
            td = None if rng.integers(2) else (rng.standard_normal((3, n_in)), rng.integers(0, n_out, 3))
            kw["test_data"] = td
        kw.update({k2: v for k2, v in hyper_kwargs(0.4).items() if k2 != "n"})
        meta = sgd_chapter3(net, X, Y, m, kw, meta)
    return (X, Y, epochs, mbs, eta), kw, meta


def sgd_chapter3(net, X, Y, m, kw, meta):
    """Add evaluation data, monitoring flags, stopping rules and a callback to sgd's kw."""
    n_in, n_out, dt = net.sizes[0], net.sizes[-1], net.dtype
    ek = rng.integers(6)
    me = int(rng.choice([0, 1, 3, 7]))
    if ek == 1:
        kw["evaluation_data"] = (rows(net, n_in, max(me, 1), dt), labels_value(max(me, 1), n_out))
    elif ek == 2:
        kw["evaluation_data"] = (rows(net, n_in, max(me, 1), dt), rows(net, n_out, max(me, 1), dt))
    elif ek == 3:
        kw["evaluation_data"] = [junk(), (X,), (np.empty((0, n_in), dt), np.empty(0, np.int64)),
                                 (X, None), [X, Y]][rng.integers(5)]
    elif ek >= 4:   # valid: (X, labels) or (X, one-hot Y)
        Xe = rng.standard_normal((me, n_in)).astype(dt)
        le = rng.integers(0, n_out, me)
        kw["evaluation_data"] = (Xe, le) if ek == 4 else (Xe, np.eye(n_out, dtype=dt)[le])
    for flag in FLAGS:
        if rng.integers(3) == 0:
            kw[flag] = [True, True, True, False, np.bool_(True), 1, None, "yes"][rng.integers(8)]
    for name in ("early_stopping_n", "eta_schedule_n"):
        if rng.integers(4) == 0:
            kw[name] = int_value(2)
    ck = rng.integers(5)
    if ck == 1:
        kw["callback"] = Recorder()
    elif ck == 2:
        kw["callback"] = [3, "f", [], None, ()][rng.integers(5)]
    elif ck == 3:
        kw["callback"] = raising_callback
        meta = {"extra": (FloatingPointError, Stop), "changes_ok_on": (FloatingPointError, Stop)}
    return meta


def call_set_params(method, net, X, Y, m):
    dt = net.dtype
    cur = net.weights if method == "set_weights" else net.biases
    kind = rng.integers(7)
    if kind <= 1:
        new = [p.copy() + np.asarray(rng.standard_normal(p.shape), dtype=p.dtype) * 0.1 for p in cur]
    elif kind == 2:
        new = [special_values(p.copy(), dt) for p in cur]
    elif kind == 3:
        new = [p.copy() for p in cur][:-1] if rng.integers(2) else [p.copy() for p in cur] + [cur[0]]
    elif kind == 4:
        new = [rows(net, p.shape[-1], p.shape[0] if p.ndim == 2 else 1, dt) for p in cur]
    elif kind == 5:
        new = junk()
    else:
        new = [np.asfortranarray(p.T.T) if p.ndim == 2 else p[::-1] for p in cur]
        if rng.integers(2):
            new = tuple(x.tolist() for x in new)
    return (new,), {}, {}


def call_gradient_check(method, net, X, Y, m):
    target = net if rng.integers(8) else [junk(), REF_NET, nets[rng.integers(len(nets))]][rng.integers(3)]
    kw = {"max_per_layer": int_value(3) if rng.integers(8) else None}   # None: every parameter (small nets)
    if rng.integers(3) == 0:
        kw["eps"] = [1e-5, 1e-4, 1e-6, np.float32(1e-3), 0, 1, -1e-5, np.nan, np.inf, 1e-300, 0.5, "1e-5",
                     None, 1j, True, fractions.Fraction(1, 1000)][rng.integers(16)]
    if rng.integers(4) == 0:
        kw["seed"] = [0, 1, None, -1, 1.5, "x", 2**70, np.int64(3)][rng.integers(8)]
    return (target, X, Y), kw, {}


def call_save(method, net, X, Y, m):
    meta = {"oserror_ok": True}
    if rng.integers(4):
        path = slot_path()
        meta = {"slot": key(path)}
        if method == "save_network2" and set(net.activations) != {"sigmoid"}:
            meta["must_raise"] = (ValueError,)
        elif not isinstance(path, bytes):
            meta["expect_ok"] = True
    else:
        path = junk_path(for_save=True)
    if rng.integers(20) == 0:   # positional extra argument
        return (path, junk()), {}, {"oserror_ok": True}
    return (path,), {}, meta


def call_load(method, net, X, Y, m):
    fmt = "npz" if method == "load" else "json"
    kind = rng.integers(11)
    srcs = [p for p in saved if saved[p]["kind"] == fmt]
    if kind <= 3 or (kind <= 6 and not srcs):   # a slot: what was last saved there, if anything
        return load_slot(method, fmt)
    if kind <= 6:   # a damaged copy of a saved file: ValueError (or, when nothing checked was hit, equal)
        return load_damaged(fmt, srcs)
    if kind == 7:   # a hostile file: ValueError, with little memory and time
        files = HOSTILE[fmt] + HOSTILE["npz" if fmt == "json" else "json"][:2]
        return (files[rng.integers(len(files))],), {}, {"only": (ValueError,)}
    path = junk_path(for_save=False)
    meta = {"oserror_ok": True}
    if path in ("/dev/null", FIFO):
        meta = {"only": (ValueError,)}
    return (path,), {}, meta


def load_slot(method, fmt):
    path = slot_path()
    want = saved.get(key(path))
    kw = {}
    dts = [None, np.float32, np.float64, "f4", "float16", 3, "x"] if method == "load" else \
        [np.float32, np.float64, "f8", None, np.int64, [1]]
    if rng.integers(2):
        kw["dtype"] = dts[rng.integers(len(dts))]
    if rng.integers(3) == 0:
        kw["seed"] = [0, 5, None, -1, 1.5, "3", np.int64(2)][rng.integers(7)]
    kw_ok = (kw.get("dtype") in (None, np.float32, np.float64, "f4", "f8")
             and (method == "load" or kw.get("dtype", np.float64) is not None)
             and (kw.get("seed") is None or _count(kw["seed"], 0)))
    if want is None:
        meta = {"oserror_ok": True}
    elif want["kind"] != fmt:
        meta = {"only": (ValueError,)} if kw_ok else {}
    else:
        meta = {"want": want, "expect_ok": kw_ok}
    return (path,), kw, meta


def load_damaged(fmt, srcs):
    src = srcs[rng.integers(len(srcs))]
    kw = {"dtype": [np.float32, np.float64][rng.integers(2)]} if rng.integers(2) else {}
    if fmt == "npz":
        data, expect, how = damaged_npz(src)
        meta = {"only": (ValueError,)} if expect == "no" else \
            {"want": saved[src], "expect_ok": True} if expect == "equal" else \
            {"want": saved[src], "only": (ValueError,)}
        meta["how"] = how
    else:
        data = damaged_json(src)
        meta = {"only": (ValueError,), "damaged": data}
    if data is not None:
        with open(BAD, "wb") as f:
            f.write(data)
    return (BAD if rng.integers(4) else pathlib.Path(BAD),), kw, meta


def call_load_mnist(method, net, X, Y, m):
    kind = rng.integers(8)
    if kind <= 2:   # valid: exactly these arrays
        path, want = MNIST["good"][rng.integers(len(MNIST["good"]))]
        return ((pathlib.Path(path) if rng.integers(2) else path),), {}, {"mnist": want, "expect_ok": True}
    if kind <= 4:   # damaged: ValueError, or arrays that pass every rule
        path, _ = damaged_mnist()
        return (path,), {}, {"only": (ValueError,)}
    if kind <= 6:   # hostile: ValueError, with little memory and time
        files = HOSTILE["mnist"]
        return (files[rng.integers(len(files))],), {"max_images": MAX_IMAGES}, {"only": (ValueError,)}
    path = junk_path(for_save=False)
    kw = {"max_images": [-1, 1.5, "10", None, True][rng.integers(5)]} if rng.integers(3) == 0 else {}
    return (path,), kw, ({"only": (ValueError,)} if path in ("/dev/null", FIFO) else {"oserror_ok": True})


CALLS = {"constructor": call_constructor, "apply_gradient": call_apply_gradient, "sgd": call_sgd,
         "set_weights": call_set_params, "set_biases": call_set_params, "gradient_check": call_gradient_check,
         "save": call_save, "save_network2": call_save, "load": call_load, "load_network2": call_load,
         "load_mnist": call_load_mnist}


def invoke(k, method, args, kwargs):
    net = nets[k]
    if method == "constructor":
        return cbackprop.Network(*args, **kwargs)
    if method in ("load", "load_network2"):
        return getattr(cbackprop.Network if rng.integers(2) else cbackprop, method)(*args, **kwargs)
    if method == "load_mnist":
        return datasets.load_mnist(*args, **kwargs)
    if method == "gradient_check":
        return cbackprop.gradient_check(*args, **kwargs)
    if method == "gradient_buffer":
        return net.gradient_buffer
    if method == "set_weights":
        net.weights = args[0]
        return None
    if method == "set_biases":
        net.biases = args[0]
        return None
    if method == "set_num_threads":
        net.num_threads = args[0]
        return None
    return getattr(net, method)(*args, **kwargs)


# ---- checks of a successful call's result ------------------------------------------------------
def check_result(method, net, args, kwargs, result, meta):
    CHECKS.get(method, lambda *a: None)(method, net, args, kwargs, result, meta)


def check_forward(method, net, args, kwargs, result, meta):
    """feedforward, backprop, cost, evaluate."""
    n_in, n_out = net.sizes[0], net.sizes[-1]
    params = net.weights + net.biases
    if method == "feedforward":
        X = np.asarray(args[0])
        want = (n_out,) if X.ndim == 1 else (X.shape[0], n_out)
        assert isinstance(result, np.ndarray) and result.shape == want and result.dtype == net.dtype, \
            (result.shape, want)
        check_output(net, result, "feedforward")
    elif method == "backprop":
        nb, nw = result
        assert [b.shape for b in nb] == [b.shape for b in net.biases]
        assert [w.shape for w in nw] == [w.shape for w in net.weights]
        assert all(a.dtype == net.dtype for a in nb + nw)
        # the returned gradient must not alias the parameters
        assert not any(np.may_share_memory(a, p) for a in nb + nw for p in params)
    elif method == "cost":
        assert type(result) is float, result
        if net.cost_name == "quadratic":   # the others can be < 0 for targets outside [0, 1]
            assert result >= 0 or np.isnan(result), result
    elif method == "evaluate":
        m = np.asarray(args[0]).reshape(-1, n_in).shape[0]
        assert type(result) is int and 0 <= result <= m, result


def check_trace(method, net, args, kwargs, result, meta):
    n_in, n_out, dt = net.sizes[0], net.sizes[-1], net.dtype
    params = net.weights + net.biases
    X, Y = args
    m, sizes, L = n_rows(X), net.sizes, len(net.sizes) - 1
    assert type(result).__name__ == "Trace"
    assert (len(result.z), len(result.a), len(result.delta), len(result.nabla_b), len(result.nabla_w)) \
        == (L, L + 1, L, L, L)
    assert [z.shape for z in result.z] == [(m, n) for n in sizes[1:]], [z.shape for z in result.z]
    assert [d.shape for d in result.delta] == [(m, n) for n in sizes[1:]]
    assert [a.shape for a in result.a] == [(m, n) for n in sizes]
    arrays = result.z + result.a + result.delta + result.nabla_b + result.nabla_w
    assert all(type(a) is np.ndarray and a.dtype == dt for a in arrays)
    assert not any(np.may_share_memory(a, p) for a in arrays for p in params)
    assert type(result.cost) is float
    with np.errstate(over="ignore"):
        assert np.array_equal(result.a[0], np.asarray(X).astype(dt).reshape(m, n_in)), "a[0] is not X"
    check_output(net, result.a[-1], "trace a^L")
    nb, nw = net.backprop(X, Y)   # the same gradient, from the same kernels
    for g, t in zip(nb + nw, result.nabla_b + result.nabla_w):
        assert np.array_equal(g, t, equal_nan=True), "trace's nabla differs from backprop's"
    out = net.feedforward(X).reshape(m, n_out)
    tol = 1e-5 if dt == np.float32 else 1e-12
    assert np.allclose(result.a[-1], out, rtol=tol, atol=tol, equal_nan=True), "trace's a^L != feedforward"


def check_total_cost(method, net, args, kwargs, result, meta):
    assert type(result) is float, result
    lm = _real(args[2] if len(args) > 2 else kwargs.get("lmbda", 0.0))
    assert lm is not None and np.isfinite(lm) and lm >= 0, f"accepted lmbda={args[2:]}{kwargs}"
    c = net.cost(*args[:2])
    m = n_rows(args[0])
    want = c + (0.5 * (lm / m) * sum(float(np.sum(w.astype(np.float64) ** 2)) for w in net.weights)
                if lm else 0.0)
    assert (np.isnan(result) and np.isnan(want)) or result == want or \
        abs(result - want) <= 1e-12 * abs(want), (result, want)


def check_update(method, net, args, kwargs, result, meta):
    """update_mini_batch, apply_gradient."""
    eta = args[2] if method == "update_mini_batch" else args[0]
    why = bad_hyper(eta, kwargs.get("lmbda", 0.0), kwargs.get("n"), kwargs.get("mu", 0.0), net.dtype)
    assert why is None, f"accepted invalid {why}"
    if method == "apply_gradient":
        s = kwargs.get("samples")
        assert (s is None and meta["accumulated"] > 0) or _count(s), f"accepted samples={s!r}"


def check_sgd(method, net, args, kwargs, result, meta):
    X, Y, epochs, mbs, eta = args
    why = bad_hyper(eta, kwargs.get("lmbda", 0.0), n_rows(X), kwargs.get("mu", 0.0), net.dtype)
    assert why is None, f"accepted invalid {why}"
    assert _count(epochs) and _count(mbs), (epochs, mbs)
    for flag in FLAGS:
        assert isinstance(kwargs.get(flag, False), (bool, np.bool_)), f"accepted {flag}={kwargs[flag]!r}"
    for name in ("early_stopping_n", "eta_schedule_n"):
        assert kwargs.get(name) is None or _count(kwargs[name]), f"accepted {name}={kwargs[name]!r}"
    stopping = kwargs.get("early_stopping_n") is not None or kwargs.get("eta_schedule_n") is not None
    if stopping or any(kwargs.get(f) for f in ("monitor_evaluation_cost", "monitor_evaluation_accuracy")):
        assert kwargs.get("evaluation_data") is not None, "monitoring without evaluation_data accepted"
    assert isinstance(result, list) and 1 <= len(result) <= epochs, (len(result), epochs)
    if len(result) < epochs:
        assert stopping and "stop_reason" in result[-1], result[-1]
    for e, rec in enumerate(result, start=1):
        assert rec["epoch"] == e and {"seconds", "eta"} <= set(rec), rec
        for flag, field in (("monitor_training_cost", "training_cost"),
                            ("monitor_training_accuracy", "training_accuracy")):
            assert bool(kwargs.get(flag)) == (field in rec), (flag, rec)
        if kwargs.get("test_data") is not None:
            assert "test_correct" in rec, rec
    cb = kwargs.get("callback")
    if isinstance(cb, Recorder):
        assert len(cb.records) == len(result) and all(a is b for a, b in zip(cb.records, result)), \
            "callback records differ from the history"
    assert cb is None or isinstance(cb, Recorder), f"callback {cb!r} accepted but not raised"


def check_gradient_buffer(method, net, args, kwargs, result, meta):
    buf = result
    params = net.weights + net.biases
    P = sum(p.size for p in params)
    assert type(buf) is np.ndarray and buf.shape == (P,) and buf.dtype == net.dtype and buf.flags.c_contiguous
    assert buf is net.gradient_buffer, "gradient_buffer is a new array each time"
    assert not any(np.may_share_memory(buf, p) for p in params)


def check_zero_gradient(method, net, args, kwargs, result, meta):
    assert not args, f"zero_gradient accepted {args}"


def check_gradient_check(method, net, args, kwargs, result, meta):
    target = args[0]
    L = len(target.sizes) - 1
    assert set(result) >= {"layers", "max_error", "parameters", "cost_evaluations"}, sorted(result)
    assert len(result["layers"]) == L
    P = sum(w.size + b.size for w, b in zip(target.weights, target.biases))
    assert result["parameters"] == P
    mpl = kwargs.get("max_per_layer")
    want = [min(w.size, mpl or w.size) + min(b.size, mpl or b.size)
            for w, b in zip(target.weights, target.biases)]
    assert [d["checked"] for d in result["layers"]] == want, (result["layers"], want)
    assert result["cost_evaluations"] == 2 * sum(want)
    e = result["max_error"]
    assert type(e) is float and (e >= 0 or np.isnan(e)), e
    eps = kwargs.get("eps", 1e-5)
    assert _real(eps) is not None and 0 < float(eps) < 1, f"accepted eps={eps!r}"


def check_constructor(method, net, args, kwargs, result, meta):
    net2 = result
    assert (len(net2.sizes) >= 2 and all(type(n) is int and n >= 1 for n in net2.sizes)
            and net2.dtype in (np.float32, np.float64)), f"a bad network {net2!r}"
    acts = net2.activations
    L = len(net2.sizes) - 1
    assert len(acts) == L and all(isinstance(a, str) and a in ACTS for a in acts), acts
    assert "softmax" not in acts[:-1], acts
    assert net2.cost_name in COSTS
    assert net2.cost_name != "cross-entropy" or acts[-1] == "sigmoid", (acts, net2.cost_name)
    assert net2.cost_name != "log-likelihood" or acts[-1] == "softmax", (acts, net2.cost_name)
    a = kwargs.get("activations", "sigmoid")
    if isinstance(a, str):
        assert acts == (a,) * L, (a, acts)
    elif isinstance(a, (list, tuple, np.ndarray)):
        assert list(acts) == list(a), (a, acts)
    assert net2.cost_name == kwargs.get("cost", "quadratic"), kwargs.get("cost")
    assert kwargs.get("init", "large") in ("large", "default"), f"accepted init={kwargs['init']!r}"


def check_save(method, net, args, kwargs, result, meta):
    assert result is None
    assert isinstance(args[0], (str, bytes, os.PathLike)), f"saved to {args[0]!r}"
    assert os.path.isfile(args[0])
    if os.fsdecode(os.fspath(args[0])).endswith(os.sep + "link"):
        assert os.path.islink(args[0]), "a save replaced the symlink instead of its target"
    assert method == "save" or set(net.activations) == {"sigmoid"}, "network2 JSON of a non-sigmoid net"


def check_load(method, net, args, kwargs, result, meta):
    want = meta.get("want")
    if want is None:   # a damaged JSON file loaded: it must say what was loaded
        assert "damaged" in meta, "loaded a path that holds no network"
        want = decode_network2(meta["damaged"])
    check_loaded(result, want, kwargs)


def check_load_mnist(method, net, args, kwargs, result, meta):
    """Every rule of load_mnist's result; for a valid file, exactly its arrays."""
    assert isinstance(result, tuple) and len(result) == 3 and result[0] is not None and result[2] is not None
    for part in result:
        if part is None:
            continue
        x, y = part
        assert type(x) is np.ndarray and x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == 784
        assert x.flags.c_contiguous and x.flags.writeable
        assert type(y) is np.ndarray and y.dtype == np.uint8 and y.shape == (x.shape[0],)
        assert x.size == 0 or (float(x.min()) >= 0 and float(x.max()) < 1), "pixels outside [0, 1)"
        assert y.size == 0 or int(y.max()) <= 9, "a label above 9"
    want = meta.get("mnist")
    if want is not None:
        for got, w in zip(result, want):
            assert (got is None) == (w is None), "validation part"
            if w is not None:
                assert np.array_equal(got[0], w[0] / np.float32(256)) and np.array_equal(got[1], w[1])


CHECKS = {"feedforward": check_forward, "backprop": check_forward, "cost": check_forward,
          "evaluate": check_forward, "trace": check_trace, "total_cost": check_total_cost,
          "update_mini_batch": check_update, "apply_gradient": check_update, "sgd": check_sgd,
          "gradient_buffer": check_gradient_buffer, "zero_gradient": check_zero_gradient,
          "gradient_check": check_gradient_check, "constructor": check_constructor,
          "save": check_save, "save_network2": check_save, "load": check_load, "load_network2": check_load,
          "load_mnist": check_load_mnist}


# ---- the loop: make a call, run it, judge it ---------------------------------------------------
def one_call(i, k):
    net = nets[k]
    method, args, kwargs, meta = make_call(k)
    counts[method] += 1
    before = snapshot(net)
    acc_before = None if net._engine.accum is None else net._engine.accum.copy()
    slot_before = file_state(meta["slot"]) if "slot" in meta else None
    what = f"call {i}: {describe(method, args, kwargs)}" + (f" [{meta['how']}]" if "how" in meta else "")
    try:
        result = invoke(k, method, args, kwargs)
    except BaseException as exc:  # judged: allowed types only, with a message, nothing changed
        judge_raised(what, method, net, meta, exc, before)
        if "slot" in meta and file_state(meta["slot"]) != slot_before:
            failures.append(f"{what} raised {type(exc).__name__}: {exc} but changed the file {meta['slot']}")
    else:
        judge_returned(what, method, k, args, kwargs, meta, result, before, acc_before)
    if net.accumulated != acc_count[k]:
        failures.append(f"{what}: accumulated = {net.accumulated}, expected {acc_count[k]}")
        acc_count[k] = net.accumulated
    # keep the parameters meaningful: training with huge eta can saturate them
    if not all(np.isfinite(p).all() and np.abs(p).max() < 1e6 for p in net.weights + net.biases):
        restore(k)
        outcomes["restored"] += 1


def judge_raised(what, method, net, meta, exc, before):
    name = type(exc).__name__
    outcomes[name] += 1
    allowed = isinstance(exc, meta.get("only", ALLOWED) + meta.get("extra", ()))
    nonfinite = isinstance(exc, FloatingPointError) and method in COMPUTES
    if nonfinite:
        allowed = "only" not in meta and "must_raise" not in meta
        if not ("non-finite value in layer " in str(exc) or "would make layer " in str(exc)
                or "the cost is not finite" in str(exc) or "the accumulated gradient" in str(exc)
                or "optimizer state" in str(exc)):
            failures.append(f"{what} raised {name} not naming the layer or the cost: {exc}")
    if meta.get("oserror_ok") and isinstance(exc, OSError) and (
            exc.errno in PATH_ERRNOS or isinstance(exc, shutil.SpecialFileError)):
        allowed = True
    per_method[method, "rejected" if allowed and isinstance(exc, ALLOWED) else name] += 1
    if not allowed:
        failures.append(f"{what} raised {name}: {exc}\n" + traceback.format_exc(limit=6))
    elif not str(exc):
        failures.append(f"{what} raised {name} with an empty message")
    elif not isinstance(exc, meta.get("must_raise", BaseException)):
        failures.append(f"{what} raised {name}: {exc}; expected {meta['must_raise']}")
    elif meta.get("expect_ok"):
        failures.append(f"{what} refused a valid call: {name}: {exc}")
    elif len(str(exc)) > 1000:
        failures.append(f"{what} raised {name} with a message of {len(str(exc))} characters")
    if isinstance(exc, FloatingPointError) and not nonfinite:
        if not hasattr(exc, "history") or not all(np.isfinite(p).all() for p in net.weights + net.biases):
            failures.append(f"{what} raised {exc!r} without history or left non-finite parameters")
    elif method not in NEW_OBJECT and not isinstance(exc, meta.get("changes_ok_on", ())) \
            and snapshot(net) != before:
        failures.append(f"{what} raised {name}: {exc} but changed the network")


def judge_returned(what, method, k, args, kwargs, meta, result, before, acc_before):
    net = nets[k]
    outcomes["ok"] += 1
    per_method[method, "ok"] += 1
    after = snapshot(net)
    if "must_raise" in meta:
        failures.append(f"{what} succeeded; expected {meta['must_raise']}")
    try:
        check_result(method, net, args, kwargs, result, meta)
    except AssertionError as exc:
        failures.append(f"{what} returned a bad result: {exc}\n" + traceback.format_exc(limit=3))
    except Exception as exc:  # a check itself failing (e.g. backprop after trace)
        failures.append(f"{what}: checking its result raised {exc!r}\n" + traceback.format_exc(limit=4))
    if method in READ_ONLY and after != before:
        failures.append(f"{what}: read-only method changed the network")
    elif method == "accumulate_gradient":
        acc_count[k] += n_rows(args[0])
        if after[:4] != before[:4]:
            failures.append(f"{what} changed more than the accumulated gradient")
        check_accumulated(what, net, args, acc_before)
    elif method in ("zero_gradient", "apply_gradient"):
        acc_count[k] = 0
        if after[4] != b"" or after[5] != 0:
            failures.append(f"{what} left an accumulated gradient")
        if method == "zero_gradient" and after[:4] != before[:4]:
            failures.append(f"{what} changed more than the accumulated gradient")
        if method == "apply_gradient" and after[1:3] != before[1:3]:
            failures.append(f"{what} changed the generator or num_threads")
    if method in ("save", "save_network2"):
        p = key(args[0])
        saved[p] = content(net, "npz" if method == "save" else "json")
        saved_bytes[p] = file_state(p)
    elif method == "gradient_buffer" and rng.integers(4) == 0:
        # as a reduction over ranks would: the buffer is the gradient apply_gradient uses
        with np.errstate(over="ignore"):
            result *= 2


def check_accumulated(what, net, args, acc_before):
    """The buffer grew by the summed gradient of the rows (backprop averages them).
    Normwise: catches a wrong scale, layout or a lost previous sum; cancellation (softmax's
    Jacobian, saturated outputs) makes single entries less accurate."""
    m = n_rows(args[0])
    acc = net._engine.accum
    prev = np.zeros(acc.shape) if acc_before is None else acc_before.astype(np.float64)
    with np.errstate(all="ignore"):
        nb, nw = net.backprop(*args)
        want = prev + m * flat_gradient(nb, nw).astype(np.float64)
        X2 = np.asarray(args[0]).astype(net.dtype).reshape(m, -1)
        Y2 = np.asarray(args[1]).astype(net.dtype).reshape(m, -1)
        # a nearly saturated softmax makes its Jacobian's entries cancel: the
        # gradient's rounding is then unbounded relative to the gradient
        conditioned = net.activations[-1] != "softmax" or \
            float(net.feedforward(X2).max(axis=1).max()) < 1 - 1e-3
        if conditioned and np.isfinite(want).all() and np.isfinite(acc).all():
            bound = np.abs(prev) + sum(np.abs(flat_gradient(*net.backprop(X2[r], Y2[r]))) for r in range(m))
            tol = 1e-3 if net.dtype == np.float32 else 1e-10
            err = float(np.abs(acc - want).max())
            if err > tol * float(bound.max()):
                failures.append(f"{what}: accumulated gradient off by {err:.3g}, "
                                f"max |prev| + sum_rows |g_row| = {bound.max():.3g}")


def report(elapsed):
    total = sum(counts.values())
    # atomic saves leave no temporary file behind, whatever happened
    for top, _, files in os.walk(os.path.dirname(WORKDIR)):
        for f in files:
            if f.startswith(".") and f.endswith((".tmp", ".part")):
                failures.append(f"a save left the temporary file {os.path.join(top, f)}")
    for method in METHODS:   # (a short run calls some methods a dozen times: too few to ask)
        if total >= 5000 and per_method[method, "ok"] == 0:
            failures.append(f"no call of {method} succeeded: the fuzz does not reach its valid path")
    for f in failures[:20]:
        print("FAILURE:", f, file=sys.stderr)
    if failures:   # what kinds: "call i: method(...) raised X" -> (method, X)
        kinds = collections.Counter((f.split(": ", 1)[-1].split("(", 1)[0], f.split(" raised ")[1].split(":")[0]
                                     if " raised " in f else "bad result / state") for f in failures)
        print("FAILURE KINDS:", dict(kinds), file=sys.stderr)
    print(f"FUZZ calls={total} failures={len(failures)} seconds={elapsed:.1f} "
          f"outcomes={dict(sorted(outcomes.items()))} methods={dict(sorted(counts.items()))}")
    print("PER-METHOD", {m: {o: c for (mm, o), c in sorted(per_method.items()) if mm == m} for m in METHODS})


def main(argv):
    """fuzzing.py N_CALLS SEED WORKDIR: exit status 0 if no call failed."""
    n_calls, seed, workdir = int(argv[0]), int(argv[1]), argv[2]
    warnings.simplefilter("error")   # a warning from a call is reported as a failure
    setup(seed, workdir)
    t0 = time.perf_counter()
    k = 0
    for i in range(n_calls):
        # a quarter of the calls go to the previous call's network, so that sequences of
        # calls on one network (accumulate, accumulate, apply; save then load) are common
        k = k if rng.integers(4) == 0 else int(rng.integers(len(nets)))
        one_call(i, k)
        if len(failures) > 50:
            break
    report(time.perf_counter() - t0)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
