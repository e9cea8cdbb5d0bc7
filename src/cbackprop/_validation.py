"""Argument validation for cbackprop.Network, cbackprop.reference.Network, distributed.sgd,
the loaders and the command line: the one place where what callers pass is checked.

Every check raises TypeError (wrong kind of object) or ValueError (right kind, wrong value)
with a message that names the parameter, the rule and the value.  Checks run before any
state changes, so a rejected call leaves the network as it was.  The scalar parameters
and their rules are declared once, in PARAMETERS; check(name, value) applies them.
Pure Python and NumPy: it never imports the compiled module.
"""
from __future__ import annotations

import numbers
import operator
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, Union, cast

import numpy as np
import numpy.typing as npt

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
DEFAULT_DTYPE = np.dtype(np.float64)
_MAX_DIM = 2**31 - 1  # BLAS and the row gather use 32-bit-safe sizes

#: Activation names (index = the C code CBP_ACT_*) and cost names (CBP_COST_*).
ACTIVATIONS = ("sigmoid", "tanh", "relu", "identity", "softmax")
COSTS = ("quadratic", "cross-entropy", "log-likelihood")
INITS = ("large", "default")
#: Update rules of the public API (optimizer=...): "sgd" (network2's, with momentum when
#: mu > 0), "nesterov" (Nesterov momentum), "adam".
OPTIMIZERS = ("sgd", "nesterov", "adam")
#: Adam's defaults (PyTorch's and scikit-learn's).
DEFAULT_BETAS = (0.9, 0.999)
DEFAULT_EPS = 1e-8

#: The rule of an update as the engine takes it: None (SGD, or momentum when mu != 0),
#: ("nesterov",), or ("adam", beta1, beta2, eps) (see check_optimizer()).
Opt = Optional[tuple[Any, ...]]
#: (eta, keep, decay, mu, opt): one update's hyper-parameters (see hyper()).
Hyper = tuple[float, float, float, float, Opt]
#: Array types of the public API: any array; arrays of the network's floats; class labels;
#: what a path may be.
Array = np.ndarray[Any, Any]
FloatArray = npt.NDArray[np.floating[Any]]
LabelArray = npt.NDArray[np.int64]
PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _given(value: object, converted: Optional[float] = None, limit: int = 40) -> str:
    """A number as the caller gave it, shortened: converted (its float) when that is the
    same number, else str() of the value itself, so that a NumPy scalar beyond the float64
    range reads as it prints (np.longdouble 1e4000 as 1e+4000, not as the inf that
    formatting it through a Python float gives)."""
    if converted is not None and converted == value:
        return str(converted)
    text = str(value) if isinstance(value, (numbers.Number, np.generic)) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- scalars ----------------------------------------------------------------------------------
def check_int(value: object, name: str, minimum: int) -> int:
    """A Python or NumPy integer (not bool) >= minimum, returned as int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {_short(value)} of type {type(value).__name__}")
    value = operator.index(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def check_nonneg(value: object, name: str, upper: Optional[float] = None) -> float:
    """A finite real number >= 0 (and <= upper when given), returned as float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {_short(value)} of type {type(value).__name__}")
    try:
        out = float(value)
    except OverflowError:
        out = float("inf")
    if not np.isfinite(out) or out < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {_given(value, out)}")
    if upper is not None and out > upper:
        raise ValueError(f"{name} must lie in [0, {upper}], got {_given(value, out)}")
    return out


class Integer:
    """Rule: an integer >= minimum (and <= maximum), or None when optional."""

    def __init__(self, minimum: int, maximum: Optional[int] = None, optional: bool = False) -> None:
        self.minimum, self.maximum, self.optional = minimum, maximum, optional

    def __call__(self, value: object, name: str) -> Optional[int]:
        if value is None and self.optional:
            return None
        out = check_int(value, name, self.minimum)
        if self.maximum is not None and out > self.maximum:
            raise ValueError(f"{name} must be at most {self.maximum}, got {_short(out)}")
        return out


class Real:
    """Rule: a finite real number in [0, upper], or in [0, upper) when open_upper."""

    def __init__(self, upper: Optional[float] = None, open_upper: bool = False) -> None:
        self.upper, self.open_upper = upper, open_upper

    def __call__(self, value: object, name: str) -> float:
        out = check_nonneg(value, name, self.upper)
        if self.open_upper and out == self.upper:
            raise ValueError(f"{name} must lie in [0, {self.upper}), got {out}")
        return out


