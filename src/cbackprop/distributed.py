"""Synchronous data-parallel training over MPI: the recipe Horovod made standard.

    mpiexec -n 4 python train.py

    from cbackprop import Network, distributed
    rank, size = distributed.world()
    X, Y = distributed.take_shard(X_all, Y_all)     # rows lo:hi of this rank (a memmap reads only those)
    net = Network([784, 30, 10], seed=0)           # rank 0's parameters and generator are used
    history = distributed.sgd(net, X, Y, 30, 10, 3.0, test_data=(Xt, lt))
    if rank == 0:
        print(history[-1]["test_accuracy"])

Every rank holds one shard of the training rows; the shards concatenated in rank order form
the global data set (n rows).  sgd broadcasts the parameters, the momentum velocity and the
generator state from rank 0, then every epoch draws the same global permutation on every rank
(net._rng.permutation(n), as Network.sgd).  For each mini-batch every rank adds the gradients
of the rows of that batch that fall in its shard (possibly none) into the network's
contiguous gradient buffer, one in-place Allreduce(SUM) adds the buffers of all ranks, and
every rank applies the same update (apply_gradient with samples = the batch size, n = the
global n for the weight decay).  The result is Network.sgd on the concatenated data with the
same seed, up to rounding: the per-sample gradients of a batch are added shard by shard and
then across ranks, and scaled by eta/m after the sum.  On one rank it is Network.sgd itself,
bitwise.  Measured in float64 on 2 and 3 ranks, max|difference| / max|parameter|: below
2e-15 in the tests (up to 12 epochs of small networks) and after 10 epochs of [784, 30, 10]
on the 10,000-image MNIST sample at eta 0.5.  At eta 3.0 that training is chaotic: any
rounding difference grows about tenfold per epoch (so does one ulp added to every initial
parameter of a single-process run), and the distributed run drifts the same way: 1e-14
after 1 epoch, 2e-11 after 3, 3e-3 after 10, with the same test accuracy in every epoch.

No rank waits forever: every collective operation of sgd is a nonblocking MPI collective
waited for at most sgd's timeout (default 600 s), after which the rank says what it waited
for and ends the job with MPI_Abort (_collectives.Collectives).  Ctrl-C on several ranks:
while sgd runs on the main thread with Python's default SIGINT handler, the first SIGINT a
rank receives only sets a flag, which the ranks reduce with each mini-batch's gradient and
each epoch's verdict, so every rank raises KeyboardInterrupt after the same whole
mini-batch, with equal parameters (or, if they are not finite, those from before the
mini-batch that diverged) and the finished epochs in its ``history``, and nothing is
aborted; a second SIGINT raises at once on that rank, which then aborts the job with status
130 (_collectives.Interrupts).

Needs mpi4py and an MPI library: ``pip install 'cbackprop[mpi]'`` installs mpi4py and the
MPICH wheel.  ``import cbackprop`` never imports mpi4py, and neither does importing this
module: is_distributed, shard and local_slice work without it; world, sgd and the rest import
it on first use and raise ImportError with the install command when it is missing.

``python -m cbackprop.distributed --selftest`` (under mpiexec) checks a cluster: it trains a
small network on every rank and compares rank 0's result with a single-process run.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional, Union, overload

import numpy as np
import numpy.typing as npt

from ._collectives import DEFAULT_TIMEOUT, INTERRUPTED_STATUS, Collectives, Interrupts, abort
from ._model import one_hot
from ._training import Epochs, Plan, Record, Rows, make_plan, train, training_rows
from ._validation import Array, Hyper, check_int, check_nonneg

if TYPE_CHECKING:
    from .network import Network

#: an mpi4py communicator (mpi4py.MPI.Comm); typed loosely so that type checking needs no mpi4py
Comm = Any

__all__ = ["is_distributed", "world", "shard", "local_slice", "take_shard", "sgd", "call_or_abort",
           "launcher_size"]

_INSTALL_HINT = ("cbackprop.distributed needs mpi4py and an MPI library: pip install 'cbackprop[mpi]' "
                 "(mpi4py and the MPICH wheel from PyPI), or pip install mpi4py against the cluster's "
                 "own MPI")

#: Variables MPI launchers set to the number of processes they started (checked in order):
#: Open MPI's mpirun/prterun, MPICH's and Intel MPI's Hydra (and Slurm's srun --mpi=pmi2),
#: MVAPICH2.
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")


def _mpi() -> Any:
    """mpi4py.MPI, or ImportError telling how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:  # mpi4py missing, or its MPI library cannot be loaded
        raise ImportError(f"{_INSTALL_HINT} ({exc})") from exc
    return MPI


