"""The training loop of sgd, shared by Network.sgd, reference.Network.sgd and
distributed.sgd: argument checks, the epochs, the measurements after each epoch (network2's
monitors, test accuracy), early stopping and the eta schedule (PlateauRule), and what an
epoch leaves when it ends abnormally (EpochGuard: divergence, an interrupt).

What differs between one process and several is injected as an Epochs object: how an
epoch and one mini-batch run, how counts and cost sums are totalled over processes, and
how the processes agree on the callback's verdict.  Pure Python and NumPy: it never
imports the compiled module.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, cast

import numpy as np
import numpy.typing as npt

from ._model import one_hot
from ._validation import (DEFAULT_BETAS, DEFAULT_EPS, Hyper, Opt, _short, as_labels, as_targets, check, check_eta,
                          check_evaluation, check_hyper, check_optimizer, check_sgd_options, hyper)

if TYPE_CHECKING:
    from ._base import NetworkBase

Record = dict[str, Any]
Array = np.ndarray[Any, Any]
MONITORS = ("monitor_evaluation_cost", "monitor_evaluation_accuracy", "monitor_training_cost",
            "monitor_training_accuracy", "monitor_layer_speeds")


class Rows:
    """One data set: X ([m, n_0], validated) and T, either target rows ([m, n_L]) or
    integer class labels (int64 [m]).  One-hot targets are built per slice (batch,
    targets), never for the whole set."""

    __slots__ = ("X", "T", "n_out", "_labels")

    def __init__(self, X: Array, T: Array, n_out: int) -> None:
        self.X, self.T, self.n_out = X, T, n_out
        self._labels: Optional[Array] = None

    @property
    def m(self) -> int:
        return int(self.X.shape[0])

    @property
    def labels(self) -> Array:
        """One label per row: T itself, or the argmax of each target row (computed once)."""
        if self._labels is None:
            if self.T.ndim == 1:
                self._labels = self.T
            else:
                self._labels = np.argmax(self.T, axis=1) if self.m else np.zeros(0, dtype=np.intp)
        return self._labels

    def targets(self, lo: int, hi: int) -> Array:
        """The target rows lo:hi ([hi - lo, n_L])."""
        if self.T.ndim == 1:
            return one_hot(self.T[lo:hi], self.n_out, self.X.dtype)
        return self.T[lo:hi]

    def batch(self, rows: Array) -> tuple[Array, Array]:
        """(X[rows], targets of rows) as new C-contiguous arrays."""
        T = self.T[rows]
        return self.X[rows], (one_hot(T, self.n_out, self.X.dtype) if T.ndim == 1 else T)


def testing_rows(net: NetworkBase, test_data: object) -> Optional[Rows]:
    """sgd's test_data=(X_test, labels), validated: Rows with labels, or None.  The labels
    may also be one-hot (target) rows, whose argmax is taken."""
    if test_data is None:
        return None
    if not isinstance(test_data, (tuple, list)) or len(test_data) != 2:
        raise TypeError(f"test_data must be a pair (X_test, labels), got {_short(test_data)}")
    Xt, _ = net._rows(test_data[0], "test_data[0]", allow_empty=True)
    return Rows(Xt, net._labels(test_data[1], "test_data[1]", Xt.shape[0]), net.sizes[-1])


def labelled_rows(net: NetworkBase, data: object, name: str) -> Rows:
    """Rows of a pair (X, labels) or (X, Y) with one-hot/target rows."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{name} must be a pair (X, labels) or (X, Y), got {_short(data)}")
    Xd, _ = net._rows(data[0], f"{name}[0]", allow_empty=True)
    m, n_out = Xd.shape[0], net.sizes[-1]
    second = np.asarray(data[1]) if not isinstance(data[1], np.ndarray) else data[1]
    if second.ndim == 1 and (second.dtype.kind in "iu" or second.size == 0):
        T = np.ascontiguousarray(as_labels(second, f"{name}[1]", m, n_out), dtype=np.int64)
    else:
        T = as_targets(second, f"{name}[1]", n_out, m, False, net.dtype,
                       all_finite=net._all_finite, allow_empty=True, avoid=net._params())
    return Rows(Xd, T, n_out)


