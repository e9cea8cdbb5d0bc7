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


#: Activation names (index = the C code CBP_ACT_*) and cost names (CBP_COST_*).
ACTIVATIONS = ("sigmoid", "tanh", "relu", "identity", "softmax")
COSTS = ("quadratic", "cross-entropy", "log-likelihood")
INITS = ("large", "default")


def check_activations(activations, n_layers):
    """One activation name for every layer (a string) or a sequence of n_layers names for
    layers 1..L; softmax only for the output layer.  Returns a tuple of n_layers names."""
    if isinstance(activations, str):
        names = [activations] * n_layers
        if activations == "softmax" and n_layers > 1:
            raise ValueError(f"activations='softmax' would put softmax in hidden layers; softmax is only "
                             f"allowed for the output layer: pass a list such as "
                             f"{['sigmoid'] * (n_layers - 1) + ['softmax']}")
    elif hasattr(activations, "__iter__") and not isinstance(activations, bytes):
        names = list(activations)
        if len(names) != n_layers:
            raise ValueError(f"activations must name one activation per layer after the input "
                             f"({n_layers} for sizes with {n_layers + 1} entries), got {len(names)}: {_short(names)}")
    else:
        raise TypeError(f"activations must be a name or a list of names from {ACTIVATIONS}, got {_short(activations)}")
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise TypeError(f"activations[{i}] must be a name from {ACTIVATIONS}, got {_short(name)}")
        names[i] = name = str(name)                       # (np.str_ -> str)
        if name not in ACTIVATIONS:
            raise ValueError(f"activations[{i}] must be one of {ACTIVATIONS}, got {name!r}")
        if name == "softmax" and i != n_layers - 1:
            raise ValueError(f"activations[{i}] is 'softmax', which is only allowed for the output layer "
                             f"(activations[{n_layers - 1}])")
    return tuple(names)


def check_cost(cost, output_activation):
    """A cost name from COSTS that fits the output layer: cross-entropy needs a sigmoid output
    (its delta^L = a - y relies on sigma' cancelling, eq. (66)), log-likelihood a softmax
    output (eq. (81)); quadratic fits any."""
    if not isinstance(cost, str):
        raise TypeError(f"cost must be a name from {COSTS}, got {_short(cost)}")
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {COSTS}, got {cost!r}")
    if cost == "cross-entropy" and output_activation != "sigmoid":
        raise ValueError(f"cost='cross-entropy' needs a sigmoid output layer (book eq. (66)), got output "
                         f"activation {output_activation!r}")
    if cost == "log-likelihood" and output_activation != "softmax":
        raise ValueError(f"cost='log-likelihood' needs a softmax output layer (book eq. (81)), got output "
                         f"activation {output_activation!r}")
    return cost


def check_init(init):
    if not isinstance(init, str):
        raise TypeError(f"init must be one of {INITS}, got {_short(init)}")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS} ('large': N(0, 1) as network.py; 'default': weights "
                         f"N(0, 1/n_in) as network2.py), got {init!r}")
    return init


