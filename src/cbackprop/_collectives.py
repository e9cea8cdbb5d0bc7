"""distributed.sgd's MPI collectives, each bounded by a deadline, and its handling of Ctrl-C.

Collectives: every collective operation of distributed.sgd is started as a nonblocking MPI
collective (Iallreduce, Ibcast, Iallgather/Iallgatherv for pickled Python objects) and
tested in a loop, as MPI's blocking calls do: yielding the processor between tests for the
first 50 ms (an Allreduce of a mini-batch takes tens of microseconds, and with more ranks
than cores the others need the processor to get there), then sleeping 1 ms between tests
(a long wait, such as for rank 0 evaluating alone).  The loop runs Python code, so signal
handlers run while a rank waits.  When a wait lasts longer than the
timeout (a rank that never called distributed.sgd, that raised with abort_on_error=False,
or that hangs), this rank prints what it waited for and ends the job with MPI_Abort: a
pending collective cannot be cancelled, so no later MPI call could succeed.

Ctrl-C: under several ranks, Interrupts replaces the default SIGINT handler for the
duration of training (only when the handler is Python's default and this is the main
thread).  The first SIGINT only sets a flag; the ranks add their flags with each
mini-batch's gradient (a one-value Iallreduce beside it) and after each epoch, so that all
stop after the same mini-batch and raise KeyboardInterrupt together, with equal
parameters (MPICH's mpiexec forwards SIGINT to every rank; a flag raised on one rank only
stops them all as well).  A second SIGINT on a rank raises KeyboardInterrupt at once on that
rank, which then aborts the job (MPI_Abort with status 130).

Imports mpi4py only through the communicator it is given.
"""
from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any, Optional

import numpy as np

#: mpi4py.MPI.Comm, mpi4py.MPI.Request (typed loosely: type checking needs no mpi4py)
Comm = Any
Request = Any

#: the default of distributed.sgd's timeout: seconds a rank waits in one collective
DEFAULT_TIMEOUT = 600.0
_SPIN = 0.05    # seconds of testing with only a yield in between
_PAUSE = 1e-3   # then the sleep between two tests

#: MPI_Abort's status after Ctrl-C (the command line's exit status for it) and after a timeout
INTERRUPTED_STATUS = 130
TIMEOUT_STATUS = 1

#: seconds between saying why and MPI_Abort: the launcher forwards what the rank wrote
#: (through pipes to mpiexec) and could drop it when it tears the job down at once
ABORT_GRACE = 0.5


def abort(comm: Comm, status: int) -> None:
    """MPI_Abort(comm, status), after flushing this rank's output and giving the launcher
    ABORT_GRACE seconds to pass it on."""
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(ABORT_GRACE)
    comm.Abort(status)


class Collectives:
    """The collective operations of one distributed.sgd call on comm, each waited for at
    most timeout seconds (None: no limit)."""

    def __init__(self, comm: Comm, mpi: Any, timeout: Optional[float]) -> None:
        self.comm, self.mpi, self.timeout = comm, mpi, timeout
        self.rank, self.size = comm.Get_rank(), comm.Get_size()

    def wait(self, requests: Sequence[Request], what: str) -> None:
        """Until every request has completed; past the timeout, abort naming what."""
        test = self.mpi.Request.Testall
        if test(requests):
            return
        start = time.monotonic()
        yield_ = getattr(os, "sched_yield", lambda: time.sleep(0))
        while not test(requests):
            waited = time.monotonic() - start
            if self.timeout is not None and waited > self.timeout:
                self.expired(what, waited)
            if waited < _SPIN:
                yield_()
            else:
                time.sleep(_PAUSE)

    def expired(self, what: str, waited: float) -> None:
        sys.stdout.flush()
        sys.stderr.write(
            f"cbackprop.distributed: rank {self.rank} of {self.size} waited {waited:.0f} s (timeout={self.timeout:g}) "
            f"for the other ranks in {what}: a rank did not take part (it never called distributed.sgd, failed "
            f"with abort_on_error=False, or hangs); aborting all ranks (MPI_Abort)\n")
        abort(self.comm, TIMEOUT_STATUS)

    def allreduce(self, bufs: Sequence[tuple[np.ndarray[Any, Any], Any]], what: str) -> None:
        """In-place Allreduce of each (buffer, op), started together and waited for."""
        self.wait([self.comm.Iallreduce(self.mpi.IN_PLACE, b, op=op) for b, op in bufs], what)

    def Bcast(self, buf: np.ndarray[Any, Any], what: str, root: int = 0) -> None:
        self.wait([self.comm.Ibcast(buf, root=root)], what)

    def bcast(self, obj: Any, what: str, root: int = 0) -> Any:
        """root's obj on every rank (pickled: its length, then its bytes)."""
        length = np.zeros(1, dtype=np.int64)
        data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8) if self.rank == root else None
        if data is not None:
            length[0] = data.size
        self.Bcast(length, what, root)
        buf = data.copy() if data is not None else np.empty(int(length[0]), dtype=np.uint8)
        self.Bcast(buf, what, root)
        return obj if self.rank == root else pickle.loads(buf.tobytes())

    def allgather(self, obj: Any, what: str) -> list[Any]:
        """[obj of rank 0, obj of rank 1, ...] on every rank (pickled: the lengths, then
        the bytes)."""
        data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
        counts = np.zeros(self.size, dtype=np.int64)
        self.wait([self.comm.Iallgather(np.array([data.size], dtype=np.int64), counts)], what)
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        recv = np.empty(int(counts.sum()), dtype=np.uint8)
        self.wait([self.comm.Iallgatherv(data, [recv, counts.tolist(), displs.tolist(), self.mpi.BYTE])], what)
        return [pickle.loads(recv[d:d + n].tobytes()) for d, n in zip(displs, counts)]


class Interrupts:
    """A context in which the first SIGINT sets ``requested`` instead of raising, and a
    second raises KeyboardInterrupt (installed only over Python's default handler, on the
    main thread; otherwise nothing changes)."""

    def __init__(self) -> None:
        self.requested = False
        self.installed = False
        self._previous: Any = None

    def __enter__(self) -> Interrupts:
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handler)
            self.installed = True
        return self

    def _handler(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self.installed:
            signal.signal(signal.SIGINT, self._previous)
            self.installed = False