class Positive:
    """Rule: a finite real number > 0."""

    def __call__(self, value: object, name: str) -> float:
        out = check_nonneg(value, name)
        if out <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {out}")
        return out


class Pair:
    """Rule: a sequence of two values, each checked by rule (names name[0], name[1])."""

    def __init__(self, rule: Callable[[Any, str], Any]) -> None:
        self.rule = rule

    def __call__(self, value: object, name: str) -> tuple[Any, Any]:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or not hasattr(value, "__getitem__"):
            raise TypeError(f"{name} must be a pair of numbers such as (0.9, 0.999), got {_short(value)}")
        if len(value) != 2:
            raise ValueError(f"{name} must be a pair of numbers such as (0.9, 0.999), got {len(value)} values: "
                             f"{_short(value)}")
        return self.rule(value[0], f"{name}[0]"), self.rule(value[1], f"{name}[1]")


class Flag:
    """Rule: True or False (bool or numpy.bool_)."""

    def __call__(self, value: object, name: str) -> bool:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, got {_short(value)}")
        return bool(value)


class OneOf:
    """Rule: one of the names in options; hint explains them in the ValueError."""

    def __init__(self, options: tuple[str, ...], hint: str = "") -> None:
        self.options, self.hint = options, hint

    def __call__(self, value: object, name: str) -> str:
        if not isinstance(value, str):
            raise TypeError(f"{name} must be one of {self.options}, got {_short(value)}")
        if value not in self.options:
            raise ValueError(f"{name} must be one of {self.options}{self.hint}, got {value!r}")
        return str(value)


class CallableOrNone:
    """Rule: a callable, or None."""

    def __call__(self, value: object, name: str) -> Optional[Callable[..., Any]]:
        if value is not None and not callable(value):
            raise TypeError(f"{name} must be callable or None, got {_short(value)}")
        return value


#: The scalar parameters of the public API and their rules (the array arguments, sizes,
#: activations, cost, dtype and eta have their own checkers below).
PARAMETERS: dict[str, Callable[[Any, str], Any]] = {
    "epochs": Integer(1),
    "mini_batch_size": Integer(1),
    "lmbda": Real(),
    "mu": Real(upper=1.0),
    "optimizer": OneOf(OPTIMIZERS, " ('sgd': network2's rule, with momentum mu; 'nesterov': Nesterov momentum mu; "
                                    "'adam': Adam with betas and eps)"),
    "betas": Pair(Real(upper=1.0, open_upper=True)),
    "eps": Positive(),
    "dropout": Real(upper=1.0, open_upper=True),   # the rate of one hidden layer
    "n": Integer(1),
    "samples": Integer(1),
    "size": Integer(1, maximum=_MAX_DIM),           # one entry of sizes
    "seed": Integer(0, optional=True),
    "early_stopping_n": Integer(1, optional=True),
    "eta_schedule_n": Integer(1, optional=True),
    "max_per_layer": Integer(1, optional=True),
    "init": OneOf(INITS, " ('large': N(0, 1) as network.py; 'default': weights N(0, 1/n_in) as "
                         "network2.py)"),
    "callback": CallableOrNone(),
    "flag": Flag(),
}


def check(name: str, value: object, rule: Optional[str] = None) -> Any:
    """value checked by the rule declared for name in PARAMETERS (or for rule, when the
    parameter shares one, e.g. every monitor_* flag is a "flag")."""
    return PARAMETERS[rule or name](value, name)


def check_init(init: object) -> str:
    return cast(str, check("init", init))


def check_sizes(sizes: object) -> tuple[int, ...]:
    """sizes = [n_0, ..., n_L]: at least 2 layers, every layer at least 1 neuron."""
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise TypeError(f"sizes must be a sequence of integers such as [784, 30, 10], got {_short(sizes)}")
    try:
        items = list(sizes)
    except TypeError:  # iterable in name only, e.g. a 0-d NumPy array
        raise TypeError(f"sizes must be a sequence of integers such as [784, 30, 10], got {_short(sizes)}") from None
    if len(items) < 2:
        raise ValueError(f"sizes must list at least 2 layers (input and output), got {_short(items)}")
    return tuple(check(f"sizes[{i}]", n, "size") for i, n in enumerate(items))


def check_dtype(dtype: object) -> np.dtype[Any]:
    if dtype is None:  # np.dtype(None) would silently mean float64
        raise TypeError("dtype must be float32 or float64, got None")
    try:
        dt: np.dtype[Any] = np.dtype(cast(Any, dtype))
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {_short(dtype)}") from None
    if dt not in DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


