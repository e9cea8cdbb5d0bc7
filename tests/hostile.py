"""Hostile files for cbackprop's loaders: small files that declare (or inflate to) far more
than they hold, pickles that try to run code or tamper with modules, and the measurement of
the memory a loader uses while it refuses them.

Used by tests/hardening/test_hostile_files.py and tests/fuzzing.py (importable through pyproject's
pytest ``pythonpath``), and as a script::

    python tests/hostile.py [--scale 1.0] [--only NAME ...]

which writes every hostile file into a temporary directory, loads each in a fresh
subprocess (RLIMIT_AS 8 GiB) and prints one line per file: its size, the peak of
tracemalloc during the call (every NumPy and Python allocation), the growth of ru_maxrss
(which misses allocations never touched), the time and the outcome.

Deflated zeros are written without compressing them: a raw deflate block of 1 MiB of zeros,
ended with a sync flush by a fresh compressor, refers to nothing before it, so it can be
repeated; a final empty block closes the stream.  So a file that inflates to 1.2 GB costs a
few milliseconds to write (and one pass of CRC-32 over the zeros).
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np

MIB = 1 << 20
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# ---- deflate, zip and gzip, written by hand so that the sizes can lie --------------------------
def _fresh(data, final=False):
    """data as raw deflate blocks that refer to nothing before them."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)


_ZERO_MIB = _fresh(bytes(MIB))


class Deflated:
    """A raw deflate stream of pieces (bytes, or an int: that many zero bytes), with the
    CRC-32 and the length of what it inflates to."""

    def __init__(self, *pieces):
        self.data, self.crc, self.size = bytearray(), 0, 0
        for piece in pieces:
            if isinstance(piece, int):
                whole, rest = divmod(piece, MIB)
                self.data += _ZERO_MIB * whole + _fresh(bytes(rest))
                zero = bytes(MIB)
                for _ in range(whole):
                    self.crc = zlib.crc32(zero, self.crc)
                self.crc = zlib.crc32(bytes(rest), self.crc)
                self.size += piece
            else:
                self.data += _fresh(piece)
                self.crc = zlib.crc32(piece, self.crc)
                self.size += len(piece)
        self.data += _fresh(b"", final=True)
        self.data = bytes(self.data)


def zip_archive(members):
    """A zip file's bytes from members [(name, method, stored bytes, crc, size)]."""
    out, central = bytearray(), bytearray()
    for name, method, data, crc, size in members:
        fname = name.encode()
        central += struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, method, 0, 0x21,
                               crc, len(data), size, len(fname), 0, 0, 0, 0, 0o644 << 16, len(out))
        central += fname
        out += struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, method, 0, 0x21,
                           crc, len(data), size, len(fname), 0) + fname + data
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central),
                      len(out), 0)
    return bytes(out + central + end)


def stored(name, data):
    return (name + ".npy", 0, data, zlib.crc32(data), len(data))


def deflated(name, *pieces):
    d = Deflated(*pieces)
    return (name + ".npy", 8, d.data, d.crc, d.size)


def npy_header(descr, shape, fortran=False):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": fortran, "shape": shape})
    return buf.getvalue()


def npy(arr):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def gzip_bytes(*pieces):
    d = Deflated(*pieces)
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + d.data
            + struct.pack("<2L", d.crc, d.size & 0xFFFFFFFF))


# ---- network files -----------------------------------------------------------------------------
def network_members(sizes=(3, 2), dtype="float64", seed=0, skip=()):
    """The members of a valid versioned network file, as stored zip members, by name."""
    from cbackprop import _io

    rng = np.random.default_rng(seed)
    w = [rng.standard_normal((n, m)).astype(dtype) for m, n in zip(sizes[:-1], sizes[1:])]
    b = [rng.standard_normal(n).astype(dtype) for n in sizes[1:]]
    acts = ["sigmoid"] * (len(sizes) - 1)
    arrays = {"format": np.array("cbackprop-network"), "version": np.array(1, dtype=np.int64),
              "sizes": np.array(sizes, dtype=np.int64), "activations": np.array(acts),
              "cost": np.array("quadratic"), "dtype": np.array(dtype),
              "checksum": np.array(_io.checksum(sizes=sizes, activations=acts, cost="quadratic",
                                                dtype=dtype, weights=w, biases=b))}
    arrays.update({f"weights_{i}": x for i, x in enumerate(w)})
    arrays.update({f"biases_{i}": x for i, x in enumerate(b)})
    return {k: stored(k, npy(v)) for k, v in arrays.items() if k not in skip}