def _comm(comm: Optional[Comm]) -> Comm:
    return _mpi().COMM_WORLD if comm is None else comm


# ---- where am I -----------------------------------------------------------------------------
def launcher_size() -> int:
    """The number of processes the MPI launcher started, read from its environment variables
    (OMPI_COMM_WORLD_SIZE, PMI_SIZE, MV2_COMM_WORLD_SIZE; under Slurm with PMIx,
    SLURM_STEP_NUM_TASKS when PMIX_RANK is set), without importing mpi4py; 1 when no
    launcher is seen."""
    env = os.environ
    names = _SIZE_VARIABLES + (("SLURM_STEP_NUM_TASKS",) if "PMIX_RANK" in env else ())
    for name in names:
        value = env.get(name, "").strip()
        if value.isdigit() and int(value) >= 1:
            return int(value)
    return 1


def is_distributed() -> bool:
    """True when this process is one of several MPI processes (mpiexec -n 2 or more).

    If mpi4py has already initialised MPI, its COMM_WORLD size decides; otherwise the MPI
    launcher's environment (launcher_size), so the answer needs neither mpi4py nor MPI
    initialisation: a command line can call this first and import mpi4py only when it is true.
    """
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None:
        try:
            if mpi.Is_initialized() and not mpi.Is_finalized():
                return bool(mpi.COMM_WORLD.Get_size() > 1)
        except Exception:  # a broken MPI library: fall back to the environment
            pass
    return launcher_size() > 1


def world(comm: Optional[Comm] = None) -> tuple[int, int]:
    """(rank, size) of this process in comm (default MPI.COMM_WORLD); imports mpi4py."""
    comm = _comm(comm)
    return comm.Get_rank(), comm.Get_size()


def shard(n: int, rank: int, size: int) -> tuple[int, int]:
    """(lo, hi): rows lo:hi of n rows belong to rank of size ranks.  Contiguous, in rank
    order, sizes differing by at most one (the first n % size ranks get one more row);
    a rank gets an empty shard (lo == hi) when size > n."""
    n = check_int(n, "n", 0)
    size = check_int(size, "size", 1)
    rank = check_int(rank, "rank", 0)
    if rank >= size:
        raise ValueError(f"rank must be in [0, size) = [0, {size}), got {rank}")
    q, r = divmod(n, size)
    lo = rank * q + min(rank, r)
    return lo, lo + q + (rank < r)


def local_slice(n: int, comm: Optional[Comm] = None) -> slice:
    """slice(lo, hi) of this rank's rows of n (shard with comm's rank and size)."""
    rank, size = world(comm)
    return slice(*shard(n, rank, size))


@overload
def take_shard(array: Array, /, *, comm: Optional[Comm] = None) -> Array: ...
@overload
def take_shard(array: Array, other: Array, /, *arrays: Array, comm: Optional[Comm] = None) -> tuple[Array, ...]: ...


def take_shard(*arrays: Array, comm: Optional[Comm] = None) -> Union[Array, tuple[Array, ...]]:
    """This rank's rows of each array (all with the same number of rows), as contiguous
    copies; for np.load(..., mmap_mode="r") arrays only those rows are read from disk."""
    if not arrays:
        raise TypeError("take_shard needs at least one array")
    n = len(arrays[0])
    for i, a in enumerate(arrays[1:], start=1):
        if len(a) != n:
            raise ValueError(f"take_shard: arrays[{i}] has {len(a)} rows, arrays[0] has {n}")
    s = local_slice(n, comm)
    out = tuple(np.ascontiguousarray(a[s]) for a in arrays)
    return out if len(out) > 1 else out[0]


