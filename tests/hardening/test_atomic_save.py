"""Saving atomically (cbackprop._atomic.atomic_path, behind Network.save, save_network2, the
plot and fetch_mnist's cache): what is at the path afterwards, what is left next to it, and
what happens to FIFOs, devices, directories, symlinks, modes, the umask and long names.
SIGKILL tests run a child that saves in a loop and kill it at random moments."""
from __future__ import annotations

import errno
import os
import pathlib
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import cbackprop
from cbackprop import _atomic, _io

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file semantics")


def temporaries(directory):
    """Every file in directory that a save leaves or uses next to its target."""
    return sorted(p.name for p in pathlib.Path(directory).iterdir() if p.name.startswith("."))


def net(seed=0, sizes=(4, 3, 2)):
    return cbackprop.Network(list(sizes), seed=seed)


# ---- what is replaced, and how ----------------------------------------------------------------
@posix_only
def test_save_refuses_a_fifo_and_leaves_it(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(shutil.SpecialFileError, match=r"pipe' is a FIFO \(named pipe\); only a regular file"):
        net().save(fifo)
    with pytest.raises(OSError, match="FIFO"):                      # an OSError: the CLI reports it
        net().save_network2(fifo)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert temporaries(tmp_path) == []


def test_save_refuses_a_directory(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError) as info:
        net().save(tmp_path / "d")
    assert info.value.errno == errno.EISDIR and info.value.filename == str(tmp_path / "d")
    assert (tmp_path / "d").is_dir() and temporaries(tmp_path) == []


@posix_only
def test_save_writes_through_a_symlink(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "net.npz"
    net(seed=1).save(target)
    link = tmp_path / "link.npz"
    link.symlink_to(pathlib.Path("real") / "net.npz")               # relative, as users make them
    new = net(seed=2)
    new.save(link)
    assert link.is_symlink() and os.readlink(link) == os.path.join("real", "net.npz")
    assert np.array_equal(cbackprop.load(target).weights[0], new.weights[0])
    # a dangling link: the file it names is created, as open() would
    dangling = tmp_path / "dangling.npz"
    dangling.symlink_to(tmp_path / "real" / "new.npz")
    new.save(dangling)
    assert dangling.is_symlink() and (tmp_path / "real" / "new.npz").is_file()
    # a link to a directory or a FIFO is refused as they are
    (tmp_path / "dirlink").symlink_to(tmp_path / "real")
    with pytest.raises(IsADirectoryError):
        new.save(tmp_path / "dirlink")
    assert temporaries(tmp_path) == [] and temporaries(tmp_path / "real") == []


@posix_only
def test_save_keeps_the_mode_of_an_existing_file_and_gives_a_new_one_the_umask(tmp_path):
    path = tmp_path / "secret.npz"
    net(seed=1).save(path)
    os.chmod(path, 0o600)
    net(seed=2).save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    os.chmod(path, 0o640)
    net(seed=3).save_network2(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    # a new file: what open() would give it under the current umask
    probe = tmp_path / "probe"
    os.close(os.open(probe, os.O_CREAT | os.O_WRONLY, 0o666))
    net().save(tmp_path / "new.npz")
    assert stat.S_IMODE(os.stat(tmp_path / "new.npz").st_mode) == stat.S_IMODE(os.stat(probe).st_mode)


def test_save_never_calls_os_umask(tmp_path, monkeypatch):
    """Reading the umask with os.umask(0) changes it for every thread for a moment."""
    def umask(*args):
        raise AssertionError("os.umask called")
    monkeypatch.setattr(os, "umask", umask)
    net().save(tmp_path / "a.npz")
    net().save_network2(tmp_path / "a.json")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_another_thread_never_sees_the_umask_change(tmp_path):
    def umask_now():
        with open("/proc/self/status") as f:
            return next(line.split()[1] for line in f if line.startswith("Umask:"))
    before, seen, stop = umask_now(), set(), threading.Event()

    def watch():
        while not stop.is_set():
            seen.add(umask_now())
    thread = threading.Thread(target=watch)
    thread.start()
    try:
        n = net()
        for i in range(200):
            n.save(tmp_path / f"n{i % 3}.npz")
    finally:
        stop.set()
        thread.join(10)
    assert seen == {before}


def test_a_long_name_saves_and_a_too_long_one_names_the_users_path(tmp_path):
    fits = tmp_path / ("n" * 250 + ".npz")            # 254 bytes: the temporary's name must fit too
    net().save(fits)
    assert cbackprop.load(fits).sizes == (4, 3, 2)
    too_long = tmp_path / ("n" * 300 + ".npz")
    with pytest.raises(OSError) as info:
        net().save(too_long)
    assert info.value.errno == errno.ENAMETOOLONG and info.value.filename == str(too_long)
    assert temporaries(tmp_path) == []


def test_an_error_while_writing_names_the_users_path(tmp_path, monkeypatch):
    path = tmp_path / "net.npz"

    def fail(file, **arrays):
        raise OSError(errno.ENOSPC, "No space left on device", file.name)
    monkeypatch.setattr(np, "savez", fail)
    with pytest.raises(OSError) as info:
        net().save(path)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert temporaries(tmp_path) == [] and not path.exists()


def test_the_directory_is_synced_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        synced.append(("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        real_fsync(fd)

    def replace(a, b):
        synced.append("rename")
        real_replace(a, b)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    net().save(tmp_path / "net.npz")
    assert synced == ["file", "rename", "dir"]


# ---- temporaries: none left by a failure, stale ones removed, a concurrent save's kept ---------
def test_stale_temporaries_are_removed_and_a_live_one_is_kept(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    path = tmp_path / "net.npz"
    stale = tmp_path / ".net.npz.cbackprop-0123456789abcdef.tmp"
    live = tmp_path / ".net.npz.cbackprop-fedcba9876543210.tmp"
    other = tmp_path / ".other.npz.cbackprop-0123456789abcdef.tmp"   # another target's
    mine = tmp_path / ".net.npz.cbackprop-notatoken123456.tmp"       # not one of ours
    for p in (stale, live, other, mine):
        p.write_bytes(b"half a save")
    with open(live, "rb") as held:                                   # a save in progress
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        net().save(path)
        assert live.exists()
    assert not stale.exists()
    assert other.exists() and mine.exists() and live.exists()
    assert cbackprop.load(path).sizes == (4, 3, 2)


SAVER = r"""
import sys
import cbackprop
path, n, started = sys.argv[1], int(sys.argv[2]), sys.argv[3]
nets = [cbackprop.Network([n, n, 2], seed=s) for s in (1, 2)]
nets[0].save(path)              # (a kill before the first save would leave no file to load)
open(started, "w").close()
i = 1
while True:
    nets[i % 2].save(path)
    i += 1
"""


@pytest.mark.slow
@posix_only
def test_sigkill_during_saves_leaves_old_or_new_and_no_pile_of_temporaries(tmp_path):
    """A child saves two networks in turn, without pause, and is killed at random moments;
    each time the file loads as one of the two, and at most one stale temporary is there
    (the next save removes it)."""
    path = tmp_path / "net.npz"
    want = [tuple(w.copy() for w in cbackprop.Network([600, 600, 2], seed=s).weights) for s in (1, 2)]
    rng = np.random.default_rng(0)
    left = []
    started = tmp_path / "started"          # not a temporary: no leading dot
    for _ in range(8):
        child = subprocess.Popen([sys.executable, "-c", SAVER, str(path), "600", str(started)],
                                 stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not started.exists() and time.monotonic() < deadline and child.poll() is None:
                time.sleep(0.01)
            started.unlink()
            time.sleep(float(rng.uniform(0.02, 0.3)))         # saving by then, in turn
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL
        got = tuple(cbackprop.load(path).weights)
        assert any(all(np.array_equal(a, b) for a, b in zip(got, w)) for w in want)
        left.append(len(temporaries(tmp_path)))
    assert max(left) <= 1, left
    assert sum(left) > 0, "no kill hit a save: the test did not test anything"
    net().save(path)
    assert temporaries(tmp_path) == []


def test_atomic_path_yields_a_path_next_to_the_target(tmp_path):
    with _atomic.atomic_path(tmp_path / "x.bin", suffix=".part") as tmp:
        assert os.path.dirname(tmp) == str(tmp_path)
        assert os.path.basename(tmp).startswith(".x.bin.cbackprop-") and tmp.endswith(".part")
        with open(tmp, "wb") as f:
            f.write(b"data")
    assert (tmp_path / "x.bin").read_bytes() == b"data" and temporaries(tmp_path) == []
    # _io's savers go through it
    _io.save_network2_json(tmp_path / "n.json", sizes=[1, 1], cost="quadratic", weights=[np.ones((1, 1))],
                           biases=[np.ones(1)])
    assert temporaries(tmp_path) == []