def net_format_bomb(directory, scale=1.0):
    """A network file whose 'format' member declares a 0-d string of 1.2 GB (deflated zeros)."""
    n = int(300_000_000 * scale)
    members = network_members()
    members["format"] = deflated("format", npy_header(f"<U{n}", ()), 4 * n)
    return _write(directory, "format_bomb.npz", zip_archive(list(members.values())))


def net_legacy_bomb(directory, scale=1.0):
    """An unversioned file (sizes, weights_0, biases_0) whose weights_0 declares 150 million
    float64 values (1.2 GB of deflated zeros) for sizes [2, 1]."""
    n = int(150_000_000 * scale)
    members = [stored("sizes", npy(np.array([2, 1]))), deflated("weights_0", npy_header("<f8", (n,)), 8 * n),
               stored("biases_0", npy(np.zeros(1)))]
    return _write(directory, "legacy_bomb.npz", zip_archive(members))


def net_checksum_bomb(directory, scale=1.0):
    """A versioned file of sizes [10000, 15000]: consistent shapes, 1.2 GB of deflated zero
    weights, and a checksum that does not match."""
    m = int(10_000 * scale)
    members = network_members()
    members["sizes"] = stored("sizes", npy(np.array([m, 15_000])))
    members["weights_0"] = deflated("weights_0", npy_header("<f8", (15_000, m)), 8 * 15_000 * m)
    members["biases_0"] = stored("biases_0", npy(np.zeros(15_000)))
    return _write(directory, "checksum_bomb.npz", zip_archive(list(members.values())))


def net_header_bomb(directory, scale=1.0):
    """A member whose .npy 2.0 header declares a header of 1 GB (deflated zeros)."""
    n = int(1_000_000_000 * scale)
    members = network_members()
    members["format"] = deflated("format", b"\x93NUMPY\x02\x00" + struct.pack("<I", n), n)
    return _write(directory, "header_bomb.npz", zip_archive(list(members.values())))


def net_long_checksum(directory, scale=1.0):
    """A network file whose checksum member is a string of 10 million characters."""
    n = int(10_000_000 * scale)
    members = network_members()
    members["checksum"] = deflated("checksum", npy_header(f"<U{n}", ()), b"s\0\0\0" * n)
    return _write(directory, "long_checksum.npz", zip_archive(list(members.values())))


def net_bzip2_member(directory, scale=1.0):
    """A network file whose weights_0 member is bzip2-compressed (zip method 12)."""
    import bz2

    members = network_members()
    name, _, data, crc, size = members["weights_0"]
    packed = bz2.compress(data)
    members["weights_0"] = (name, 12, packed, crc, size)
    return _write(directory, "bzip2.npz", zip_archive(list(members.values())))


def net_overlapping_members(directory, scale=1.0):
    """A network file whose 'format' member's stored data also covers the members after it,
    so that the members' compressed sizes add up to more than the file."""
    members = list(network_members().values())
    rest = zip_archive(members[1:])
    tail = rest[:rest.index(b"PK\x01\x02")]        # the other members' local headers and data
    name, method, data, _, _ = members[0]
    head = data + tail
    first = (name, 0, head, zlib.crc32(head), len(head))
    whole = zip_archive([first])
    # point the other members' central entries at their copies inside the first member
    offset = whole.index(tail)
    central = bytearray()
    pos = 0
    for n, meth, d, crc, size in members[1:]:
        fname = n.encode()
        central += struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, meth, 0, 0x21, crc,
                               len(d), size, len(fname), 0, 0, 0, 0, 0o644 << 16, offset + pos) + fname
        pos += 30 + len(fname) + len(d)
    cd_start = whole.index(b"PK\x01\x02")
    first_central = whole[cd_start:whole.index(b"PK\x05\x06")]
    cd = first_central + bytes(central)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(cd), cd_start, 0)
    return _write(directory, "overlap.npz", whole[:cd_start] + cd + end)


