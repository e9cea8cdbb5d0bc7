"""What cbackprop.Network and cbackprop.reference.Network share: argument validation,
parameter initialisation and the SGD driver.  Pure Python and NumPy; it never imports the
compiled module, so the reference stays independent of the C path.

Every check raises TypeError (wrong kind of object) or ValueError (right kind, wrong value)
with a message that names the parameter, the rule and the value.  Checks run before any
state changes, so a rejected call leaves the network as it was.
"""
from __future__ import annotations

import numbers
import operator
import os
import time

import numpy as np

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
DEFAULT_DTYPE = np.dtype(np.float64)
_MAX_DIM = 2**31 - 1  # BLAS and the row gather use 32-bit-safe sizes


def _short(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_int(value, name, minimum):
    """A Python or NumPy integer (not bool) >= minimum, returned as int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {_short(value)} of type {type(value).__name__}")
    value = operator.index(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def check_sizes(sizes):
    """sizes = [n_0, ..., n_L]: at least 2 layers, every layer at least 1 neuron."""
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise TypeError(f"sizes must be a sequence of integers such as [784, 30, 10], got {_short(sizes)}")
    try:
        sizes = list(sizes)
    except TypeError:  # iterable in name only, e.g. a 0-d NumPy array
        raise TypeError(f"sizes must be a sequence of integers such as [784, 30, 10], got {_short(sizes)}") from None
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least 2 layers (input and output), got {_short(sizes)}")
    out = []
    for i, n in enumerate(sizes):
        n = check_int(n, f"sizes[{i}]", 1)
        if n > _MAX_DIM:
            raise ValueError(f"sizes[{i}] must be at most {_MAX_DIM}, got {n}")
        out.append(n)
    return tuple(out)


def check_dtype(dtype):
    if dtype is None:  # np.dtype(None) would silently mean float64
        raise TypeError("dtype must be float32 or float64, got None")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {_short(dtype)}") from None
    if dt not in DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


def make_rng(seed):
    """The network's own generator: np.random.default_rng(seed), seed None or an int >= 0."""
    if seed is not None:
        seed = check_int(seed, "seed", 0)
    return np.random.default_rng(seed)


def initial_parameters(rng, sizes, dtype):
    """network.py's initialisation, N(0, 1) everywhere, drawn in float64 in its order:
    first every layer's biases, then every layer's weights; then cast to dtype."""
    biases = [rng.standard_normal(n) for n in sizes[1:]]
    weights = [rng.standard_normal((n, n_prev)) for n_prev, n in zip(sizes[:-1], sizes[1:])]
    return [b.astype(dtype) for b in biases], [w.astype(dtype) for w in weights]


def check_eta(eta, dtype=DEFAULT_DTYPE):
    """A finite real eta > 0 that stays finite and nonzero in the network's dtype."""
    if isinstance(eta, (bool, np.bool_)) or not isinstance(eta, numbers.Real):
        raise TypeError(f"eta must be a real number, got {_short(eta)} of type {type(eta).__name__}")
    try:
        eta = float(eta)
    except OverflowError:  # an int or Fraction beyond the float range
        raise ValueError(f"eta must be a finite number > 0, got {_short(eta)}") from None
    if not np.isfinite(eta) or eta <= 0:
        raise ValueError(f"eta must be a finite number > 0, got {eta}")
    info = np.finfo(dtype)
    if not float(info.tiny) <= eta <= float(info.max):
        raise ValueError(f"eta must lie in [{info.tiny:.3g}, {info.max:.3g}] to be a normal {np.dtype(dtype)} "
                         f"number, got {eta}")
    return eta


def _as_float_array(value, name, dtype):
    """np.asarray(value) converted to dtype, refusing complex, object and string data."""
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be an array of real numbers, got {_short(value)} ({exc})") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got an array of dtype {arr.dtype}")
    return arr


def _cast(arr, dtype, **kw):
    """np.array(arr, dtype, copy=True); values beyond dtype's range become inf, which the
    finiteness check then reports, rather than a RuntimeWarning from the cast."""
    with np.errstate(over="ignore"):
        return np.array(arr, dtype=dtype, copy=True, **kw)