def check_activations(activations: object, n_layers: int) -> tuple[str, ...]:
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


def check_cost(cost: object, output_activation: str) -> str:
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


def check_eta(eta: object, dtype: npt.DTypeLike = DEFAULT_DTYPE) -> float:
    """A finite real eta > 0 that stays finite and nonzero in the network's dtype."""
    if isinstance(eta, (bool, np.bool_)) or not isinstance(eta, numbers.Real):
        raise TypeError(f"eta must be a real number, got {_short(eta)} of type {type(eta).__name__}")
    try:
        out = float(eta)
    except OverflowError:  # an int or Fraction beyond the float range
        out = float("inf")
    if not np.isfinite(out) or not cast(Any, eta) > 0:   # (a positive eta below the float range: the rule below)
        raise ValueError(f"eta must be a finite number > 0, got {_given(eta, out)}")
    info = np.finfo(cast(Any, dtype))
    if not float(info.tiny) <= out <= float(info.max):
        raise ValueError(f"eta must lie in [{info.tiny:.3g}, {info.max:.3g}] to be a normal {np.dtype(dtype)} "
                         f"number, got {_given(eta, out)}")
    return out


def hyper(eta: float, lmbda: float, n: Optional[int], mu: float, opt: Opt = None) -> Hyper:
    """(eta, keep, decay, mu, opt) of one update: decay = eta lmbda / n, keep = 1 - decay
    (network2's weight decay (1 - eta lmbda / n), eq. (93)), opt the rule
    (check_optimizer); checked values."""
    decay = eta * (lmbda / n) if lmbda and n else 0.0
    return (eta, 1.0 - decay, decay, mu, opt)


def check_optimizer(optimizer: object, mu: float, betas: object, eps: object, dtype: npt.DTypeLike) -> Opt:
    """The engine's rule (Opt) for optimizer (OPTIMIZERS) with the checked momentum mu:
    'nesterov' needs mu > 0 (with mu = 0 it is plain SGD), 'adam' takes betas (each in
    [0, 1)) and eps (> 0 and a normal number of dtype) and no mu (Adam's first moment
    decays by betas[0])."""
    name = check("optimizer", optimizer)
    if name == "sgd":
        return None
    if name == "nesterov":
        if not mu:
            raise ValueError("optimizer='nesterov' needs momentum mu > 0 (Nesterov momentum with mu = 0 is "
                             "plain SGD), got mu=0.0")
        return ("nesterov",)
    if mu:
        raise ValueError(f"optimizer='adam' takes no momentum mu (its first moment decays by betas[0]): pass "
                         f"mu=0, got mu={mu}")
    beta1, beta2 = check("betas", betas)
    eps_ = check("eps", eps)
    tiny = float(np.finfo(cast(Any, dtype)).tiny)
    if eps_ < tiny:
        raise ValueError(f"eps must be at least {tiny:.3g} to be a normal {np.dtype(dtype)} number, got {eps_}")
    return ("adam", beta1, beta2, eps_)


def check_hyper(eta: object, lmbda: object, n: object, mu: object, dtype: npt.DTypeLike, opt: Opt = None) -> Hyper:
    """Validated (eta, keep, decay, mu, opt) for update_mini_batch / apply_gradient / sgd;
    opt: a rule from check_optimizer.  The weight decay factor 1 - eta lmbda / n must stay
    positive, except for Adam (whose L2 term lmbda / n w joins the gradient instead)."""
    eta_ = check_eta(eta, dtype)
    lmbda_ = check("lmbda", lmbda)
    mu_ = check("mu", mu)
    if lmbda_ and n is None:
        raise ValueError("n (the training-set size) is required when lmbda > 0: the weight decay is "
                         "1 - eta * lmbda / n, as in network2.py")
    n_ = None if n is None else check("n", n)
    if n_ is not None and n_ > 2**63:
        raise ValueError(f"n (the training-set size) must be at most 2**63, got {_short(n_)}")
    h = hyper(eta_, lmbda_, n_, mu_, opt)
    if not h[1] > 0 and not (opt and opt[0] == "adam"):
        raise ValueError(f"eta * lmbda / n must be < 1 so that the weight decay factor 1 - eta * lmbda / n "
                         f"stays positive, got eta={eta_}, lmbda={lmbda_}, n={n_} (factor {h[1]})")
    return h