# ---- network2 JSON -----------------------------------------------------------------------------
def json_long_integer(directory, scale=1.0):
    """network2 JSON whose first weight is an integer literal of 100,000 digits."""
    n = max(int(100_000 * scale), 5000)
    text = ('{"sizes": [2, 1], "weights": [[[' + "7" * n + ', 0.5]]], "biases": [[[0.0]]], '
            '"cost": "QuadraticCost"}')
    return _write(directory, "long_integer.json", text.encode())


def json_overflowing_float(directory, scale=1.0):
    """network2 JSON whose first weight is 1e4000 (beyond the float64 range)."""
    text = '{"sizes": [2, 1], "weights": [[[1e4000, 0.5]]], "biases": [[[0.0]]], "cost": "QuadraticCost"}'
    return _write(directory, "overflow.json", text.encode())


def json_many_lists(directory, scale=1.0):
    """network2 JSON whose weights are 5 million empty lists: 15 MB of text, refused by shape."""
    n = int(5_000_000 * scale)
    text = '{"sizes": [2, 1], "weights": [' + "[]," * n + '[]], "biases": [[[0.0]]], "cost": "QuadraticCost"}'
    return _write(directory, "many_lists.json", text.encode())


# ---- MNIST -------------------------------------------------------------------------------------
def mnist_npz_bomb(directory, scale=1.0):
    """A mnist.npz whose train_x declares 500,000 images of deflated zeros (392 MB)."""
    n = int(500_000 * scale)
    members = [deflated("train_x", npy_header("|u1", (n, 784)), 784 * n),
               deflated("train_y", npy_header("|u1", (n,)), n),
               stored("test_x", npy(np.zeros((10, 784), np.uint8))),
               stored("test_y", npy(np.zeros(10, np.uint8)))]
    return _write(directory, "mnist_bomb.npz", zip_archive(members))


def mnist_idx_gz_bomb(directory, scale=1.0):
    """A directory of IDX .gz files whose training images declare 500,000 images of zeros."""
    n = int(500_000 * scale)
    d = os.path.join(directory, "idx_bomb")
    os.makedirs(d, exist_ok=True)
    files = {IDX_FILES[0]: gzip_bytes(struct.pack(">4I", 2051, n, 28, 28), 784 * n),
             IDX_FILES[1]: gzip_bytes(struct.pack(">2I", 2049, n), n),
             IDX_FILES[2]: gzip.compress(struct.pack(">4I", 2051, 10, 28, 28) + bytes(7840)),
             IDX_FILES[3]: gzip.compress(struct.pack(">2I", 2049, 10) + bytes(10))}
    for name, data in files.items():
        _write(d, name + ".gz", data)
    return d


def _pickle_gz(directory, name, payload):
    return _write(directory, name, gzip.compress(payload))


def _layout(x_ops, y_ops=b"\x8c\x01C\x85"):
    """Protocol 4: ((x, y), (x, y), (x, y)) where x_ops pushes x (memoised and reused)."""
    return (b"\x80\x04" + x_ops + b"\x94" + y_ops + b"\x94" + b"\x86" + b"\x94"
            + b"h\x02" + b"h\x02" + b"\x87.")


def _global(module, name):
    return b"\x8c" + bytes([len(module)]) + module.encode() + b"\x8c" + bytes([len(name)]) + name.encode() + b"\x93"


def _int(i):
    return b"J" + struct.pack("<i", i)


def pkl_ndarray_bomb(directory, scale=1.0):
    """A mnist.pkl.gz that calls numpy.ndarray((150 million,), float64): 1.2 GB uninitialised."""
    n = int(150_000_000 * scale)
    x = (_global("numpy", "ndarray") + _int(n) + b"\x85" + _global("numpy", "dtype")
         + b"\x8c\x02f8\x85R\x86R")
    return _pickle_gz(directory, "ndarray_bomb.pkl.gz", _layout(x))


def pkl_reconstruct_bomb(directory, scale=1.0):
    """A mnist.pkl.gz whose _reconstruct call asks for 150 million float64 values."""
    n = int(150_000_000 * scale)
    x = (_global("numpy._core.multiarray", "_reconstruct") + _global("numpy", "ndarray")
         + _int(n) + b"\x85" + b"C\x02f8" + b"\x87R")
    return _pickle_gz(directory, "reconstruct_bomb.pkl.gz", _layout(x))