def training_rows(net: NetworkBase, X: npt.ArrayLike, Y: npt.ArrayLike, *, shard: bool = False) -> Rows:
    """sgd's X, Y: rows of X with their target rows or integer labels.  shard: this
    process's part of the rows (distributed.sgd), which may be empty."""
    n_0 = net.sizes[0]
    if shard:
        X2, single = net._rows(X, "X", allow_empty=True)
        if single:
            raise ValueError(f"X must have shape (m, {n_0}) (this rank's rows), got shape {np.shape(X)}")
        T = net._targets(Y, X2.shape[0], False, allow_empty=True)
    else:
        X2, T, single = net._xt(X, Y)
        if single:
            raise ValueError(f"X must have shape (n, {n_0}) for sgd (one row per sample), "
                             f"got shape {np.shape(X)}")
    return Rows(X2, T, net.sizes[-1])


@dataclass
class Plan:
    """sgd's validated arguments.  n, n_test, n_eval (the sizes of the training, test and
    evaluation sets) and use_test, use_eval (whether each was given) are over all
    processes: finish() sets them and runs the checks that need them."""

    train: Rows
    epochs: int
    mini_batch_size: int
    eta: float
    lmbda: float
    mu: float
    monitor: dict[str, bool]
    early_stopping_n: Optional[int]
    eta_schedule_n: Optional[int]
    callback: Optional[Callable[[Record], Any]]
    test: Optional[Rows]
    evaluation: Optional[Rows]
    dtype: np.dtype[Any]
    opt: Opt = None
    n: int = 0
    n_test: int = 0
    use_test: bool = False
    n_eval: int = 0
    use_eval: bool = False

    def local_counts(self) -> tuple[int, int, bool, int, bool]:
        """(m, m_test, has test, m_eval, has evaluation) of this process's data."""
        return (self.train.m, 0 if self.test is None else self.test.m, self.test is not None,
                0 if self.evaluation is None else self.evaluation.m, self.evaluation is not None)

    def finish(self, n: int, n_test: int, use_test: bool, n_eval: int, use_eval: bool, **messages: str) -> None:
        """Set the totals over all processes and check what depends on them: the weight
        decay factor 1 - eta lmbda / n > 0, evaluation data where the options need it
        (messages: check_evaluation's who, none, over)."""
        self.n, self.n_test, self.use_test, self.n_eval, self.use_eval = n, n_test, use_test, n_eval, use_eval
        check_hyper(self.eta, self.lmbda, n, self.mu, self.dtype, self.opt)
        check_evaluation(dict(self.monitor), self.early_stopping_n, self.eta_schedule_n, use_eval, n_eval,
                         **messages)
        self.mini_batch_size = min(self.mini_batch_size, n)

    def want_evaluation_accuracy(self) -> bool:
        return bool(self.monitor["monitor_evaluation_accuracy"] or self.early_stopping_n or self.eta_schedule_n)


def make_plan(net: NetworkBase, train: Rows, epochs: object, mini_batch_size: object, eta: object,
              test_data: object, lmbda: object, mu: object, evaluation_data: object, flags: Mapping[str, object],
              early_stopping_n: object, eta_schedule_n: object, callback: object, *, optimizer: object = "sgd",
              betas: object = DEFAULT_BETAS, eps: object = DEFAULT_EPS) -> Plan:
    """The Plan of sgd's arguments, each checked on its own (flags: the monitor_* flags, a
    missing one False, and any other True/False option); Plan.finish checks the rest."""
    epochs_ = check("epochs", epochs)
    mbs = check("mini_batch_size", mini_batch_size)
    eta_ = check_eta(eta, net.dtype)
    lmbda_ = check("lmbda", lmbda)
    mu_ = check("mu", mu)
    opt = check_optimizer(optimizer, mu_, betas, eps, net.dtype)
    esn, etsn = check_sgd_options(flags, callback, early_stopping_n, eta_schedule_n)
    test = testing_rows(net, test_data)
    evaluation = None if evaluation_data is None else labelled_rows(net, evaluation_data, "evaluation_data")
    return Plan(train, epochs_, mbs, eta_, lmbda_, mu_, {k: bool(flags.get(k, False)) for k in MONITORS}, esn,
                etsn, cast(Optional[Callable[[Record], Any]], callback), test, evaluation, net.dtype, opt)