def check_update(eta: object, lmbda: object, n: object, mu: object, dtype: npt.DTypeLike, optimizer: object,
                 betas: object, eps: object) -> Hyper:
    """check_hyper with the rule of the public arguments optimizer, betas, eps."""
    opt = check_optimizer(optimizer, check("mu", mu), betas, eps, dtype)
    return check_hyper(eta, lmbda, n, mu, dtype, opt)


def check_dropout(dropout: object, sizes: Sequence[int]) -> tuple[float, ...]:
    """The dropout rate of each hidden layer (L - 1 of them): a rate p in [0, 1) for every
    hidden layer, or one per hidden layer; None means 0.  The masks' counter holds the layer
    in 8 bits, so networks with dropout have fewer than 256 layers."""
    n_hidden = len(sizes) - 2
    if dropout is None:
        return (0.0,) * n_hidden
    if isinstance(dropout, (str, bytes)):
        raise TypeError(f"dropout must be a rate in [0, 1) or a list of one rate per hidden layer, got "
                        f"{_short(dropout)}")
    if hasattr(dropout, "__len__") and not (isinstance(dropout, np.ndarray) and dropout.ndim == 0):
        rates = list(cast(Sequence[Any], dropout))
        if len(rates) != n_hidden:
            raise ValueError(f"dropout must be one rate or one per hidden layer ({n_hidden} for sizes "
                             f"{list(sizes)}), got {len(rates)}: {_short(dropout)}")
        out = tuple(check(f"dropout[{i}]", p, "dropout") for i, p in enumerate(rates))
    else:
        p = check("dropout", dropout)
        if p and not n_hidden:
            raise ValueError(f"dropout applies to hidden layers, and sizes {list(sizes)} have none, got "
                             f"dropout={p}")
        out = (p,) * n_hidden
    if any(out) and len(sizes) > 256:
        raise ValueError(f"dropout needs a network of fewer than 256 layers (the masks' counter holds the "
                         f"layer in 8 bits), got {len(sizes)} layers")
    return out


# ---- sgd's options ---------------------------------------------------------------------------------
def check_sgd_options(flags: Mapping[str, object], callback: object, early_stopping_n: object,
                      eta_schedule_n: object) -> tuple[Optional[int], Optional[int]]:
    """The options Network.sgd and distributed.sgd share: flags (name -> value) must be
    bools, callback callable or None, the two patience counts integers >= 1 or None.
    Returns (early_stopping_n, eta_schedule_n)."""
    for flag, value in flags.items():
        check(flag, value, "flag")
    check("callback", callback)
    return check("early_stopping_n", early_stopping_n), check("eta_schedule_n", eta_schedule_n)


def check_evaluation(flags: Mapping[str, object], early_stopping_n: Optional[int], eta_schedule_n: Optional[int],
                     present: bool, n_eval: int, who: str = "", none: str = "", over: str = "") -> None:
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


# ---- arrays ----------------------------------------------------------------------------------------
def _as_float_array(value: object, name: str) -> np.ndarray[Any, Any]:
    """np.asarray(value) (no conversion yet), refusing complex, object and string data."""
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be an array of real numbers, got {_short(value)} ({exc})") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got an array of dtype {arr.dtype}")
    return arr


def _cast(arr: np.ndarray[Any, Any], dtype: npt.DTypeLike, **kw: Any) -> np.ndarray[Any, Any]:
    """np.array(arr, dtype, copy=True); values beyond dtype's range become inf, which the
    finiteness check then reports, rather than a RuntimeWarning from the cast."""
    with np.errstate(over="ignore"):
        return np.array(arr, dtype=dtype, copy=True, **kw)


_FINITE_CHUNK = 1 << 16   # values checked at a time (a bool temporary of 64 KiB)


def np_all_finite(arr: np.ndarray[Any, Any]) -> bool:
    """Whether every value of arr is finite (NumPy's check, chunk by chunk when arr is
    C-contiguous, so that the temporary stays small)."""
    if arr.size <= _FINITE_CHUNK or not arr.flags.c_contiguous:
        return bool(np.isfinite(arr).all())
    flat = arr.reshape(-1)
    return all(bool(np.isfinite(flat[lo:lo + _FINITE_CHUNK]).all()) for lo in range(0, flat.size, _FINITE_CHUNK))


AllFinite = Callable[[np.ndarray[Any, Any]], bool]