def pkl_binbytes_bomb(directory, scale=1.0):
    """A mnist.pkl.gz with a BINBYTES8 that declares 1.2 GB and holds 4 bytes."""
    n = int(1_200_000_000 * scale)
    return _pickle_gz(directory, "binbytes_bomb.pkl.gz", b"\x80\x04\x8e" + struct.pack("<Q", n) + b"abcd")


def pkl_zeros_bomb(directory, scale=1.0):
    """A mnist.pkl.gz of 500,000 black images and labels 0 (392 MB of deflated zeros), laid
    out as the book's pickle: ((x, y), (x, y), (x, y)) through _frombuffer."""
    n = int(500_000 * scale)
    frombuffer = _global("numpy._core.numeric", "_frombuffer")
    u1 = _global("numpy", "dtype") + b"\x8c\x02u1\x85R"

    def array(shape, nbytes):
        dims = b"".join(_int(d) for d in shape) + (b"\x86" if len(shape) == 2 else b"\x85")
        return frombuffer, b"\x8e" + struct.pack("<Q", nbytes), nbytes, u1 + dims + b"\x8c\x01Ct" + b"R"

    fx, hx, zx, tx = array((n, 784), 784 * n)
    fy, hy, zy, ty = array((n,), n)
    head = b"\x80\x04" + fx + b"(" + hx
    middle = tx + b"\x94" + fy + b"(" + hy
    tail = ty + b"\x94\x86\x94h\x02h\x02\x87."
    return _write(directory, "zeros_bomb.pkl.gz", gzip_bytes(head, zx, middle, zy, tail))


def pkl_memo_bomb(directory, scale=1.0):
    """A mnist.pkl.gz of 20 million MEMOIZE opcodes (20 MB inflated, 20 KB compressed)."""
    n = int(20_000_000 * scale)
    return _write(directory, "memo_bomb.pkl.gz", gzip_bytes(b"\x80\x04N", b"\x94" * n, b"."))


def pkl_tamper(directory, scale=1.0):
    """A pickle that renames numpy's _frombuffer to os.system through BUILD's slot state, and
    then fails the layout check (a 0-d int)."""
    target = _global("numpy._core.numeric", "_frombuffer")
    state = (b"N}" + b"\x8c\x08__name__\x8c\x06system" + b"s" + b"\x8c\x0a__module__\x8c\x02os" + b"s"
             + b"\x8c\x0c__qualname__\x8c\x06system" + b"s\x86")
    return _pickle_gz(directory, "tamper.pkl.gz", b"\x80\x04" + target + state + b"b0K\x01.")


def pkl_tamper_dict(directory, scale=1.0):
    """A pickle that sets attributes of numpy's _frombuffer through BUILD's dict state."""
    target = _global("numpy._core.numeric", "_frombuffer")
    state = b"}" + b"\x8c\x0a__module__\x8c\x02os" + b"s"
    return _pickle_gz(directory, "tamper_dict.pkl.gz", b"\x80\x04" + target + state + b"b0K\x01.")


def pkl_dtype_tamper(directory, scale=1.0):
    """A pickle that asks numpy.dtype for its own float64 descriptor (copy=False) and sets
    its state to big-endian, then fails the layout check."""
    dtype = _global("numpy", "dtype") + b"\x8c\x02f8\x89\x89\x87R"        # dtype('f8', False, False)
    state = b"(K\x03\x8c\x01>NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t"
    return _pickle_gz(directory, "dtype_tamper.pkl.gz", b"\x80\x04" + dtype + state + b"b0K\x01.")


def fetch_gz_bomb(directory, scale=1.0):
    """A served train-labels .gz that inflates to 1.2 GB of zeros (fetch_mnist's check)."""
    n = int(1_200_000_000 * scale)
    d = os.path.join(directory, "served")
    os.makedirs(d, exist_ok=True)
    _write(d, IDX_FILES[1] + ".gz", gzip_bytes(struct.pack(">2I", 2049, n - 8), n - 8))
    return d


def _write(directory, name, data):
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


