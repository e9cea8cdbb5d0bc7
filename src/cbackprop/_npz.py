"""Reading .npz archives (zip files of .npy arrays) without trusting what they declare.

``np.load`` allocates the shape a member's header declares before it reads the member's
data, and reads a header of whatever length the file declares, so a small archive can make
it allocate gigabytes.  Here a member's header is read first, with a bounded length, for the
caller to check against its own limits; the data is read only when the caller asks, in
chunks, so that the memory used follows the data that is really there, not what is declared.

The rules, for every archive:

* every member is a ``.npy`` file, stored or deflated (what ``np.savez`` and
  ``np.savez_compressed`` write; bzip2 and lzma members are refused: Python's zipfile
  decompresses them without an output limit), not encrypted, with a unique name;
* the members' compressed sizes add up to no more than the file (members that overlap are a
  zip bomb);
* a member's ``.npy`` header is format version 1.0 or 2.0, at most 10,000 bytes long
  (NumPy's own limit), declares no Python objects and no negative dimension, and the member
  holds exactly the header and the data it declares.
"""
from __future__ import annotations

import io
import math
import os
import stat
import struct
import zipfile
import zlib
from typing import NamedTuple

import numpy as np

from ._atomic import file_kind

CHUNK = 1 << 20                 # bytes read at a time
MAX_HEADER = 10_000             # bytes of a .npy header (NumPy's default max_header_size)
_MAGIC = b"\x93NUMPY"

# What reading a damaged archive can raise, from zipfile, zlib and numpy.lib.format: a
# truncated or corrupt file (EOF, bad CRC, bad headers, absurd offsets -> OSError, struct.error,
# OverflowError), flipped flag bits (encryption -> RuntimeError, unknown compression or zip
# version -> NotImplementedError), a damaged directory (KeyError), a header that does not
# parse (SyntaxError, RecursionError from literal_eval).
UNREADABLE = (zipfile.BadZipFile, zlib.error, struct.error, EOFError, OSError, ValueError,
              KeyError, NotImplementedError, RuntimeError, OverflowError, SyntaxError,
              RecursionError)


class Invalid(ValueError):
    """What is wrong with the archive's contents; the caller adds the path."""


class Header(NamedTuple):
    """A member's .npy header: shape, fortran_order, dtype, its length in bytes (magic
    included) and the bytes of data it declares."""
    shape: tuple
    fortran_order: bool
    dtype: np.dtype
    length: int
    nbytes: int


def open_regular(path):
    """path opened for binary reading, without blocking on a FIFO; Invalid unless it is a
    regular file (reading a FIFO would wait for a writer, a device would never end)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise Invalid(f"it is {file_kind(mode)}, not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def is_zip(head):
    """Whether the first 4 bytes of a file are those of a zip archive (empty or not)."""
    return head in (b"PK\x03\x04", b"PK\x05\x06")


class Archive:
    """The .npy members of a zip archive open in f (a binary file of size bytes), checked as
    the module docstring says.  ``keys`` is the set of member names without ".npy"."""

    def __init__(self, f, size):
        self.zip = zipfile.ZipFile(f)
        infos = self.zip.infolist()
        self.infos = {}
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise Invalid(f"unexpected member {info.filename!r}: every member must be a .npy array")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise Invalid(f"member {info.filename!r} is compressed with zip method {info.compress_type}; "
                              f"only stored and deflated members are read (np.savez, np.savez_compressed)")
            key = info.filename[:-4]
            if key in self.infos:
                raise Invalid(f"member {info.filename!r} occurs twice")
            self.infos[key] = info
        packed = sum(info.compress_size for info in infos)
        if packed > size:
            raise Invalid(f"its members' compressed sizes add up to {packed} bytes, more than the "
                          f"file's {size}: members overlap")
        self.keys = set(self.infos)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.zip.close()

    def header(self, key):
        """The member's Header, after reading at most its first MAX_HEADER + 12 bytes."""
        info = self.infos[key]
        with self.zip.open(info) as m:
            return _read_header(m, key, info.file_size)

    def chunks(self, key, header, chunk=CHUNK):
        """The member's data as consecutive 1-D arrays of header.dtype (at most chunk bytes
        each) in the file's order; Invalid if the data ends early."""
        itemsize = max(header.dtype.itemsize, 1)
        step = max(chunk // itemsize, 1) * itemsize
        with self.zip.open(self.infos[key]) as m:
            _read_exactly(m, header.length, key)
            left = header.nbytes
            while left > 0:
                data = _read_exactly(m, min(step, left), key)
                left -= len(data)
                yield np.frombuffer(data, dtype=header.dtype)
            if m.read(1):   # the zip directory's size and the header disagree
                raise Invalid(f"member {key} holds more data than its header declares")

    def read(self, key, header):
        """The member as a new, writable array of header.shape and header.dtype.  Memory:
        the data read so far while reading, then at most twice the data."""
        parts = list(self.chunks(key, header))
        out = np.empty(math.prod(header.shape), dtype=header.dtype)
        pos = 0
        for i, part in enumerate(parts):
            out[pos:pos + part.size] = part
            pos += part.size
            parts[i] = None
        return out.reshape(header.shape, order="F" if header.fortran_order else "C")


def _read_exactly(m, n, key):
    data = m.read(n)
    if len(data) != n:
        raise Invalid(f"member {key} is truncated: it ends {n - len(data)} bytes early")
    return data


def _read_header(m, key, file_size):
    magic = m.read(8)
    if len(magic) < 8 or not magic.startswith(_MAGIC):
        raise Invalid(f"member {key} is not a .npy array (it starts with {magic[:8]!r})")
    version = (magic[6], magic[7])
    if version not in ((1, 0), (2, 0)):
        raise Invalid(f"member {key} uses .npy format version {version[0]}.{version[1]}, "
                      f"which is not supported here (1.0 and 2.0 are)")
    fmt = "<H" if version == (1, 0) else "<I"
    raw_length = m.read(struct.calcsize(fmt))
    if len(raw_length) != struct.calcsize(fmt):
        raise Invalid(f"member {key} is truncated in its .npy header")
    (hlen,) = struct.unpack(fmt, raw_length)
    if hlen > MAX_HEADER:
        raise Invalid(f"member {key} declares a .npy header of {hlen} bytes, more than the "
                      f"{MAX_HEADER} allowed")
    text = _read_exactly(m, hlen, key)
    reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
              else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = reader(io.BytesIO(raw_length + text))
    if dtype.hasobject:
        raise Invalid(f"member {key} holds Python objects (dtype {dtype}); loading it would unpickle "
                      f"data, which is refused")
    if any(d < 0 for d in shape):
        raise Invalid(f"member {key} declares the negative shape {shape}")
    length = 8 + len(raw_length) + hlen
    nbytes = math.prod(shape) * dtype.itemsize
    if length + nbytes != file_size:
        more = "more" if length + nbytes > file_size else "less"
        raise Invalid(f"member {key} declares shape {shape} of {dtype}, {more} data than its "
                      f"{file_size - length} bytes (truncated or corrupt?)")
    return Header(tuple(shape), bool(fortran), dtype, length, nbytes)