def check_nonneg(value, name, upper=None):
    """A finite real number >= 0 (and <= upper when given), returned as float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {_short(value)} of type {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:
        raise ValueError(f"{name} must be a finite number >= 0, got {_short(value)}") from None
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    if upper is not None and value > upper:
        raise ValueError(f"{name} must lie in [0, {upper}], got {value}")
    return value


def hyper(eta, lmbda, n, mu):
    """(eta, keep, decay, mu) of one update: decay = eta lmbda / n, keep = 1 - decay
    (network2's weight decay (1 - eta lmbda / n), eq. (93)); checked values."""
    decay = eta * (lmbda / n) if lmbda else 0.0
    return (eta, 1.0 - decay, decay, mu)


def check_hyper(eta, lmbda, n, mu, dtype):
    """Validated (eta, keep, decay, mu) for update_mini_batch / apply_gradient."""
    eta = check_eta(eta, dtype)
    lmbda = check_nonneg(lmbda, "lmbda")
    mu = check_nonneg(mu, "mu", upper=1.0)
    if lmbda and n is None:
        raise ValueError("n (the training-set size) is required when lmbda > 0: the weight decay is "
                         "1 - eta * lmbda / n, as in network2.py")
    if n is not None:
        n = check_int(n, "n", 1)
        if n > 2**63:
            raise ValueError(f"n (the training-set size) must be at most 2**63, got {_short(n)}")
    h = hyper(eta, lmbda, n, mu)
    if not h[1] > 0:
        raise ValueError(f"eta * lmbda / n must be < 1 so that the weight decay factor 1 - eta * lmbda / n "
                         f"stays positive, got eta={eta}, lmbda={lmbda}, n={n} (factor {h[1]})")
    return h


def make_rng(seed):
    """The network's own generator: np.random.default_rng(seed), seed None or an int >= 0."""
    if seed is not None:
        seed = check_int(seed, "seed", 0)
    return np.random.default_rng(seed)


def initial_parameters(rng, sizes, dtype, init="large"):
    """network.py's initialisation ('large': N(0, 1) everywhere) or network2.py's
    ('default': weights N(0, 1/n_in), biases N(0, 1)), drawn in float64 in their order:
    first every layer's biases, then every layer's weights; then cast to dtype."""
    biases = [rng.standard_normal(n) for n in sizes[1:]]
    weights = [rng.standard_normal((n, n_prev)) for n_prev, n in zip(sizes[:-1], sizes[1:])]
    if init == "default":
        weights = [w / np.sqrt(w.shape[1]) for w in weights]
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


def _as_float_array(value, name):
    """np.asarray(value) (no conversion yet), refusing complex, object and string data."""
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


def _finite_or_raise(arr, name, all_finite=None, source=None, error=ValueError):
    """error (ValueError) naming the first non-finite entry of arr; source is what the caller
    passed (same elements in C order, before reshape and cast), whose index and value are
    reported.  all_finite: the fast check to run first (default NumPy's)."""
    if not (all_finite or np_all_finite)(arr):
        src = arr if source is None else source
        flat = int(np.flatnonzero(~np.isfinite(arr))[0])
        where = tuple(int(i) for i in np.unravel_index(flat, src.shape))
        raise error(f"{name} must hold only finite {arr.dtype} values, got {src[where]} at index {where}")


def as_parameter_list(new, name, shapes, dtype, sizes=None):
    """new, a list of len(shapes) arrays of real numbers with those shapes, as new
    C-contiguous arrays of dtype with finite values; TypeError or ValueError naming
    name[i] otherwise (a value beyond dtype's range is reported as the value given).  sizes,
    when given, is named in the messages.  For the weights and biases setters and the save
    functions."""
    if isinstance(new, np.ndarray) or not hasattr(new, "__len__"):
        raise TypeError(f"{name} must be a list of {len(shapes)} arrays, got {_short(new)}")
    per_layer = "" if sizes is None else f" (one per layer after the input for sizes {list(sizes)})"
    if len(new) != len(shapes):
        raise ValueError(f"{name} must be a list of {len(shapes)} arrays{per_layer}, got {len(new)}")
    match = "" if sizes is None else f" to match sizes {list(sizes)}"
    out = []
    for i, (value, shape) in enumerate(zip(new, shapes)):
        arr = _as_float_array(value, f"{name}[{i}]")
        if arr.shape != tuple(shape):
            raise ValueError(f"{name}[{i}] must have shape {tuple(shape)}{match}, got shape {arr.shape}")
        src, arr = arr, _cast(arr, dtype, order="C")
        _finite_or_raise(arr, f"{name}[{i}]", source=src)
        out.append(arr)
    return out


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
    arr = source = _as_float_array(value, name)
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


def cost_sum(cost, A, Y):
    """sum_x C_x over the rows of a^L = A and y = Y, in float64 (see cbackprop.h):
    quadratic 1/2 ||y - a||^2; cross-entropy -sum_j [y ln a + (1-y) ln(1-a)];
    log-likelihood -sum_j y ln a.  Terms 0 * ln 0 count as 0 (the limit); a saturated
    output against its target gives inf, the true value (network2 reports ~1.8e308 via
    nan_to_num)."""
    A = np.asarray(A, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if cost == "quadratic":
        d = Y - A
        return float(0.5 * np.einsum("ij,ij->", d, d))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if cost == "cross-entropy":
            t = np.where(Y != 0, Y * np.log(A), 0.0) + np.where(Y != 1, (1 - Y) * np.log1p(-A), 0.0)
        else:
            t = np.where(Y != 0, Y * np.log(A), 0.0)
        # (targets outside [0, 1] can meet a saturated output as inf - inf: the cost is then
        # undefined and the result NaN, without a warning, as the C path's other results)
        return float(-t.sum())


class PlateauRule:
    """Early stopping and chapter 3's learning-rate schedule, on the evaluation accuracy
    after each epoch (one rule for Network.sgd and distributed.sgd).  after_epoch(record,
    accuracy) returns whether to stop, and then puts the reason in record["stop_reason"];
    eta is the rate for the next epoch."""

    def __init__(self, eta, early_stopping_n, eta_schedule_n):
        self.eta0 = self.eta = eta
        self.early_stopping_n, self.eta_schedule_n = early_stopping_n, eta_schedule_n
        self.best, self.since_best = -1.0, 0

    def after_epoch(self, record, accuracy):
        if accuracy is None:                     # no evaluation data: nothing to decide on
            return False
        reason = self._reason(accuracy)
        if reason:
            record["stop_reason"] = reason
        return reason is not None

    def _reason(self, accuracy):
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


def check_sgd_options(flags, callback, early_stopping_n, eta_schedule_n):
    """The options Network.sgd and distributed.sgd share: flags (name -> value) must be
    bools, callback callable or None, the two patience counts integers >= 1 or None.
    Returns (early_stopping_n, eta_schedule_n)."""
    for flag, value in flags.items():
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{flag} must be True or False, got {_short(value)}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {_short(callback)}")
    if early_stopping_n is not None:
        early_stopping_n = check_int(early_stopping_n, "early_stopping_n", 1)
    if eta_schedule_n is not None:
        eta_schedule_n = check_int(eta_schedule_n, "eta_schedule_n", 1)
    return early_stopping_n, eta_schedule_n


def check_evaluation(flags, early_stopping_n, eta_schedule_n, present, n_eval, who="", none="", over=""):
    """ValueError unless the evaluation data the sgd options need is there: given at all
    (present) for monitor_evaluation_* (flags, check_sgd_options's), early_stopping_n and
    eta_schedule_n, and with samples (n_eval) for the last two.  who prefixes the messages
    (e.g. "distributed.sgd: "), none and over follow "got None" and "at least one sample"
    (where the data was looked for)."""
    plateau = early_stopping_n or eta_schedule_n
    if (flags["monitor_evaluation_cost"] or flags["monitor_evaluation_accuracy"] or plateau) \
            and not present:
        raise ValueError(f"{who}evaluation_data is required by monitor_evaluation_*, early_stopping_n "
                         f"and eta_schedule_n, got None{none}")
    if plateau and n_eval == 0:
        raise ValueError(f"{who}early_stopping_n and eta_schedule_n need evaluation_data with at least "
                         f"one sample{over}, got 0")


def record_empty_evaluation(record, monitor_evaluation_cost, monitor_evaluation_accuracy):
    """An epoch record's evaluation measurements when the evaluation set has no samples:
    NaN, nothing to measure."""
    if monitor_evaluation_cost:
        record["evaluation_cost"] = float("nan")
    if monitor_evaluation_accuracy:
        record["evaluation_accuracy"] = float("nan")


class Trace:
    """Every quantity of BP1-BP4 for one mini-batch (rows are samples), from one call:
    z[l-1] = z^l, a[l] = a^l (a[0] is the input), delta[l-1] = delta^l ([m, n_l] each, the
    delta of the batch-average cost, i.e. including its 1/m), nabla_b[l-1], nabla_w[l-1]
    (the batch gradient, BP3/BP4 summed over the rows), cost (the batch cost C)."""

    __slots__ = ("z", "a", "delta", "nabla_b", "nabla_w", "cost")

    def __init__(self, z, a, delta, nabla_b, nabla_w, cost):
        self.z, self.a, self.delta = z, a, delta
        self.nabla_b, self.nabla_w, self.cost = nabla_b, nabla_w, cost

    def __repr__(self):
        shapes = [d.shape for d in self.delta]
        return f"Trace(layers={len(self.z)}, delta shapes={shapes}, cost={self.cost:.6g})"


class NetworkBase:
    """The public API on top of numerical primitives a subclass provides, all on validated
    [m, n] arrays; h = (eta, keep, decay, mu) is one update's hyper-parameters (hyper()):
    _forward(X) -> a^L; _gradient(X, Y) -> (nabla_b, nabla_w); _trace(X, Y) -> (z, a,
    delta, nabla_b, nabla_w); _step(X, Y, h); _epoch(X, Y, perm, mini_batch_size, h);
    _accumulate(X, Y) (adds the summed gradient); _apply(h) (one update from it, then
    zeroes it); _zero_accumulated(); _velocity() -> list of momentum arrays (empty before
    momentum is used)."""

    _all_finite = staticmethod(np_all_finite)

    def _setup(self, sizes, dtype, seed, activations="sigmoid", cost="quadratic", init="large"):
        self.sizes = check_sizes(sizes)
        self.num_layers = len(self.sizes)
        self.dtype = check_dtype(dtype)
        self.activations = check_activations(activations, self.num_layers - 1)
        self.cost_name = check_cost(cost, self.activations[-1])
        init = check_init(init)
        self._rng = make_rng(seed)
        self._accumulated = 0
        n_params = sum(a * (b + 1) for b, a in zip(self.sizes[:-1], self.sizes[1:]))
        # initial draws in float64, parameters, gradients: refuse before drawing when they
        # cannot fit in this machine's memory (instead of swapping or being killed)
        need = n_params * (8 + 2 * self.dtype.itemsize)
        if need > _physical_memory():
            raise allocation_error(self.sizes, self.dtype, f"about {need / 2**30:.3g} GiB are needed, "
                                   f"the machine has {_physical_memory() / 2**30:.3g} GiB")
        try:
            return initial_parameters(self._rng, self.sizes, self.dtype, init)
        except (MemoryError, ValueError) as exc:
            raise allocation_error(self.sizes, self.dtype, exc) from None

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
        converted = as_parameter_list(new, name, [t.shape for t in targets], self.dtype)
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
    def __repr__(self):
        extra = ""
        if self.activations != ("sigmoid",) * (self.num_layers - 1):
            extra += f", activations={list(self.activations)}"
        if self.cost_name != "quadratic":
            extra += f", cost={self.cost_name!r}"
        return (f"{type(self).__module__}.{type(self).__name__}(sizes={list(self.sizes)}{extra}, "
                f"dtype={self.dtype.name})")

    def feedforward(self, X):
        """a^L for X of shape (m, n_0) -> (m, n_L), or one sample (n_0,) -> (n_L,)."""
        X2, single = self._rows(X, allow_empty=True)
        out = self._forward(X2)
        return out[0] if single else out

    def backprop(self, X, Y):
        """(nabla_b, nabla_w): the gradient of the network's cost C (the average of the
        per-sample costs over the m rows of X, Y), shaped like biases and weights (new
        arrays).  A gradient being accumulated (accumulate_gradient) is not affected."""
        X2, Y2, _ = self._xy(X, Y)
        return self._gradient(X2, Y2)

    def cost(self, X, Y):
        """The network's cost C = 1/m sum_x C_x over the m rows of X, Y (a float; for the
        quadratic cost C = 1/(2m) sum_x ||y(x) - a^L(x)||^2)."""
        X2, Y2, _ = self._xy(X, Y)
        return cost_sum(self.cost_name, self._forward(X2), Y2) / X2.shape[0]

    def total_cost(self, X, Y, lmbda=0.0):
        """network2.py's total_cost: the cost over the rows of X, Y plus the L2 term
        lmbda / (2 n) sum_w w^2 with n = the number of rows (eq. (85))."""
        lmbda = check_nonneg(lmbda, "lmbda")
        X2, Y2, _ = self._xy(X, Y)
        return self._total_cost(X2, Y2, lmbda)

    def _total_cost(self, X2, Y2, lmbda, A=None):
        """total_cost on validated arrays; A: a^L of X2 when already computed."""
        n = X2.shape[0]
        return cost_sum(self.cost_name, self._forward(X2) if A is None else A, Y2) / n \
            + self._l2_term(lmbda, n)

    def _l2_term(self, lmbda, n):
        """total_cost's L2 term lmbda / (2 n) sum_w w^2 (eq. (85)); 0.0 when lmbda is 0."""
        if not lmbda:
            return 0.0
        return 0.5 * (lmbda / n) * sum(float(np.einsum("ij,ij->", w, w, dtype=np.float64))
                                       for w in self._weights)

    def _monitor(self, X2, Y2, labels, lmbda, cost, accuracy):
        """(total_cost or None, accuracy as a fraction or None) of the rows of X2 from one
        feedforward; X2 has at least one row."""
        A = self._forward(X2)
        c = self._total_cost(X2, Y2, lmbda, A) if cost else None
        acc = int(np.count_nonzero(np.argmax(A, axis=1) == labels)) / X2.shape[0] if accuracy else None
        return c, acc

    def trace(self, X, Y):
        """Every quantity of BP1-BP4 for the mini-batch X, Y from one backpropagation:
        a Trace with lists z, a (a^0 = X first), delta, nabla_b, nabla_w and the cost."""
        X2, Y2, _ = self._xy(X, Y)
        z, a, delta, nabla_b, nabla_w = self._trace(X2, Y2)
        if np.may_share_memory(a[0], X):
            a = [a[0].copy()] + a[1:]        # never hand back the caller's own array
        cost = cost_sum(self.cost_name, a[-1], Y2) / X2.shape[0]
        return Trace(z, a, delta, nabla_b, nabla_w, cost)

    def update_mini_batch(self, X, Y, eta, *, lmbda=0.0, n=None, mu=0.0):
        """One gradient-descent step on the mini-batch X, Y with the gradient averaged over
        its rows: w <- (1 - eta lmbda / n) w - eta nabla_w, b <- b - eta nabla_b (network2.py,
        n the training-set size, needed when lmbda > 0); with momentum mu > 0,
        v <- mu v - eta nabla - (eta lmbda / n) w, w <- w + v (biases: no decay term)."""
        h = check_hyper(eta, lmbda, n, mu, self.dtype)
        X2, Y2, _ = self._xy(X, Y)
        self._step(X2, Y2, h)

    # ---- gradient accumulation ------------------------------------------------------------------
    @property
    def accumulated(self):
        """How many samples the gradient being accumulated holds (0: none)."""
        return self._accumulated

    def accumulate_gradient(self, X, Y):
        """Add the gradient of the rows of X, Y to the network's gradient buffer (the sum
        of their per-sample gradients, so that micro-batches of any sizes add up to their
        union); apply_gradient then takes one step with the average."""
        X2, Y2, _ = self._xy(X, Y)
        self._accumulate(X2, Y2)
        self._accumulated += X2.shape[0]

    def apply_gradient(self, eta, *, lmbda=0.0, n=None, mu=0.0, samples=None):
        """One update_mini_batch step with the gradient accumulated since the last
        apply_gradient or zero_gradient, averaged over its samples; then starts afresh.
        Accumulating micro-batches and applying equals update_mini_batch on their union.
        samples: the number of samples the gradient buffer sums over, when it was filled
        elsewhere too (e.g. summed over MPI ranks); default: the samples accumulated here."""
        if samples is None:
            if self._accumulated == 0:
                raise ValueError("apply_gradient needs an accumulated gradient: call accumulate_gradient(X, Y) "
                                 "first (accumulated = 0)")
            samples = self._accumulated
        else:
            samples = check_int(samples, "samples", 1)
        eta, keep, decay, mu = check_hyper(eta, lmbda, n, mu, self.dtype)
        self._apply((eta, keep, decay, mu), samples)
        self._accumulated = 0

    def zero_gradient(self):
        """Discard the gradient being accumulated."""
        self._zero_accumulated()
        self._accumulated = 0

    # ---- saving and loading -----------------------------------------------------------------------
    def save(self, path):
        """Write the network to path: a versioned .npz (never pickle) with sizes,
        activations, cost, dtype, every weight and bias, and a checksum.  It is written to a
        temporary file in the same directory and renamed onto path, so an existing file is
        replaced whole or not at all.  The optimiser state (momentum velocity, an
        accumulated gradient) is not saved.  path is used exactly as given."""
        from . import _io
        _io.save_npz(path, sizes=self.sizes, activations=self.activations, cost=self.cost_name,
                     dtype=self.dtype, weights=self._weights, biases=self._biases)

    def save_network2(self, path):
        """Write network2.py's JSON format (sizes, weights, biases as column vectors, cost
        "QuadraticCost" or "CrossEntropyCost"), atomically; network2 knows only sigmoid
        layers and those two costs, so other networks are refused with ValueError."""
        from . import _io
        _io.save_network2_json(path, sizes=self.sizes, cost=self.cost_name, weights=self._weights,
                               biases=self._biases, activations=self.activations)

    @classmethod
    def load(cls, path, *, dtype=None, seed=None):
        """A network from a file written by save(); dtype None keeps the saved one (else the
        parameters are converted).  seed seeds the new network's generator (its shuffles).
        Corrupt, truncated or inconsistent files raise ValueError naming the problem."""
        from . import _io
        d = _io.load_npz(path)
        net = cls(d["sizes"], activations=d["activations"], cost=d["cost"],
                  dtype=d["dtype"] if dtype is None else dtype, seed=seed)
        net.weights = d["weights"]
        net.biases = d["biases"]
        return net

    @classmethod
    def load_network2(cls, path, *, dtype=DEFAULT_DTYPE, seed=None):
        """A sigmoid network from network2.py's JSON (Network.save(filename) in the book's
        code), with its cost; ValueError for malformed files."""
        from . import _io
        d = _io.load_network2_json(path)
        net = cls(d["sizes"], activations="sigmoid", cost=d["cost"], dtype=dtype, seed=seed)
        net.weights = d["weights"]
        net.biases = d["biases"]
        return net

    # ---- evaluation -----------------------------------------------------------------------------
    def evaluate(self, X, labels):
        """How many rows of X the network classifies as labels (argmax of a^L)."""
        X2, _ = self._rows(X, allow_empty=True)
        labels = as_labels(labels, "labels", X2.shape[0], self.sizes[-1])
        return self._evaluate(X2, labels)

    def _evaluate(self, X2, labels):
        if X2.shape[0] == 0:
            return 0
        return int(np.count_nonzero(np.argmax(self._forward(X2), axis=1) == labels))

    def _test_pair(self, test_data):
        """sgd's test_data=(X_test, labels), validated: (X, labels) arrays, or None."""
        if test_data is None:
            return None
        if not isinstance(test_data, (tuple, list)) or len(test_data) != 2:
            raise TypeError(f"test_data must be a pair (X_test, labels), got {_short(test_data)}")
        Xt, _ = self._rows(test_data[0], "test_data[0]", allow_empty=True)
        return Xt, as_labels(test_data[1], "test_data[1]", Xt.shape[0], self.sizes[-1])

    def _checked_epoch(self, X2, Y2, perm, mini_batch_size, h, epoch, history, momentum):
        """One epoch of _epoch; if it leaves non-finite parameters, _diverged restores and
        raises.  The start state is copied once per epoch, with the momentum velocity
        (created now when momentum, so that a diverging first epoch restores it too)."""
        state = self._weights + self._biases + self._velocity(create=momentum)
        start = [p.copy() for p in state]
        self._epoch(X2, Y2, perm, mini_batch_size, h)
        if not all(self._all_finite(p) for p in self._weights + self._biases):
            self._diverged(X2, Y2, perm, mini_batch_size, h, epoch, start, history)

    def _labelled(self, data, name):
        """(X, Y targets, labels) from a pair (X, labels) or (X, Y) with one-hot/target rows."""
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise TypeError(f"{name} must be a pair (X, labels) or (X, Y), got {_short(data)}")
        Xd, _ = self._rows(data[0], f"{name}[0]", allow_empty=True)
        m, n_out = Xd.shape[0], self.sizes[-1]
        second = np.asarray(data[1]) if not isinstance(data[1], np.ndarray) else data[1]
        if second.ndim == 1 and (second.dtype.kind in "iu" or second.size == 0):
            labels = as_labels(second, f"{name}[1]", m, n_out)
            Y = np.zeros((m, n_out), dtype=self.dtype)
            Y[np.arange(m), labels] = 1
        else:
            Y = as_targets(second, f"{name}[1]", n_out, m, False, self.dtype,
                           all_finite=self._all_finite, allow_empty=True, avoid=self._params())
            labels = np.argmax(Y, axis=1) if m else np.zeros(0, dtype=np.intp)
        return Xd, Y, labels

    def sgd(self, X, Y, epochs, mini_batch_size, eta, test_data=None, *, lmbda=0.0, mu=0.0,
            evaluation_data=None, monitor_evaluation_cost=False, monitor_evaluation_accuracy=False,
            monitor_training_cost=False, monitor_training_accuracy=False, early_stopping_n=None,
            eta_schedule_n=None, callback=None):
        """Mini-batch stochastic gradient descent, as network.py's SGD and network2.py's.

        Each epoch shuffles the rows with the network's own generator, then runs
        update_mini_batch on consecutive slices of mini_batch_size rows (the last may be
        shorter), with L2 weight decay lmbda (n = len(X)) and momentum mu.  Returns one dict
        per epoch: "epoch" (1-based), "seconds", "eta"; with test_data=(X_test, labels)
        "test_correct", "test_total", "test_accuracy"; with the monitor_* flags (network2's)
        "training_cost", "training_accuracy", "evaluation_cost", "evaluation_accuracy"
        (costs as total_cost with lmbda, accuracies as fractions; evaluation_data is
        (X, labels) or (X, Y)).

        early_stopping_n=k stops after k epochs in a row without a new best evaluation
        accuracy; eta_schedule_n=k halves eta after k such epochs and stops once eta has
        fallen to eta/128 (chapter 3).  Both need evaluation_data; the last record then has
        "stop_reason".  callback(record), if given, is called after each epoch.

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
        n = X2.shape[0]
        eta, keep, decay, mu = check_hyper(eta, lmbda, n, mu, self.dtype)
        lmbda = float(lmbda)                 # (checked by check_hyper)
        flags = dict(monitor_evaluation_cost=monitor_evaluation_cost,
                     monitor_evaluation_accuracy=monitor_evaluation_accuracy,
                     monitor_training_cost=monitor_training_cost,
                     monitor_training_accuracy=monitor_training_accuracy)
        early_stopping_n, eta_schedule_n = check_sgd_options(flags, callback, early_stopping_n,
                                                             eta_schedule_n)
        test = self._test_pair(test_data)
        evaluation = None if evaluation_data is None else self._labelled(evaluation_data, "evaluation_data")
        check_evaluation(flags, early_stopping_n, eta_schedule_n, evaluation is not None,
                         0 if evaluation is None else evaluation[0].shape[0])
        train_labels = None
        if monitor_training_accuracy:
            train_labels = np.argmax(Y2, axis=1)
        mini_batch_size = min(mini_batch_size, n)
        rule = PlateauRule(eta, early_stopping_n, eta_schedule_n)
        history = []
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            perm = self._rng.permutation(n)
            eta = rule.eta
            h = hyper(eta, lmbda, n, mu)
            self._checked_epoch(X2, Y2, perm, mini_batch_size, h, epoch, history, bool(mu))
            record = {"epoch": epoch, "seconds": time.perf_counter() - t0, "eta": eta}
            if test is not None:
                correct = self._evaluate(*test)
                record.update(test_correct=correct, test_total=test[0].shape[0],
                              test_accuracy=correct / test[0].shape[0] if test[0].shape[0] else float("nan"))
            if monitor_training_cost or monitor_training_accuracy:
                c, acc = self._monitor(X2, Y2, train_labels, lmbda, monitor_training_cost,
                                       monitor_training_accuracy)
                if monitor_training_cost:
                    record["training_cost"] = c
                if monitor_training_accuracy:
                    record["training_accuracy"] = acc
            eval_acc = None
            if evaluation is not None and evaluation[0].shape[0]:
                Xe, Ye, le = evaluation
                want_acc = bool(monitor_evaluation_accuracy or early_stopping_n or eta_schedule_n)
                if monitor_evaluation_cost or want_acc:
                    c, eval_acc = self._monitor(Xe, Ye, le, lmbda, monitor_evaluation_cost, want_acc)
                    if monitor_evaluation_cost:
                        record["evaluation_cost"] = c
                    if want_acc:
                        record["evaluation_accuracy"] = eval_acc
            elif evaluation is not None:      # no evaluation samples: nothing to measure
                record_empty_evaluation(record, monitor_evaluation_cost, monitor_evaluation_accuracy)
            history.append(record)
            stop = rule.after_epoch(record, eval_acc)
            if callback is not None:
                callback(record)
            if stop:
                break
        return history

    def _diverged(self, X, Y, perm, mini_batch_size, h, epoch, start, history):
        """The epoch left non-finite parameters: replay it from its start, one mini-batch
        at a time (the kernels are deterministic, so the replay is the same computation),
        stop before the first mini-batch that makes a parameter non-finite, and raise."""
        state = self._weights + self._biases + self._velocity()
        for p, s in zip(state, start):
            p[...] = s
        n_batches = -(-X.shape[0] // mini_batch_size)
        for k in range(n_batches):
            rows = perm[k * mini_batch_size:(k + 1) * mini_batch_size]
            before = [p.copy() for p in state]
            self._step(np.ascontiguousarray(X[rows]), np.ascontiguousarray(Y[rows]), h)
            state = self._weights + self._biases + self._velocity()
            if not all(self._all_finite(p) for p in self._weights + self._biases):
                for p, s in zip(state, before):
                    p[...] = s
                err = FloatingPointError(
                    f"training diverged at epoch {epoch}, mini-batch {k + 1} of {n_batches}: "
                    f"with eta={h[0]} its update made parameters non-finite (inf or NaN). The "
                    f"network keeps the parameters from before that mini-batch; a smaller eta "
                    f"usually helps.")
                err.history = history
                err.epoch, err.mini_batch = epoch, k + 1
                raise err
        # (not reached when the epoch itself diverged: the replay computes the same values)
        raise RuntimeError(f"epoch {epoch} produced non-finite parameters, but replaying it "
                           f"one mini-batch at a time did not; please report this")