# name -> (builder, how the measurement loads it)
CASES = {
    "net_format_bomb": (net_format_bomb, "load"),
    "net_legacy_bomb": (net_legacy_bomb, "load"),
    "net_checksum_bomb": (net_checksum_bomb, "load"),
    "net_header_bomb": (net_header_bomb, "load"),
    "net_long_checksum": (net_long_checksum, "load"),
    "net_bzip2_member": (net_bzip2_member, "load"),
    "net_overlapping_members": (net_overlapping_members, "load"),
    "json_long_integer": (json_long_integer, "load_network2"),
    "json_overflowing_float": (json_overflowing_float, "load_network2"),
    "json_many_lists": (json_many_lists, "load_network2"),
    "mnist_npz_bomb": (mnist_npz_bomb, "load_mnist"),
    "mnist_npz_bomb_load_npz": (mnist_npz_bomb, "load_npz"),
    "mnist_idx_gz_bomb": (mnist_idx_gz_bomb, "load_mnist"),
    "pkl_ndarray_bomb": (pkl_ndarray_bomb, "load_mnist"),
    "pkl_reconstruct_bomb": (pkl_reconstruct_bomb, "load_mnist"),
    "pkl_binbytes_bomb": (pkl_binbytes_bomb, "load_mnist"),
    "pkl_zeros_bomb": (pkl_zeros_bomb, "load_mnist"),
    "pkl_memo_bomb": (pkl_memo_bomb, "load_mnist"),
    "pkl_tamper": (pkl_tamper, "load_mnist"),
    "fetch_gz_bomb": (fetch_gz_bomb, "fetch_mnist"),
}

# What runs in the measuring subprocess: argv[1] = JSON [[how, path], ...]; prints a JSON list.
MEASURE = r'''
import json, os, resource, sys, time, tracemalloc
import numpy as np
import cbackprop
from cbackprop import datasets

def run(how, path):
    if how == "load":
        return cbackprop.load(path)
    if how == "load_network2":
        return cbackprop.load_network2(path)
    if how == "load_mnist":
        return datasets.load_mnist(path)
    if how == "load_npz":
        return datasets.load_npz(path)
    if how == "fetch_mnist":    # the check of a downloaded or cached file
        return datasets._content_digest(os.path.join(path, "train-labels-idx1-ubyte.gz"), "md5")
    raise ValueError(how)

results = []
tracemalloc.start()
for how, path in json.loads(sys.argv[1]):
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    try:
        run(how, path)
        outcome = "ACCEPTED"
    except BaseException as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - base
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
    results.append({"outcome": outcome[:2000], "peak": peak, "rss": rss * 1024, "seconds": seconds})
print(json.dumps(results))
'''


def measure(cases, limit=8 << 30, timeout=600):
    """For each (how, path) of cases, loaded in turn in one fresh subprocess with RLIMIT_AS
    limit: {outcome ("ACCEPTED" or "<exception type>: <message>"), peak (tracemalloc's peak
    during the call, bytes), rss (growth of ru_maxrss, bytes), seconds}."""
    def set_limit():
        # Under AddressSanitizer (tools/sanitize.sh preloads libasan) the runtime reserves
        # terabytes of shadow address space at start-up, which no RLIMIT_AS allows: there the
        # limit is left off and tracemalloc's peak alone is measured.
        if "libasan" in os.environ.get("LD_PRELOAD", ""):
            return
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    proc = subprocess.run([sys.executable, "-c", MEASURE, json.dumps([list(c) for c in cases])],
                          capture_output=True, text=True, timeout=timeout, preexec_fn=set_limit)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"the measuring subprocess failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def file_size(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    return os.path.getsize(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (build, how) in CASES.items():
            if args.only and name not in args.only:
                continue
            path = build(tmp, args.scale)
            try:
                (r,) = measure([(how, path)])
            except RuntimeError as exc:
                r = {"outcome": str(exc)[-200:], "peak": -1, "rss": -1, "seconds": -1}
            print(f"{name:26s} {how:13s} size {file_size(path):>11,d} B  peak {r['peak'] / MIB:9.1f} MiB  "
                  f"maxrss +{r['rss'] / MIB:8.1f} MiB  {r['seconds']:6.2f} s  {r['outcome'][:110]}", flush=True)
            if os.path.isdir(path):
                for f in os.listdir(path):
                    os.remove(os.path.join(path, f))
            else:
                os.remove(path)


if __name__ == "__main__":
    main()
