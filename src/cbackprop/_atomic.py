"""Writing a file so that it is either wholly there or not at all.

:func:`atomic_path` yields a temporary path next to the target for the caller to write, then
syncs it and renames it onto the target (``os.replace``, atomic on POSIX file systems), then
syncs the directory.  Whatever ends the write (an exception, Ctrl-C, SIGKILL, a power cut
after the rename), the target holds either its old content or the new one.

* The target must be a regular file or not exist.  A directory raises IsADirectoryError;
  a FIFO, a device or a socket raises shutil.SpecialFileError (an OSError): they are never
  replaced by a regular file.
* A symbolic link is written through: its final target is replaced, the link stays.
* A new file gets the mode the process's umask gives (the temporary is created with 0o666
  and the kernel applies the umask; the umask is never read or changed); an existing file
  keeps its permission bits.
* Temporaries are named ``.<name>.cbackprop-<16 hex digits><suffix>`` (the name cut to 80
  bytes) and locked (``flock``) while their save runs.  Each save first removes the unlocked
  temporaries of its target's name, so those a killed process left behind do not pile up
  (at most one per target is left until the next save), and a concurrent save's temporary,
  which is locked, is never touched.
* Errors name the path the caller gave, not the temporary.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat

try:
    import fcntl
except ImportError:      # no flock (Windows): stale temporaries are not removed
    fcntl = None

_MARK = ".cbackprop-"
_NAME_BYTES = 80          # bytes of the target's name kept in a temporary's name
_TOKEN = 16               # hex digits of a temporary's random part
_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


@contextlib.contextmanager
def atomic_path(path, suffix=".tmp"):
    """Yield a temporary path in the directory of path (str, bytes or os.PathLike; through
    a symlink, of its final target) for the caller to write.  When the block ends without an
    exception, the file is synced, given the mode described above and renamed onto the
    target, and the directory is synced; otherwise the temporary is removed and the target
    left as it was."""
    user = os.fsdecode(os.fspath(path))
    target, mode = _target(user)
    directory, name = os.path.split(target)
    prefix = "." + _cut(name) + _MARK
    _remove_stale(directory or os.curdir, prefix, suffix)
    fd, tmp = _create(directory, prefix, suffix, user)
    try:
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            yield tmp
            os.fsync(fd)
            os.replace(tmp, target)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError) and tmp in (exc.filename, exc.filename2):
                raise OSError(exc.errno, exc.strerror, user) from None
            raise
    finally:
        os.close(fd)      # releases the lock, after the rename
    _sync_directory(directory or os.curdir)


def _target(path):
    """(the path to replace, the mode to keep or None for a new file): path, or the final
    target of a symlink; refused if it exists and is not a regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:   # a name too long, a path through a file, a symlink loop ...
        raise OSError(exc.errno, exc.strerror, path) from None
    target = os.path.realpath(path) if os.path.islink(path) else path
    if st is None:
        return target, None
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file to write", path)
    if not stat.S_ISREG(st.st_mode):
        raise shutil.SpecialFileError(f"{path!r} is {file_kind(st.st_mode)}; only a regular file is "
                                      f"written (or replaced) there")
    return target, stat.S_IMODE(st.st_mode)


def file_kind(mode):
    """What st_mode describes: "a regular file", "a directory", "a FIFO (named pipe)" ..."""
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a directory"
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def _cut(name):
    """name, cut to _NAME_BYTES bytes in the file system's encoding."""
    return os.fsdecode(os.fsencode(name)[:_NAME_BYTES])


def _create(directory, prefix, suffix, user):
    """(fd, path) of a new, locked temporary file created with mode 0o666 (less the umask)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        tmp = os.path.join(directory, prefix + secrets.token_hex(_TOKEN // 2) + suffix)
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, user) from None
        # Another save's clean-up may have locked and removed it between open and lock.
        if _lock(fd) is not False and _same_file(fd, tmp):
            return fd, tmp
        os.close(fd)
    raise FileExistsError(errno.EEXIST, "cannot create a temporary file next to it", user)


def _lock(fd):
    """True if fd is now exclusively locked, False if another process holds the lock, None if
    the file system does not lock."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


def _same_file(fd, path):
    try:
        a, b = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _remove_stale(directory, prefix, suffix):
    """Remove the temporaries named prefix<token>suffix in directory that no save holds
    locked: those of saves that were killed."""
    if fcntl is None:
        return
    size = len(prefix) + _TOKEN + len(suffix)
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if (len(name) != size or not name.startswith(prefix) or not name.endswith(suffix)
                or not all(c in "0123456789abcdef" for c in name[len(prefix):len(prefix) + _TOKEN])):
            continue
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode) and _lock(fd) is True and _same_file(fd, path):
                os.unlink(path)
        except OSError:
            pass
        finally:
            os.close(fd)


def _sync_directory(directory):
    """fsync the directory, so that the rename survives a power cut (where the file system
    supports syncing a directory; failing to is not an error: the data are already synced)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