def _finite_or_raise(arr, name, all_finite, source=None):
    """ValueError naming the first non-finite entry of arr; source is what the caller passed
    (same elements in C order, before reshape and cast), whose index and value are reported."""
    if not all_finite(arr):
        src = arr if source is None else source
        flat = int(np.flatnonzero(~np.isfinite(arr))[0])
        where = tuple(int(i) for i in np.unravel_index(flat, src.shape))
        raise ValueError(f"{name} must hold only finite {arr.dtype} values, got {src[where]} at index {where}")


def np_all_finite(arr):
    return bool(np.isfinite(arr).all())


def _overlaps(arr, avoid):
    if avoid is None:
        return False
    if isinstance(avoid, np.ndarray):
        avoid = (avoid,)
    return any(np.may_share_memory(arr, a) for a in avoid)


def as_rows(value, name, n_cols, dtype, *, allow_empty=False, all_finite=np_all_finite, avoid=None):
    """value as a C-contiguous, aligned [m, n_cols] array of dtype (a copy only when
    needed: the C kernels read it as REAL[]) and
    whether it was one sample of shape (n_cols,).  avoid: an array or a sequence of arrays
    (the network's parameters) the result must not share memory with."""
    arr = source = _as_float_array(value, name, dtype)
    if arr.ndim == 1:
        single = True
        if arr.shape[0] != n_cols:
            raise ValueError(f"{name} as one sample must have shape ({n_cols},), got shape {arr.shape}")
        arr = arr.reshape(1, n_cols)
    elif arr.ndim == 2:
        single = False
        if arr.shape[1] != n_cols:
            raise ValueError(
                f"{name} must have shape (m, {n_cols}) (one row per sample), got shape {arr.shape}")
    else:
        raise ValueError(f"{name} must be 1-D (one sample) or 2-D (one row per sample), got ndim={arr.ndim}")
    if arr.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} must hold at least one sample, got shape {arr.shape}")
    if (arr.dtype != dtype or not arr.flags.c_contiguous or not arr.flags.aligned
            or _overlaps(arr, avoid)):
        arr = _cast(arr, dtype, order="C")
    _finite_or_raise(arr, name, all_finite, source)
    return arr, single


def as_targets(value, name, n_out, m, single, dtype, **kw):
    """Targets y matching m rows of input: [m, n_L], or (n_L,) when the input was one sample."""
    arr, y_single = as_rows(value, name, n_out, dtype, **kw)
    if y_single != single or arr.shape[0] != m:
        want = f"({n_out},)" if single else f"({m}, {n_out})"
        got = np.shape(value)
        raise ValueError(f"{name} must have shape {want} to match X, got shape {got}")
    return arr


def as_labels(value, name, m, n_out):
    """Integer class labels, one per row: shape (m,), each in [0, n_out)."""
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise TypeError(f"{name} must be an array of integer labels, got {_short(value)} ({exc})") from None
    if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind in "bf"):
        # (an empty list becomes a float64 array: accepted as "no labels")
        raise TypeError(f"{name} must hold integer class labels, got an array of dtype {arr.dtype}")
    if arr.shape != (m,):
        raise ValueError(f"{name} must have shape ({m},) to match X, got shape {arr.shape}")
    if m:
        lo, hi = arr.min(), arr.max()
        if lo < 0 or hi >= n_out:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} must lie in [0, {n_out}) (one per output neuron), got {bad}")
    return arr


def _physical_memory():
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not available on this platform
        return float("inf")


def allocation_error(sizes, dtype, exc):
    """MemoryError naming sizes when the parameters of a network cannot be allocated."""
    n = sum(a * (b + 1) for b, a in zip(sizes[:-1], sizes[1:]))
    return MemoryError(f"sizes {list(sizes)} need {n} parameters ({n * np.dtype(dtype).itemsize / 2**30:.3g} GiB "
                       f"in {np.dtype(dtype)}), which cannot be allocated: {exc}")