def call_or_abort(func: Callable[..., Any], *args: Any, comm: Optional[Comm] = None, **kwargs: Any) -> Any:
    """``func(*args, **kwargs)``, so that one failing rank cannot leave the others waiting.

    Under MPI with several ranks (is_distributed()), an exception that escapes func on this
    rank, or SystemExit with a non-zero status (argparse's errors), prints the traceback (for
    exceptions other than KeyboardInterrupt) and ends every rank of the job with MPI_Abort
    and that status (1 for exceptions, 130 for KeyboardInterrupt): e.g. a --data path
    missing on one node only, or a Ctrl-C that reached this rank alone.  Errors (and
    KeyboardInterrupt) that distributed.sgd raises on every rank alike propagate normally,
    and so do a SystemExit made from one and a returned status.  Without MPI, or on one
    rank, this is just ``func(*args, **kwargs)``.
    """
    if not is_distributed():
        return func(*args, **kwargs)
    try:
        return func(*args, **kwargs)
    except BaseException as exc:
        if getattr(exc, "_cbackprop_collective", False):
            raise
        if isinstance(exc, SystemExit):
            if exc.code in (0, None):
                raise
            status = exc.code if isinstance(exc.code, int) else 1
        elif isinstance(exc, KeyboardInterrupt):
            status = INTERRUPTED_STATUS
        else:
            import traceback
            traceback.print_exc()
            status = 1
        comm = _comm(comm)
        how = "was interrupted" if status == INTERRUPTED_STATUS else "failed"
        sys.stderr.write(f"cbackprop.distributed: rank {comm.Get_rank()} of {comm.Get_size()} {how}; "
                         f"aborting all ranks (MPI_Abort)\n")
        abort(comm, status)
        raise


# ---- collective checks ------------------------------------------------------------------------
def _collective(exc: BaseException) -> BaseException:
    """Mark exc as raised on every rank alike (sgd re-raises it instead of aborting)."""
    exc._cbackprop_collective = True  # type: ignore[attr-defined]
    return exc


def _raise_if_any(coll: Collectives, error: Optional[BaseException], what: str) -> None:
    """Every rank calls this with its local error (an exception or None); if any rank has
    one, every rank raises the same exception naming each failing rank and its message (the
    local exception chained on the rank where it happened): ValueError when every failing
    rank had a TypeError or ValueError, RuntimeError otherwise.  One allgather: no rank is
    left waiting in a later collective."""
    gathered = coll.allgather(None if error is None else (type(error).__name__, str(error),
                                                          isinstance(error, (TypeError, ValueError))),
                              f"the check of the arguments ({what})")
    bad = [(r, g) for r, g in enumerate(gathered) if g is not None]
    if bad:
        text = "; ".join(f"rank {r}: {name}: {msg}" for r, (name, msg, _) in bad)
        cls = ValueError if all(g[2] for _, g in bad) else RuntimeError
        msg = f"distributed.sgd: {what} on {len(bad)} of {len(gathered)} ranks: {text}"
        raise _collective(cls(msg)) from error


def _check_agree(coll: Collectives, values: dict[str, Any]) -> None:
    """Every rank passes a dict name -> value; ValueError on every rank, naming the ranks and
    values that differ from rank 0's, if any differs."""
    gathered = coll.allgather(values, "the comparison of the ranks' networks and arguments")
    diffs = []
    for name, v0 in gathered[0].items():
        odd = [(r, g[name]) for r, g in enumerate(gathered) if g[name] != v0]
        if odd:
            others = ", ".join(f"rank {r} has {v!r}" for r, v in odd)
            diffs.append(f"{name}: rank 0 has {v0!r}, {others}")
    if diffs:
        raise _collective(ValueError("distributed.sgd: the ranks disagree (every rank must build the same "
                                     "network and pass the same arguments): " + "; ".join(diffs)))


def _params_crc(net: Network) -> int:
    crc = 0
    for a in net._state():          # the parameters, then the momentum velocity
        crc = zlib.crc32(a.data.cast("B"), crc)
    return crc


def _broadcast_state(coll: Collectives, net: Network) -> None:
    """Rank 0's parameters, momentum velocity (or none) and generator state to every rank."""
    what = "the broadcast of rank 0's parameters"
    has_v = coll.bcast(len(net._state()) > 1, what)
    state = net._state(create=has_v)
    for a in state[:1 + has_v]:
        coll.Bcast(a, what)
    for v in state[1 + has_v:]:
        v.fill(0)  # rank 0 has none: zeros are the same thing
    net._rng.bit_generator.state = coll.bcast(net._rng.bit_generator.state, what)


