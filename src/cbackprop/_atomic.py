"""Writing a file so that it is either wholly there or not at all."""
from __future__ import annotations

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_path(path, suffix=".tmp"):
    """Yield a temporary path in path's directory for the caller to write.  When the block
    ends without an exception, the file is synced to disk, given the permissions a new file
    would get (mkstemp makes it 0600) and renamed onto path (os.replace, atomic), so an
    existing file at path is replaced whole or not at all; otherwise it is removed."""
    path = os.fsdecode(os.fspath(path))           # str, bytes or os.PathLike
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