class NetworkBase:
    """The public API on top of four numerical primitives a subclass provides:
    _forward(X) -> a^L, _gradient(X, Y) -> (nabla_b, nabla_w), _step(X, Y, eta) and
    _epoch(X, Y, perm, mini_batch_size, eta), all on validated [m, n] arrays."""

    _all_finite = staticmethod(np_all_finite)

    def _setup(self, sizes, dtype, seed):
        self.sizes = check_sizes(sizes)
        self.num_layers = len(self.sizes)
        self.dtype = check_dtype(dtype)
        self._rng = make_rng(seed)
        n_params = sum(a * (b + 1) for b, a in zip(self.sizes[:-1], self.sizes[1:]))
        # initial draws in float64, parameters, gradients: refuse before drawing when they
        # cannot fit in this machine's memory (instead of swapping or being killed)
        need = n_params * (8 + 2 * self.dtype.itemsize)
        if need > _physical_memory():
            raise allocation_error(self.sizes, self.dtype, f"about {need / 2**30:.3g} GiB are needed, "
                                   f"the machine has {_physical_memory() / 2**30:.3g} GiB")
        try:
            return initial_parameters(self._rng, self.sizes, self.dtype)
        except (MemoryError, ValueError) as exc:
            raise allocation_error(self.sizes, self.dtype, exc) from None

    def __repr__(self):
        return f"{type(self).__module__}.{type(self).__name__}(sizes={list(self.sizes)}, dtype={self.dtype.name})"

    # ---- parameters: lists of arrays, writable in place -----------------------------------
    @property
    def weights(self):
        """[w^1, ..., w^L], w^l shaped (n_l, n_{l-1}); writing into them changes the network."""
        return list(self._weights)

    @weights.setter
    def weights(self, new):
        self._assign(self._weights, new, "weights")

    @property
    def biases(self):
        """[b^1, ..., b^L], b^l shaped (n_l,); writing into them changes the network."""
        return list(self._biases)

    @biases.setter
    def biases(self, new):
        self._assign(self._biases, new, "biases")

    def _assign(self, targets, new, name):
        if isinstance(new, np.ndarray) or not hasattr(new, "__len__"):
            raise TypeError(f"{name} must be a list of {len(targets)} arrays, got {_short(new)}")
        if len(new) != len(targets):
            raise ValueError(f"{name} must be a list of {len(targets)} arrays, got {len(new)}")
        converted = []
        for i, (t, v) in enumerate(zip(targets, new)):
            arr = _as_float_array(v, f"{name}[{i}]", self.dtype)
            if arr.shape != t.shape:
                raise ValueError(f"{name}[{i}] must have shape {t.shape}, got shape {arr.shape}")
            src, arr = arr, _cast(arr, self.dtype)
            _finite_or_raise(arr, f"{name}[{i}]", np_all_finite, src)
            converted.append(arr)
        for t, v in zip(targets, converted):
            t[...] = v

    # ---- argument helpers ---------------------------------------------------------------------
    def _params(self):
        # Inputs that share memory with these are copied, so that an update in place cannot
        # change them mid-call (e.g. X = net.weights[0] in sgd).
        return tuple(self._weights) + tuple(self._biases)

    def _rows(self, X, name="X", avoid=None, **kw):
        return as_rows(X, name, self.sizes[0], self.dtype, all_finite=self._all_finite,
                       avoid=self._params() if avoid is None else avoid, **kw)

    def _xy(self, X, Y):
        X2, single = self._rows(X, "X")
        Y2 = as_targets(Y, "Y", self.sizes[-1], X2.shape[0], single, self.dtype,
                        all_finite=self._all_finite, avoid=self._params())
        return X2, Y2, single

    # ---- public API -----------------------------------------------------------------------------
    def feedforward(self, X):
        """a^L for X of shape (m, n_0) -> (m, n_L), or one sample (n_0,) -> (n_L,)."""
        X2, single = self._rows(X, allow_empty=True)
        out = self._forward(X2)
        return out[0] if single else out

    def backprop(self, X, Y):
        """(nabla_b, nabla_w): the gradient of C = 1/(2m) sum_x ||y(x) - a^L(x)||^2 over the
        m rows of X, Y, shaped like biases and weights (new arrays)."""
        X2, Y2, _ = self._xy(X, Y)
        return self._gradient(X2, Y2)

    def cost(self, X, Y):
        """C = 1/(2m) sum_x ||y(x) - a^L(x)||^2 over the m rows of X, Y (a float)."""
        X2, Y2, _ = self._xy(X, Y)
        diff = Y2.astype(np.float64) - self._forward(X2).astype(np.float64)
        return float(0.5 * np.einsum("ij,ij->", diff, diff) / X2.shape[0])

    def update_mini_batch(self, X, Y, eta):
        """One gradient-descent step on the mini-batch X, Y: w <- w - eta nabla_w,
        b <- b - eta nabla_b, with the gradient averaged over the batch."""
        eta = check_eta(eta, self.dtype)
        X2, Y2, _ = self._xy(X, Y)
        self._step(X2, Y2, eta)

    def evaluate(self, X, labels):
        """How many rows of X the network classifies as labels (argmax of a^L)."""
        X2, _ = self._rows(X, allow_empty=True)
        labels = as_labels(labels, "labels", X2.shape[0], self.sizes[-1])
        return self._evaluate(X2, labels)

    def _evaluate(self, X2, labels):
        if X2.shape[0] == 0:
            return 0
        return int(np.count_nonzero(np.argmax(self._forward(X2), axis=1) == labels))

    def sgd(self, X, Y, epochs, mini_batch_size, eta, test_data=None):
        """Mini-batch stochastic gradient descent, as network.py's SGD.

        Each epoch shuffles the rows with the network's own generator, then runs
        update_mini_batch on consecutive slices of mini_batch_size rows (the last may be
        shorter).  Returns one dict per epoch: "epoch" (1-based), "seconds", and with
        test_data=(X_test, labels) also "test_correct", "test_total", "test_accuracy".

        If a mini-batch makes any parameter non-finite (eta far too large), sgd raises
        FloatingPointError naming the epoch and mini-batch, with the parameters as they
        were before that mini-batch and the finished epochs in the error's ``history``.
        """
        X2, Y2, single = self._xy(X, Y)
        if single:
            raise ValueError(f"X must have shape (n, {self.sizes[0]}) for sgd (one row per sample), "
                             f"got shape {np.shape(X)}")
        epochs = check_int(epochs, "epochs", 1)
        mini_batch_size = check_int(mini_batch_size, "mini_batch_size", 1)
        eta = check_eta(eta, self.dtype)
        test = None
        if test_data is not None:
            if not isinstance(test_data, (tuple, list)) or len(test_data) != 2:
                raise TypeError(f"test_data must be a pair (X_test, labels), got {_short(test_data)}")
            Xt, _ = self._rows(test_data[0], "test_data[0]", allow_empty=True)
            lt = as_labels(test_data[1], "test_data[1]", Xt.shape[0], self.sizes[-1])
            test = (Xt, lt)
        n = X2.shape[0]
        mini_batch_size = min(mini_batch_size, n)
        history = []
        params = self._weights + self._biases
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            perm = self._rng.permutation(n)
            start = [p.copy() for p in params]   # one copy per epoch, not per step
            self._epoch(X2, Y2, perm, mini_batch_size, eta)
            if not all(self._all_finite(p) for p in params):
                self._diverged(X2, Y2, perm, mini_batch_size, eta, epoch, start, history)
            record = {"epoch": epoch, "seconds": time.perf_counter() - t0}
            if test is not None:
                correct = self._evaluate(*test)
                record.update(test_correct=correct, test_total=test[0].shape[0],
                              test_accuracy=correct / test[0].shape[0] if test[0].shape[0] else float("nan"))
            history.append(record)
        return history

    def _diverged(self, X, Y, perm, mini_batch_size, eta, epoch, start, history):
        """The epoch left non-finite parameters: replay it from its start, one mini-batch
        at a time (the kernels are deterministic, so the replay is the same computation),
        stop before the first mini-batch that makes a parameter non-finite, and raise."""
        params = self._weights + self._biases
        for p, s in zip(params, start):
            p[...] = s
        n_batches = -(-X.shape[0] // mini_batch_size)
        for k in range(n_batches):
            rows = perm[k * mini_batch_size:(k + 1) * mini_batch_size]
            before = [p.copy() for p in params]
            self._step(np.ascontiguousarray(X[rows]), np.ascontiguousarray(Y[rows]), eta)
            if not all(self._all_finite(p) for p in params):
                for p, s in zip(params, before):
                    p[...] = s
                err = FloatingPointError(
                    f"training diverged at epoch {epoch}, mini-batch {k + 1} of {n_batches}: "
                    f"with eta={eta} its update made parameters non-finite (inf or NaN). The "
                    f"network keeps the parameters from before that mini-batch; a smaller eta "
                    f"usually helps.")
                err.history = history
                err.epoch, err.mini_batch = epoch, k + 1
                raise err
        # (not reached when the epoch itself diverged: the replay computes the same values)
        raise RuntimeError(f"epoch {epoch} produced non-finite parameters, but replaying it "
                           f"one mini-batch at a time did not; please report this")