class PlateauRule:
    """Early stopping and chapter 3's learning-rate schedule, on the evaluation accuracy
    after each epoch.  after_epoch(record, accuracy) returns whether to stop, and then puts
    the reason in record["stop_reason"]; eta is the rate for the next epoch."""

    def __init__(self, eta: float, early_stopping_n: Optional[int], eta_schedule_n: Optional[int]) -> None:
        self.eta0 = self.eta = eta
        self.early_stopping_n, self.eta_schedule_n = early_stopping_n, eta_schedule_n
        self.best, self.since_best = -1.0, 0

    def after_epoch(self, record: Record, accuracy: Optional[float]) -> bool:
        if accuracy is None:                     # no evaluation data: nothing to decide on
            return False
        reason = self._reason(accuracy)
        if reason:
            record["stop_reason"] = reason
        return reason is not None

    def _reason(self, accuracy: float) -> Optional[str]:
        if accuracy > self.best:
            self.best, self.since_best = accuracy, 0
        else:
            self.since_best += 1
        if self.early_stopping_n and self.since_best >= self.early_stopping_n:
            return (f"early stopping: no better evaluation accuracy than {self.best} "
                    f"in {self.early_stopping_n} epochs")
        if self.eta_schedule_n and self.since_best >= self.eta_schedule_n:
            self.eta /= 2
            self.since_best = 0
            if self.eta <= self.eta0 / 128:
                return (f"eta schedule: eta halved to {self.eta:g} = eta/128 after "
                        f"{self.eta_schedule_n} epochs without improvement")
        return None