def _finite_or_raise(arr: np.ndarray[Any, Any], name: str, all_finite: Optional[AllFinite] = None,
                     source: Optional[np.ndarray[Any, Any]] = None, error: type[Exception] = ValueError) -> None:
    """error (ValueError) naming the first non-finite entry of arr; source is what the caller
    passed (same elements in C order, before reshape and cast), whose index and value are
    reported.  all_finite: the fast check to run first (default NumPy's)."""
    if not (all_finite or np_all_finite)(arr):
        src = arr if source is None else source
        flat = int(np.flatnonzero(~np.isfinite(arr))[0])
        where = tuple(int(i) for i in np.unravel_index(flat, src.shape))
        raise error(f"{name} must hold only finite {arr.dtype} values, got {_given(src[where])} at index {where}")


def as_parameter_list(new: object, name: str, shapes: Sequence[tuple[int, ...]], dtype: npt.DTypeLike,
                      sizes: Optional[Sequence[int]] = None) -> list[np.ndarray[Any, Any]]:
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
    for i, (value, shape) in enumerate(zip(new, shapes)):  # type: ignore[call-overload]
        arr = _as_float_array(value, f"{name}[{i}]")
        if arr.shape != tuple(shape):
            raise ValueError(f"{name}[{i}] must have shape {tuple(shape)}{match}, got shape {arr.shape}")
        src, arr = arr, _cast(arr, dtype, order="C")
        _finite_or_raise(arr, f"{name}[{i}]", source=src)
        out.append(arr)
    return out


def _overlaps(arr: np.ndarray[Any, Any], avoid: object) -> bool:
    if avoid is None:
        return False
    if isinstance(avoid, np.ndarray):
        avoid = (avoid,)
    return any(np.may_share_memory(arr, a) for a in avoid)  # type: ignore[attr-defined]


def as_rows(value: object, name: str, n_cols: int, dtype: npt.DTypeLike, *, allow_empty: bool = False,
            all_finite: AllFinite = np_all_finite, avoid: object = None) -> tuple[np.ndarray[Any, Any], bool]:
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


def as_targets(value: object, name: str, n_out: int, m: int, single: bool, dtype: npt.DTypeLike,
               **kw: Any) -> np.ndarray[Any, Any]:
    """Targets y matching m rows of input: [m, n_L], or (n_L,) when the input was one sample."""
    arr, y_single = as_rows(value, name, n_out, dtype, **kw)
    if y_single != single or arr.shape[0] != m:
        want = f"({n_out},)" if single else f"({m}, {n_out})"
        got = np.shape(cast(Any, value))
        raise ValueError(f"{name} must have shape {want} to match X, got shape {got}")
    return arr


def as_labels(value: object, name: str, m: int, n_out: int) -> np.ndarray[Any, Any]:
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


def _label_like(value: object) -> Optional[np.ndarray[Any, Any]]:
    """value as an array when it is 1-D (what a vector of class labels looks like), else None
    (including values NumPy cannot make an array of: the target checks name those)."""
    if isinstance(value, np.ndarray):
        return value if value.ndim == 1 else None
    try:
        arr = np.asarray(value)
    except Exception:
        return None
    return arr if arr.ndim == 1 else None


def as_targets_or_labels(value: object, name: str, n_out: int, m: int, single: bool, dtype: npt.DTypeLike,
                         **kw: Any) -> np.ndarray[Any, Any]:
    """What Y may be for m rows of X: target rows [m, n_L] (as_targets), or, for a network
    with more than one output unit and X of rows, integer class labels of shape (m,), each
    in [0, n_L), returned as a new int64 array (a 1-D result means labels)."""
    arr = None if single or n_out == 1 else _label_like(value)
    if arr is None:
        return as_targets(value, name, n_out, m, single, dtype, **kw)
    if arr.dtype.kind in "iu" or (arr.size == 0 and arr.dtype.kind in "bf"):
        if arr.shape != (m,):
            raise ValueError(f"{name} must have shape ({m}, {n_out}) (one target row per sample) or ({m},) "
                             f"(integer class labels) to match X, got shape {arr.shape}")
        return np.ascontiguousarray(as_labels(arr, name, m, n_out), dtype=np.int64)
    if arr.shape == (m,) and arr.dtype.kind in "bf":   # one number per row, not integers
        raise ValueError(f"{name} must have shape ({m}, {n_out}) (one target row per sample) or be integer "
                         f"class labels of shape ({m},), got an array of dtype {arr.dtype} and shape {arr.shape}")
    return as_targets(value, name, n_out, m, single, dtype, **kw)