# ---- training -----------------------------------------------------------------------------------
class _Allreduce(Epochs):
    """distributed.sgd's epochs: each mini-batch's gradient summed over the ranks (one
    in-place Allreduce of the gradient buffer), every rank applying the same update; counts
    and cost sums added over the ranks; the callback's verdict agreed by every rank; a
    Ctrl-C agreed by every rank with each mini-batch and each epoch's verdict (the
    Interrupts flag), so that all stop after the same mini-batch.  On one rank, Network.sgd's
    own epochs."""

    net: Network

    def __init__(self, net: Network, plan: Plan, coll: Collectives, lo: int, verbose: bool,
                 interrupts: Interrupts) -> None:
        super().__init__(net, plan)
        self.coll, self.lo, self.interrupts = coll, lo, interrupts
        self.rank, self.size = coll.rank, coll.size
        self.say = print if (verbose and self.rank == 0) else None
        self._perm: Optional[Array] = None
        self._bounds = self._local = np.zeros(0, dtype=np.intp)
        self.epochs_begun = 0

    def prepare(self) -> None:
        """Rank 0's state on every rank, and the buffers of the steps."""
        net, mbs = self.net, self.plan.mini_batch_size
        _broadcast_state(self.coll, net)
        net._state(create=bool(self.plan.mu))  # (the velocity, as a new one: zeros)
        self.buf = net.gradient_buffer         # allocated here, zero (accumulated == 0 checked)
        self.buf.fill(0)
        self.xb = np.empty((mbs, net.sizes[0]), dtype=net.dtype)
        self.yb = np.empty((mbs, net.sizes[-1]), dtype=net.dtype)
        self.flag = np.zeros(1, dtype=np.int32)
        self.n_batches = -(-self.plan.n // mbs)
        self.mpi = _mpi()

    def epoch(self, data: Rows, perm: Array, mini_batch_size: int, h: Hyper) -> Record:
        self.epochs_begun += 1
        extras = {"allreduce_seconds": 0.0, "ranks": self.size, "samples": self.plan.n}
        if self.size == 1:  # nothing to reduce: net.sgd's own C epoch loop (and its threads)
            super().epoch(data, perm, mini_batch_size, h)
            return extras
        for k in range(self.n_batches):
            seconds, stop = self._batch(data, perm, k, h)
            extras["allreduce_seconds"] += seconds
            if stop:
                raise self._interrupted(f"after mini-batch {k + 1} of {self.n_batches} of epoch "
                                        f"{self.epochs_begun}")
        return extras

    def batch(self, data: Rows, perm: Array, mini_batch_size: int, k: int, h: Hyper) -> None:
        if self.size == 1:
            super().batch(data, perm, mini_batch_size, k, h)
        else:
            self._batch(data, perm, k, h)     # (a replay: an interrupt is acted on already)

    def _batch(self, data: Rows, perm: Array, k: int, h: Hyper) -> tuple[float, bool]:
        """Mini-batch k of the epoch shuffled by perm: this rank's rows of it accumulated,
        the sum over the ranks, one update; returns the seconds spent in Allreduce and
        whether a rank was interrupted (the flags' maximum, reduced with the gradient)."""
        if self._perm is not perm:  # positions of my rows in perm, per mini-batch
            pos = np.flatnonzero((perm >= self.lo) & (perm < self.lo + data.m))
            self._perm, self._local = perm, perm[pos] - self.lo
            self._bounds = np.searchsorted(pos // self.plan.mini_batch_size, np.arange(self.n_batches + 1))
        a, b = self._bounds[k], self._bounds[k + 1]
        if b > a:
            rows = self._local[a:b]
            np.take(data.X, rows, axis=0, out=self.xb[:b - a], mode="clip")
            if data.T.ndim == 1:
                self.yb[:b - a] = one_hot(data.T[rows], data.n_out, data.X.dtype)
            else:
                np.take(data.T, rows, axis=0, out=self.yb[:b - a], mode="clip")
            self.net._accumulate(self.xb[:b - a], self.yb[:b - a])
        t = time.perf_counter()
        self.flag[0] = self.interrupts.requested
        self.coll.allreduce([(self.buf, self.mpi.SUM), (self.flag, self.mpi.MAX)],
                            f"the Allreduce of mini-batch {k + 1} of {self.n_batches} of epoch {self.epochs_begun}")
        seconds = time.perf_counter() - t
        mbs = self.plan.mini_batch_size
        self.net._apply(h, min(mbs, self.plan.n - k * mbs))
        return seconds, bool(self.flag[0])

    def _interrupted(self, where: str) -> BaseException:
        return _collective(KeyboardInterrupt(f"distributed.sgd: interrupted (SIGINT) {where}, on every rank"))

    def replays(self, exc: BaseException) -> bool:
        # a replay is collective: only for what every rank raised alike
        return self.size == 1 or getattr(exc, "_cbackprop_collective", False)

    def settle(self, record: Record) -> None:
        """The ranks compare a checksum of their parameters; rank 0's are broadcast if any
        differs."""
        if self.size == 1:
            return
        if len(set(self.coll.allgather(_params_crc(self.net), "the comparison of the ranks' parameters"))) > 1:
            _broadcast_state(self.coll, self.net)
            record["resynchronised"] = True

    def total(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        """Each value added over the ranks, in rank order (the same result on every rank)."""
        if self.size == 1:
            return values
        gathered = self.coll.allgather(values, "the sum of the epoch's measurements")
        return tuple(sum(g[i] for g in gathered) for i in range(len(values)))

    def end_epoch(self, record: Record, stop: bool) -> bool:
        if self.say is not None:
            self.say(_report_line(record, self.plan.epochs, self.size), flush=True)
        stop, interrupted = _callback_verdict(self.coll, self.plan.callback, record, stop,
                                              self.interrupts.requested)
        if interrupted:
            raise self._interrupted(f"after epoch {record['epoch']}")
        return stop

    def collective(self, exc: BaseException) -> BaseException:
        return _collective(exc)


def _report_line(record: Record, epochs: int, size: int) -> str:
    """verbose's line for one epoch."""
    line = f"epoch {record['epoch']:>{len(str(epochs))}}/{epochs}"
    if "test_accuracy" in record:
        line += (f"  test accuracy {record['test_accuracy']:.2%} "
                 f"({record['test_correct']}/{record['test_total']})")
    for key, label in (("evaluation_accuracy", "evaluation accuracy"), ("training_cost", "training cost"),
                       ("evaluation_cost", "evaluation cost")):
        if key in record:
            line += f"  {label} {record[key]:.2%}" if key.endswith("accuracy") else \
                f"  {label} {record[key]:.6g}"
    sec = record["seconds"]
    share = record["allreduce_seconds"] / sec if sec else 0.0
    line += f"  {sec:.2f} s ({share:.0%} in Allreduce, {size} rank{'s' if size > 1 else ''})"
    if "stop_reason" in record:
        line += f"\nstopped: {record['stop_reason']}"
    return line


def _callback_verdict(coll: Collectives, callback: Optional[Callable[[Record], Any]], record: Record, stop: bool,
                      interrupted: bool = False) -> tuple[bool, bool]:
    """Call callback(record) on this rank and agree with the others: if it raised on any
    rank, every rank raises; if it returned true on any rank, every rank stops.  Returns
    (stop, whether any rank was interrupted)."""
    asked, error = False, None
    if callback is not None:
        try:
            asked = bool(callback(record))
        except Exception as exc:
            error = exc
    verdicts = coll.allgather((asked, None if error is None else f"{type(error).__name__}: {error}", interrupted),
                              f"the verdict after epoch {record['epoch']}")
    failed = [(r, m) for r, (_, m, _) in enumerate(verdicts) if m is not None]
    if failed:
        if error is not None:
            raise _collective(error)
        where = "; ".join(f"rank {r}: {m}" for r, m in failed)
        raise _collective(RuntimeError(f"distributed.sgd: the callback raised on {where}"))
    if any(a for a, _, _ in verdicts) and not stop:
        record["stop_reason"] = "callback asked to stop on rank(s) " + ", ".join(
            str(r) for r, (a, _, _) in enumerate(verdicts) if a)
        stop = True
    return stop, any(i for _, _, i in verdicts)


def _local_plan(net: Network, X: npt.ArrayLike, Y: npt.ArrayLike, epochs: object, mini_batch_size: object,
                eta: object, test_data: object, lmbda: object, mu: object, evaluation_data: object,
                flags: dict[str, object], early_stopping_n: object, eta_schedule_n: object, callback: object) -> Plan:
    """This rank's arguments checked (Plan without the global totals)."""
    if not hasattr(net, "gradient_buffer") or not hasattr(net, "_engine"):
        raise TypeError(f"distributed.sgd needs a cbackprop.Network (the C path, with a contiguous "
                        f"gradient buffer), got {type(net).__module__}.{type(net).__name__}")
    if net.accumulated:
        raise ValueError(f"the network holds an accumulated gradient of {net.accumulated} samples, "
                         f"which sgd would add to its first step: call apply_gradient() or "
                         f"zero_gradient() first")
    data = training_rows(net, X, Y, shard=True)
    return make_plan(net, data, epochs, mini_batch_size, eta, test_data, lmbda, mu, evaluation_data, flags,
                     early_stopping_n, eta_schedule_n, callback)


def _global_plan(coll: Collectives, net: Network, plan: Plan) -> int:
    """Every rank's plan completed with the totals over the ranks, after checking that the
    ranks agree; returns this rank's first row in the global data set."""
    gathered = coll.allgather(plan.local_counts(), "the count of the ranks' samples")
    counts = [g[0] for g in gathered]
    n = sum(counts)
    _check_agree(coll, {
        "sizes": tuple(net.sizes), "dtype": net.dtype.name, "activations": tuple(net.activations),
        "cost": net.cost_name, "epochs": plan.epochs, "mini_batch_size": plan.mini_batch_size, "eta": plan.eta,
        "lmbda": plan.lmbda, "mu": plan.mu, "early_stopping_n": plan.early_stopping_n,
        "eta_schedule_n": plan.eta_schedule_n, **plan.monitor,
    })
    # The same values on every rank now, so every rank reaches the same verdict on its own:
    if n == 0:
        raise ValueError("distributed.sgd: X must hold at least one sample over all ranks, got 0 rows on "
                         "every rank")
    plan.finish(n, sum(g[1] for g in gathered), any(g[2] for g in gathered), sum(g[3] for g in gathered),
                any(g[4] for g in gathered), who="distributed.sgd: ", none=" on every rank",
                over=" over all ranks")
    return sum(counts[:coll.rank])


def _abort(comm: Comm, exc: BaseException) -> None:
    """End the whole job (MPI_Abort) after an exception raised on this rank only (Ctrl-C
    twice, MemoryError, a bug): the other ranks would wait for it until their timeout, as
    `python -m mpi4py` does for uncaught exceptions.  Status 130 for KeyboardInterrupt
    (without a traceback), 1 otherwise."""
    import traceback
    interrupted = isinstance(exc, KeyboardInterrupt)
    sys.stdout.flush()
    sys.stderr.write(f"cbackprop.distributed: rank {comm.Get_rank()} of {comm.Get_size()}: "
                     f"{'interrupted' if interrupted else type(exc).__name__} during training; aborting all ranks "
                     f"(MPI_Abort)\n")
    if not interrupted:
        traceback.print_exc()
    abort(comm, INTERRUPTED_STATUS if interrupted else 1)


def sgd(net: Network, X: npt.ArrayLike, Y: npt.ArrayLike, epochs: int, mini_batch_size: int, eta: float,
        test_data: Optional[tuple[npt.ArrayLike, npt.ArrayLike]] = None, *, comm: Optional[Comm] = None,
        lmbda: float = 0.0, mu: float = 0.0, evaluation_data: Optional[tuple[npt.ArrayLike, npt.ArrayLike]] = None,
        monitor_evaluation_cost: bool = False, monitor_evaluation_accuracy: bool = False,
        monitor_training_cost: bool = False, monitor_training_accuracy: bool = False,
        early_stopping_n: Optional[int] = None, eta_schedule_n: Optional[int] = None,
        callback: Optional[Callable[[Record], Any]] = None, verbose: bool = False,
        abort_on_error: bool = True, timeout: Optional[float] = DEFAULT_TIMEOUT) -> list[Record]:
    """Data-parallel mini-batch SGD: net.sgd on the rows of all ranks together.

    Call it on every rank of comm (default COMM_WORLD) with the same network configuration
    and arguments; X, Y are this rank's shard of the training rows ([m, n_0] and [m, n_L]
    target rows, or m integer class labels; m may differ between ranks and may be 0), and
    the shards concatenated in rank order are the data set net.sgd would see (n = the sum
    of the m).  Rank 0's parameters, momentum velocity and generator state are used
    (broadcast first); afterwards every rank holds those net.sgd(X_all, Y_all, ...) leaves.
    The other arguments are net.sgd's (lmbda with the global n).

    test_data=(X_test, labels) and evaluation_data=(X, labels) or (X, Y) are this rank's
    part of the test and evaluation sets (None or empty on a rank that has none): every rank
    measures its part and the counts and cost sums are added over the ranks, so split each
    set between the ranks (take_shard) or give it to rank 0 only.  Passing the whole set on
    every rank counts it size times (accuracies unchanged, L2 term of the cost divided by
    size times the set).  Costs are total_cost's (with lmbda, the L2 term over the global
    set size); the early stopping and eta schedule decisions use the global accuracy, so
    every rank stops and halves eta alike.

    Returns one dict per epoch, the same on every rank except the timings: net.sgd's keys
    ("epoch", "seconds", "eta", "test_*", "training_*", "evaluation_*", "stop_reason") and
    "allreduce_seconds" (the part of "seconds" this rank spent in Allreduce, including
    waiting for slower ranks), "ranks", "samples" (the global n).  verbose=True prints one
    line per epoch from rank 0.  callback(record) is called on every rank after each epoch;
    if it returns true on any rank, every rank stops after this epoch ("stop_reason"); if it
    raises on some rank, every rank raises (the original exception there, RuntimeError
    naming it elsewhere).

    If any rank finds a problem in its arguments, or the ranks disagree on the network,
    epochs, mini_batch_size, eta, lmbda, mu or the measurements, every rank raises
    ValueError naming the ranks and values (RuntimeError if a rank failed otherwise, e.g.
    MemoryError), before any training: no rank is left waiting.  A diverging epoch (non-finite parameters) raises
    FloatingPointError on every rank, as net.sgd: the parameters are those before the
    mini-batch that diverged, with .history, .epoch and .mini_batch.  After every epoch the
    ranks compare a checksum of their parameters; they are bitwise equal with the MPI
    libraries tested (MPICH), and if they ever are not, rank 0's are broadcast and the
    record has "resynchronised": True.

    An exception that happens on one rank only during training (MemoryError, a bug) would
    leave the other ranks waiting for it; with abort_on_error (the default) that rank prints
    its traceback and calls MPI_Abort, which ends every rank of the job (exit status 1), as
    ``python -m mpi4py`` does for uncaught exceptions.  The errors above, raised on every
    rank alike, do not abort.

    timeout: the seconds a rank waits in any collective operation (default 600; None: no
    limit); a rank that waits longer (another rank never called sgd, raised with
    abort_on_error=False, or hangs) prints what it waited for and calls MPI_Abort (status
    1).  Ctrl-C (a SIGINT on any rank; MPICH's mpiexec forwards it to every rank): every
    rank raises KeyboardInterrupt after the same whole mini-batch, with equal parameters
    and ``history``, nothing aborted; a second SIGINT aborts (status 130).  See the module
    docstring.

    On a single rank sgd runs net.sgd's C epoch loop (on net.num_threads threads), so the
    parameters are bitwise net.sgd's and it is as fast; on several ranks each rank runs one
    Python step per mini-batch (gather, accumulate, Allreduce, apply) on one thread, without
    dropout (a network with dropout is refused).  Needs the C path (cbackprop.Network).
    """
    comm = _comm(comm)
    flags: dict[str, object] = {
        "monitor_evaluation_cost": monitor_evaluation_cost, "monitor_evaluation_accuracy": monitor_evaluation_accuracy,
        "monitor_training_cost": monitor_training_cost, "monitor_training_accuracy": monitor_training_accuracy,
        "verbose": verbose, "abort_on_error": abort_on_error}
    plan, error = None, None
    wait: Optional[float] = DEFAULT_TIMEOUT
    try:
        wait = _check_timeout(timeout)
        _refuse_dropout(net, comm.Get_size())
        plan = _local_plan(net, X, Y, epochs, mini_batch_size, eta, test_data, lmbda, mu, evaluation_data,
                           flags, early_stopping_n, eta_schedule_n, callback)
    except Exception as exc:  # reported on every rank, so that none waits in a collective
        error = exc
    return _train_together(Collectives(comm, _mpi(), wait), net, plan, error, verbose, abort_on_error)


def _train_together(coll: Collectives, net: Network, plan: Optional[Plan], error: Optional[BaseException],
                    verbose: bool, abort_on_error: bool) -> list[Record]:
    """sgd's collective part, from the check of every rank's arguments (error: this rank's)
    to the last epoch, under Interrupts on several ranks."""
    with Interrupts() if coll.size > 1 else contextlib.nullcontext(Interrupts()) as interrupts:
        try:
            _raise_if_any(coll, error, "invalid arguments")
            assert plan is not None
            runner = _Allreduce(net, plan, coll, _global_plan(coll, net, plan), verbose, interrupts)
            runner.prepare()
            history = train(net, plan, runner)
        except BaseException as exc:
            if coll.size > 1 and abort_on_error and not getattr(exc, "_cbackprop_collective", False):
                _abort(coll.comm, exc)
            raise
    if interrupts.requested:  # (a SIGINT after the last agreement: now, on this rank)
        late = KeyboardInterrupt()
        late.history = history  # type: ignore[attr-defined]
        raise late
    return history


def _refuse_dropout(net: Network, ranks: int) -> None:
    """Several ranks take Python steps that accumulate and reduce plain gradients: no dropout."""
    if ranks > 1 and any(getattr(net, "dropout", ())):
        raise ValueError(f"distributed.sgd on {ranks} ranks does not apply dropout (its steps "
                         f"accumulate and reduce plain gradients), got a network with "
                         f"dropout={list(net.dropout)}: train it with net.sgd on one rank, or "
                         f"without dropout")


def _check_timeout(timeout: object) -> Optional[float]:
    """distributed.sgd's timeout: None, or a number of seconds > 0."""
    if timeout is None:
        return None
    value = check_nonneg(timeout, "timeout")
    if value == 0:
        raise ValueError("timeout must be a number of seconds > 0 or None (no limit), got 0")
    return value


# ---- python -m cbackprop.distributed --selftest --------------------------------------------------
def _selftest(argv: list[str]) -> int:
    """Train [20, 16, 7, 4] on 303 random rows (float64, mini-batch 10, lmbda and momentum)
    with distributed.sgd, each rank on its shard, and compare with Network.sgd of the whole
    data on rank 0.  Exit status 0 when the parameters agree to 1e-10 relative."""
    import argparse

    from .network import Network

    p = argparse.ArgumentParser(prog="python -m cbackprop.distributed")
    p.add_argument("--selftest", action="store_true", required=True,
                   help="train a small network data-parallel and compare with one process")
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args(argv)
    rank, size = world()
    rng = np.random.default_rng(1)
    X = rng.random((303, 20))
    Y = np.eye(4)[rng.integers(0, 4, 303)]
    net = Network([20, 16, 7, 4], seed=3)
    Xs, Ys = take_shard(X, Y)
    Xt, lt = take_shard(X[:50], Y[:50].argmax(1))
    hist = sgd(net, Xs, Ys, args.epochs, 10, 0.5, test_data=(Xt, lt), lmbda=0.5, mu=0.5)
    if rank != 0:
        return 0
    ref = Network([20, 16, 7, 4], seed=3)
    ref_hist = ref.sgd(X, Y, args.epochs, 10, 0.5, test_data=(X[:50], Y[:50].argmax(1)), lmbda=0.5, mu=0.5)
    a, b = net._engine.params, ref._engine.params
    diff = float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
    same_test = [h["test_correct"] for h in hist] == [h["test_correct"] for h in ref_hist]
    ok = diff <= 1e-10 and same_test
    share = sum(h["allreduce_seconds"] for h in hist) / sum(h["seconds"] for h in hist)
    print(f"cbackprop.distributed selftest on {size} rank(s): max|params - single-process| / max|params| "
          f"= {diff:.3g}, test counts {'equal' if same_test else 'DIFFER'}, {share:.0%} of the time in "
          f"Allreduce: {'ok' if ok else 'FAILED'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(_selftest(sys.argv[1:]))