class Epochs:
    """How sgd's epochs run in one process (Network.sgd); distributed.sgd subclasses it.

    epoch(data, perm, mini_batch_size, h) trains one epoch and returns the record's extra
    fields; batch(...) trains its mini-batch k alone (the divergence replay), which
    exact_batches() says computes what the epoch computes (not so with dropout, whose masks
    depend on the mini-batch's place in the epoch); prefix(..., k, h) trains the epoch's
    first k mini-batches as the epoch does (the divergence search otherwise); replays(exc)
    tells whether an epoch ended by exc may be replayed; settle(record) runs once the
    epoch's parameters are final; total(values) adds each value over the processes;
    end_epoch(record, stop) calls the callback and returns whether to stop; collective(exc)
    marks an error raised alike by every process."""

    def __init__(self, net: NetworkBase, plan: Plan) -> None:
        self.net, self.plan = net, plan

    def epoch(self, data: Rows, perm: Array, mini_batch_size: int, h: Hyper) -> Record:
        self.net._epoch(data.X, data.T, perm, mini_batch_size, h)
        return {}

    def batch(self, data: Rows, perm: Array, mini_batch_size: int, k: int, h: Hyper) -> None:
        X, Y = data.batch(perm[k * mini_batch_size:(k + 1) * mini_batch_size])
        self.net._step(X, Y, h)

    def exact_batches(self) -> bool:
        return not any(self.net.dropout)

    def prefix(self, data: Rows, perm: Array, mini_batch_size: int, k: int, h: Hyper) -> None:
        self.net._epoch(data.X, data.T, perm[:k * mini_batch_size], mini_batch_size, h)

    def replays(self, exc: BaseException) -> bool:
        return True

    def settle(self, record: Record) -> None:
        pass

    def total(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        return values

    def end_epoch(self, record: Record, stop: bool) -> bool:
        if self.plan.callback is not None:
            self.plan.callback(record)
        return stop

    def collective(self, exc: BaseException) -> BaseException:
        return exc


def _attach_history(exc: BaseException, history: list[Record]) -> None:
    if not hasattr(exc, "history"):
        try:
            exc.history = history  # type: ignore[attr-defined]
        except AttributeError:     # (an exception class with __slots__)
            pass


class EpochGuard:
    """One epoch, and the one place that decides what it leaves, whatever ended it.

    The parameters and the optimizer's state (velocity, Adam's moments and steps, the
    dropout round) are copied when the epoch starts.  When it ends, normally or by an
    exception (KeyboardInterrupt, which the engine raises after a whole number of
    mini-batches, or any other), finite parameters stay as the epoch left them.  Non-finite
    ones are restored to the epoch's start, and the epoch is replayed one mini-batch at a
    time (the kernels are deterministic: the same computation) up to the mini-batch that
    makes a parameter non-finite, whose update is undone.  With dropout a mini-batch cannot
    be replayed alone (its masks depend on its place in the epoch): the epoch's first k
    mini-batches are replayed as one prefix, and that mini-batch is found by bisection
    (a non-finite parameter stays non-finite).  An epoch
    that ended normally then raises FloatingPointError naming the epoch and mini-batch;
    an exception is re-raised with that error as its cause.  Either error carries
    ``history``, the records of the finished epochs."""

    def __init__(self, net: NetworkBase, runner: Epochs, plan: Plan, perm: Array, h: Hyper, epoch: int,
                 history: list[Record]) -> None:
        self.net, self.runner, self.plan = net, runner, plan
        self.perm, self.h, self.epoch, self.history = perm, h, epoch, history
        net._prepare_state(h)
        self.start = net._snapshot()

    def run(self) -> Record:
        try:
            extras = self.runner.epoch(self.plan.train, self.perm, self.plan.mini_batch_size, self.h)
        except BaseException as exc:
            self.settle(exc)
            raise
        self.settle(None)
        return extras

    def settle(self, exc: Optional[BaseException]) -> None:
        if exc is not None:
            _attach_history(exc, self.history)
        if self.net._finite():
            return
        self.net._restore(self.start)
        if exc is not None and not self.runner.replays(exc):
            return                      # (e.g. on one MPI rank only: no collective replay)
        diverged = self.replay() if self.runner.exact_batches() else self.bisect()
        if exc is None:
            raise diverged
        exc.__cause__ = diverged

    def replay(self) -> BaseException:
        """From the epoch's start, run its mini-batches one at a time; stop before the first
        that makes a parameter non-finite and return the FloatingPointError to raise."""
        net, mbs = self.net, self.plan.mini_batch_size
        n_batches = -(-self.plan.n // mbs)
        for k in range(n_batches):
            before = net._snapshot()
            try:
                self.runner.batch(self.plan.train, self.perm, mbs, k, self.h)
            finally:                    # (also when interrupted right after the step)
                finite = net._finite()
                if not finite:
                    net._restore(before)
            if not finite:
                return self.diverged(k + 1, n_batches)
        # (not reached when the epoch itself diverged: the replay computes the same values)
        return RuntimeError(f"epoch {self.epoch} produced non-finite parameters, but replaying it "
                            f"one mini-batch at a time did not; please report this")

    def bisect(self) -> BaseException:
        """The first mini-batch after which a parameter is non-finite, by bisection on
        prefixes of the epoch replayed from its start (the parameters are at the start, not
        finite after the whole epoch); leaves the parameters from before that mini-batch."""
        net, mbs = self.net, self.plan.mini_batch_size
        n_batches = -(-self.plan.n // mbs)
        lo, hi = 0, n_batches           # prefix of lo mini-batches finite, of hi not
        try:
            while hi - lo > 1:
                mid = (lo + hi) // 2
                self.runner.prefix(self.plan.train, self.perm, mbs, mid, self.h)
                lo, hi = (mid, hi) if net._finite() else (lo, mid)
                net._restore(self.start)
            if lo:
                self.runner.prefix(self.plan.train, self.perm, mbs, lo, self.h)
        except BaseException:
            net._restore(self.start)    # (interrupted: the epoch's start, finite)
            raise
        return self.diverged(hi, n_batches)

    def diverged(self, k: int, n_batches: int) -> BaseException:
        """The FloatingPointError of mini-batch k (1-based) of the epoch."""
        err = FloatingPointError(
            f"training diverged at epoch {self.epoch}, mini-batch {k} of {n_batches}: "
            f"with eta={self.h[0]} its update made parameters non-finite (inf or NaN). The "
            f"network keeps the parameters from before that mini-batch; a smaller eta "
            f"usually helps.")
        err.history, err.epoch, err.mini_batch = self.history, self.epoch, k  # type: ignore[attr-defined]
        return self.runner.collective(err)


def record_empty_evaluation(record: Record, monitor_evaluation_cost: bool, monitor_evaluation_accuracy: bool) -> None:
    """An epoch record's evaluation measurements when the evaluation set has no samples:
    NaN, nothing to measure."""
    if monitor_evaluation_cost:
        record["evaluation_cost"] = float("nan")
    if monitor_evaluation_accuracy:
        record["evaluation_accuracy"] = float("nan")


def measure(net: NetworkBase, plan: Plan, total: Callable[[tuple[Any, ...]], tuple[Any, ...]],
            record: Record) -> Optional[float]:
    """Put the epoch's measurements in record (test_*, training_*, evaluation_*: costs as
    total_cost with lmbda, accuracies as fractions), each over all processes (total adds
    the counts and cost sums); returns the evaluation accuracy the PlateauRule needs, or
    None.  Every process makes the same calls to total, in the same order."""
    if plan.use_test:
        correct = total((net._sums(plan.test, False, True)[1] if plan.test is not None else 0,))[0]
        record.update(test_correct=correct, test_total=plan.n_test,
                      test_accuracy=correct / plan.n_test if plan.n_test else float("nan"))
    if plan.monitor["monitor_layer_speeds"]:
        record["layer_speeds"] = net._layer_speeds(plan.train, total, plan.n)
    want_cost, want_acc = plan.monitor["monitor_training_cost"], plan.monitor["monitor_training_accuracy"]
    if want_cost or want_acc:
        s, correct = total(net._sums(plan.train, want_cost, want_acc))
        if want_cost:
            record["training_cost"] = s / plan.n + net._l2_term(plan.lmbda, plan.n)
        if want_acc:
            record["training_accuracy"] = correct / plan.n
    want_cost, want_acc = plan.monitor["monitor_evaluation_cost"], plan.want_evaluation_accuracy()
    if plan.use_eval and not plan.n_eval:      # no evaluation samples: nothing to measure
        record_empty_evaluation(record, want_cost, plan.monitor["monitor_evaluation_accuracy"])
    if not (plan.use_eval and plan.n_eval and (want_cost or want_acc)):
        return None
    ev = plan.evaluation
    s, correct = total(net._sums(ev, want_cost, want_acc) if ev is not None else (0.0, 0))
    if want_cost:
        record["evaluation_cost"] = s / plan.n_eval + net._l2_term(plan.lmbda, plan.n_eval)
    if not want_acc:
        return None
    record["evaluation_accuracy"] = accuracy = correct / plan.n_eval
    return float(accuracy)


def _epoch_record(net: NetworkBase, plan: Plan, runner: Epochs, eta: float, epoch: int,
                  history: list[Record]) -> Record:
    """Train epoch number epoch (shuffled with the network's generator) at rate eta."""
    t0 = time.perf_counter()
    perm = net._rng.permutation(plan.n)
    h = hyper(eta, plan.lmbda, plan.n, plan.mu, plan.opt)
    extras = EpochGuard(net, runner, plan, perm, h, epoch, history).run()
    record = {"epoch": epoch, "seconds": time.perf_counter() - t0, "eta": eta, **extras}
    runner.settle(record)
    return record


def train(net: NetworkBase, plan: Plan, runner: Epochs) -> list[Record]:
    """sgd's epochs: returns one record per epoch (see NetworkBase.sgd).  An exception
    leaving it (FloatingPointError, KeyboardInterrupt) carries ``history``: the records of
    the epochs finished before it."""
    rule = PlateauRule(plan.eta, plan.early_stopping_n, plan.eta_schedule_n)
    history: list[Record] = []
    try:
        for epoch in range(1, plan.epochs + 1):
            record = _epoch_record(net, plan, runner, rule.eta, epoch, history)
            eval_acc = measure(net, plan, runner.total, record)
            history.append(record)
            stop = rule.after_epoch(record, eval_acc)
            if runner.end_epoch(record, stop):
                break
    except KeyboardInterrupt as exc:
        _attach_history(exc, history)
        raise
    return history
