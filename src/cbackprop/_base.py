"""NetworkBase: the public API that cbackprop.Network (C) and cbackprop.reference.Network
(NumPy) share, on top of numerical primitives each provides.  Pure Python and NumPy: it
never imports the compiled module, so the reference stays independent of the C path."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional, TypeVar, Union, cast

import numpy.typing as npt

import numpy as np

from . import _io, _nonfinite
from ._dropout import mask_seed
from ._model import check_memory, cost_sum, draw_initial_parameters, make_rng, one_hot, skip_initial_parameters
from ._training import Epochs, Rows, make_plan, train, training_rows
from ._validation import (DEFAULT_BETAS, DEFAULT_EPS, DEFAULT_DTYPE, Array, FloatArray, Hyper, LabelArray,
                          PathLike, _as_float_array, _finite_or_raise, as_labels, as_parameter_list, as_rows,
                          as_targets, as_targets_or_labels, check, check_activations, check_cost, check_dropout,
                          check_dtype, check_init, check_sizes, check_update, np_all_finite)

#: rows x (widest layer) values per chunk of the row-wise methods (cost, total_cost,
#: evaluate, predict, predict_proba, the monitors): 2 MiB of float64 per layer
_CHUNK_VALUES = 1 << 18
#: rows x (widest layer, input included) values per backpropagation of layer_speeds: 8 MiB
#: of float64 per layer (the book's 1,000 MNIST images in one call)
_SPEED_VALUES = 1 << 20
N = TypeVar("N", bound="NetworkBase")
R = TypeVar("R")


class Trace:
    """Every quantity of BP1-BP4 for one mini-batch (rows are samples), from one call:
    z[l-1] = z^l, a[l] = a^l (a[0] is the input), delta[l-1] = delta^l ([m, n_l] each, the
    delta of the batch-average cost, i.e. including its 1/m), nabla_b[l-1], nabla_w[l-1]
    (the batch gradient, BP3/BP4 summed over the rows), cost (the batch cost C)."""

    __slots__ = ("z", "a", "delta", "nabla_b", "nabla_w", "cost")

    def __init__(self, z: list[Array], a: list[Array], delta: list[Array], nabla_b: list[Array],
                 nabla_w: list[Array], cost: float) -> None:
        self.z, self.a, self.delta = z, a, delta
        self.nabla_b, self.nabla_w, self.cost = nabla_b, nabla_w, cost

    def __repr__(self) -> str:
        shapes = [d.shape for d in self.delta]
        return f"Trace(layers={len(self.z)}, delta shapes={shapes}, cost={self.cost:.6g})"


class NetworkBase:
    """The public API on top of numerical primitives a subclass provides.

    Targets: wherever a method takes Y (backprop, cost, total_cost, trace,
    update_mini_batch, accumulate_gradient, sgd), Y is either target rows [m, n_L] or, for
    a network with more than one output unit, m integer class labels in [0, n_L), whose
    one-hot rows are built per mini-batch (per chunk of rows for cost and total_cost,
    never for a whole training set), with bitwise the result of passing those rows.
    evaluate and sgd's test_data take labels or one-hot rows alike.

    Copies: pickle, copy.deepcopy and copy.copy give an independent network in the same
    state (parameters, configuration, generator state, momentum velocity, accumulated
    gradient and its count; on the C path also the num_threads setting and the kernel
    variant), which trains on bitwise as the original would; a pickle holds save's members
    byte for byte (with the checksum, checked when unpickled) plus that state.

    Primitives, all on validated
    [m, n] arrays; h = (eta, keep, decay, mu) is one update's hyper-parameters (hyper()):
    _forward(X) -> a^L; _forward_z(X) -> (z^L, a^L); _gradient(X, Y) -> (nabla_b, nabla_w); _trace(X, Y) -> (z, a,
    delta, nabla_b, nabla_w); _step(X, Y, h); _epoch(X, T, perm, mini_batch_size, h) (T:
    target rows, or int64 class labels, 1-D); _accumulate(X, Y) (adds the summed
    gradient); _apply(h, count) (one update from it, then zeroes it); _zero_accumulated();
    _velocity(create=False) -> list of momentum arrays (empty before momentum is used;
    Adam's first moment too); _moments(create=False) -> Adam's second moment arrays;
    _counters() -> (Adam's steps, the dropout round) and _set_counters(c); _params() -> the
    arrays updates write (inputs sharing memory with them are copied).  Every primitive
    that updates calls _prepare_state(h) first.  The base class derives _state, _snapshot,
    _restore and _finite from these; a subclass may override them with faster
    equivalents."""

    _all_finite = staticmethod(np_all_finite)
    sizes: tuple[int, ...]
    num_layers: int
    dtype: np.dtype[Any]
    activations: tuple[str, ...]
    cost_name: str
    _rng: np.random.Generator
    _accumulated: int
    _weights: list[Array]
    _biases: list[Array]
    _dropout: tuple[float, ...]
    _dropout_seed: int
    _state_kind: Optional[str]

    def _configure(self, sizes: Sequence[int], dtype: npt.DTypeLike, seed: Optional[int],
                   activations: Union[str, Sequence[str]] = "sigmoid", cost: str = "quadratic",
                   init: str = "large", dropout: object = None, dropout_seed: Optional[int] = None) -> str:
        """Check and set the configuration and the generator; returns the checked init.
        Refuses (MemoryError) sizes whose parameters and gradients cannot fit in memory.
        dropout_seed: the masks' key (default: derived from seed, mask_seed)."""
        self.sizes = check_sizes(sizes)
        self.num_layers = len(self.sizes)
        self.dtype = check_dtype(dtype)
        self.activations = check_activations(activations, self.num_layers - 1)
        self.cost_name = check_cost(cost, self.activations[-1])
        init_ = check_init(init)
        self._rng = make_rng(seed)
        self._dropout = check_dropout(dropout, self.sizes)
        self._dropout_seed = mask_seed(seed) if dropout_seed is None else int(dropout_seed)
        self._state_kind = None
        self._accumulated = 0
        check_memory(self.sizes, self.dtype)
        return init_

    def _allocate(self) -> None:
        """Allocate the parameters (self._weights, self._biases, zero or uninitialised) and
        whatever else the network keeps (gradients, workspace); MemoryError naming sizes
        (allocation_error) when they cannot be."""
        raise NotImplementedError

    def _build(self, sizes: Sequence[int], dtype: npt.DTypeLike, seed: Optional[int],
               activations: Union[str, Sequence[str]], cost: str, init: str, dropout: object = None) -> None:
        """__init__: configure, allocate, draw the initial parameters in place."""
        init_ = self._configure(sizes, dtype, seed, activations, cost, init, dropout)
        self._allocate()
        draw_initial_parameters(self._rng, self._weights, self._biases, init_)

    @classmethod
    def _with_parameters(cls: type[N], sizes: Sequence[int], *, activations: Union[str, Sequence[str]], cost: str,
                         dtype: npt.DTypeLike, seed: Optional[int], weights: Sequence[npt.ArrayLike],
                         biases: Sequence[npt.ArrayLike], dropout: object = None,
                         dropout_seed: Optional[int] = None) -> N:
        """A network with the given parameters, without drawing an initialisation (load's
        path): each array is copied into the network's own, converted to its dtype layer
        by layer (no full-size temporary); TypeError or ValueError as the weights and
        biases setters for arrays of the wrong kind, shape, or values not finite in dtype.
        A seeded generator is advanced past the initial draws (in chunks, into a scratch
        buffer), so that the network shuffles as a new one with that seed."""
        net = cls.__new__(cls)
        net._configure(sizes, dtype, seed, activations, cost, dropout=dropout, dropout_seed=dropout_seed)
        net._allocate()
        net._copy_in(weights, biases)
        if seed is not None:
            skip_initial_parameters(net._rng, net.sizes)
        return net

    def _copy_in(self, weights: Sequence[npt.ArrayLike], biases: Sequence[npt.ArrayLike]) -> None:
        for name, targets, new in (("weights", self._weights, weights), ("biases", self._biases, biases)):
            if isinstance(new, np.ndarray) or not hasattr(new, "__len__") or len(new) != len(targets):
                as_parameter_list(new, name, [t.shape for t in targets], self.dtype)   # (raises)
            for i, (t, value) in enumerate(zip(targets, new)):
                arr = _as_float_array(value, f"{name}[{i}]")
                if arr.shape != t.shape:
                    raise ValueError(f"{name}[{i}] must have shape {t.shape}, got shape {arr.shape}")
                with np.errstate(over="ignore"):
                    t[...] = arr
                _finite_or_raise(t, f"{name}[{i}]", self._all_finite, source=arr)

    # ---- primitives the base class derives --------------------------------------------------
    def _forward(self, X: Array) -> Array:
        raise NotImplementedError

    def _forward_z(self, X: Array) -> tuple[Array, Array]:
        """(z^L, a^L) of the rows of X (the costs computed from z^L need both)."""
        raise NotImplementedError

    def _gradient(self, X: Array, Y: Array) -> tuple[list[Array], list[Array]]:
        raise NotImplementedError

    def _trace(self, X: Array, Y: Array) -> tuple[list[Array], list[Array], list[Array], list[Array], list[Array]]:
        raise NotImplementedError

    def _step(self, X: Array, Y: Array, h: Hyper) -> None:
        raise NotImplementedError

    def _epoch(self, X: Array, T: Array, perm: Array, mini_batch_size: int, h: Hyper) -> None:
        raise NotImplementedError

    def _velocity(self, create: bool = False) -> list[Array]:
        raise NotImplementedError

    def _accumulate(self, X: Array, Y: Array) -> None:
        raise NotImplementedError

    def _apply(self, h: Hyper, count: int) -> None:
        raise NotImplementedError

    def _zero_accumulated(self) -> None:
        raise NotImplementedError

    def _moments(self, create: bool = False) -> list[Array]:
        raise NotImplementedError

    def _counters(self) -> tuple[float, int]:
        raise NotImplementedError

    def _set_counters(self, counters: tuple[float, int]) -> None:
        raise NotImplementedError

    def _state(self, create: bool = False) -> list[Array]:
        """The arrays training changes: parameters, then the momentum velocity (created
        now when create)."""
        return self._weights + self._biases + self._velocity(create)

    def _snapshot(self, create: bool = False) -> tuple[list[Array], tuple[float, int]]:
        """Copies of everything training changes: the parameters and the optimizer's state
        (velocity, Adam's moments and steps, the dropout round)."""
        return [p.copy() for p in self._state(create) + self._moments()], self._counters()

    def _restore(self, saved: tuple[list[Array], tuple[float, int]]) -> None:
        arrays, counters = saved
        for p, s in zip(self._state() + self._moments(), arrays):
            p[...] = s
        self._set_counters(counters)

    def _finite(self) -> bool:
        """Whether every parameter is finite."""
        return all(self._all_finite(p) for p in self._weights + self._biases)

    # ---- the rule for non-finite results of calls that change the network (_nonfinite) ------
    def _guarded(self, method: str, change: Callable[[], R], X2: Optional[Array] = None,
                 Y2: Optional[Array] = None, *, state: bool = True, accumulator: bool = False) -> R:
        """change() (update_mini_batch's step, accumulate_gradient's sum, apply_gradient's
        update) under the lock, so that when it leaves a value of the arrays it may change
        (the training state when state, the accumulated gradient when accumulator or not
        state) non-finite, the network is put back as it was and FloatingPointError raised
        (_nonfinite.update_error, locating the cause in the forward and backward pass of X2,
        Y2 when given).  The arrays are saved into scratch buffers kept for the next call
        (_scratch), so that a step allocates nothing.  The kind of optimizer state is put back
        too (a step with another rule resets the state it keeps: _prepare_state), and arrays
        the change created (the first step of momentum or Adam) are zeroed, as new ones are."""
        with self._locked():
            kind = self._state_kind
            before = self._watched(state, accumulator or not state)
            saved = self._scratch(before)
            for buf, a in zip(saved, before):
                np.copyto(buf, a)
            counters = self._counters()
            with np.errstate(all="ignore"):
                result = change()
            after = self._watched(state, accumulator or not state)
            if all(self._all_finite(a) for a in after):
                return result
            what = self._what_went_bad(state)
            for i, a in enumerate(after):     # (arrays the change created: zeros, as none)
                a[...] = saved[i] if i < len(saved) else 0
            self._set_counters(counters)
            self._state_kind = kind
        hint = (f"the sum of the gradients exceeds the {self.dtype} range" if not state
                else "eta is too large for these values (a smaller eta helps)")
        raise _nonfinite.update_error(self, method, X2, Y2, what, hint)

    def _what_went_bad(self, state: bool) -> _nonfinite.Found:
        """After a change that left a non-finite value: which array holds it."""
        found = _nonfinite.first_nonfinite_parameter(self) if state else None
        if found is not None:
            return found
        if state and not all(self._all_finite(a) for a in self._state()):
            return "the optimizer state (momentum velocity)", "inf or NaN"
        return "the accumulated gradient", "inf or NaN"

    def _watched(self, state: bool, accumulator: bool) -> list[Array]:
        return ((self._state() + self._moments() if state else [])
                + (self._accumulator() if accumulator else []))

    def _scratch(self, arrays: list[Array]) -> list[Array]:
        """Buffers shaped as arrays, kept on the network and reused (new ones only when a
        shape or dtype differs from the last call's)."""
        kept: list[Array] = self.__dict__.setdefault("_scratch_buffers", [])
        if [(b.shape, b.dtype) for b in kept[:len(arrays)]] != [(a.shape, a.dtype) for a in arrays]:
            kept[:] = [np.empty_like(a) for a in arrays]
        return kept[:len(arrays)]

    # ---- parameters: lists of arrays, writable in place -----------------------------------
    @property
    def weights(self) -> list[FloatArray]:
        """[w^1, ..., w^L], w^l shaped (n_l, n_{l-1}); writing into them changes the network."""
        return list(self._weights)

    @weights.setter
    def weights(self, new: Sequence[npt.ArrayLike]) -> None:
        self._assign(self._weights, new, "weights")

    @property
    def biases(self) -> list[FloatArray]:
        """[b^1, ..., b^L], b^l shaped (n_l,); writing into them changes the network."""
        return list(self._biases)

    @biases.setter
    def biases(self, new: Sequence[npt.ArrayLike]) -> None:
        self._assign(self._biases, new, "biases")

    def _assign(self, targets: list[Array], new: object, name: str) -> None:
        converted = as_parameter_list(new, name, [t.shape for t in targets], self.dtype)
        for t, v in zip(targets, converted):
            t[...] = v

    # ---- argument helpers ---------------------------------------------------------------------
    def _params(self) -> tuple[Array, ...]:
        # Inputs that share memory with these are copied, so that an update in place cannot
        # change them mid-call (e.g. X = net.weights[0] in sgd).
        return tuple(self._weights) + tuple(self._biases)

    def _rows(self, X: object, name: str = "X", avoid: object = None, **kw: Any) -> tuple[Array, bool]:
        return as_rows(X, name, self.sizes[0], self.dtype, all_finite=self._all_finite,
                       avoid=self._params() if avoid is None else avoid, **kw)

    def _targets(self, Y: object, m: int, single: bool, **kw: Any) -> Array:
        """Y for m rows of X (single: X was one sample): target rows [m, n_L] (or one
        target (n_L,)), or, for rows of X and n_L > 1, integer class labels (m,), returned
        as int64 (1-D)."""
        return as_targets_or_labels(Y, "Y", self.sizes[-1], m, single, self.dtype,
                                    all_finite=self._all_finite, avoid=self._params(), **kw)

    def _xt(self, X: object, Y: object) -> tuple[Array, Array, bool]:
        """(X2, T, single): X as rows, and T, Y's target rows or class labels."""
        X2, single = self._rows(X, "X")
        return X2, self._targets(Y, X2.shape[0], single), single

    def _xy(self, X: object, Y: object) -> tuple[Array, Array, bool]:
        """(X2, Y2, single): X as rows and Y as target rows [m, n_L] (one-hot rows built
        from labels, for one mini-batch)."""
        X2, T, single = self._xt(X, Y)
        return X2, (one_hot(T, self.sizes[-1], self.dtype) if T.ndim == 1 and not single else T), single

    def _labels(self, value: object, name: str, m: int) -> Array:
        """Class labels of m rows: integer labels (m,) in [0, n_L), or the argmax of each
        of m one-hot (target) rows [m, n_L]."""
        try:
            shape = np.shape(cast(Any, value))
        except ValueError:       # (ragged: as_labels names it)
            shape = ()
        if shape == (m, self.sizes[-1]):
            Y = as_targets(value, name, self.sizes[-1], m, False, self.dtype, all_finite=self._all_finite,
                           allow_empty=True)
            return np.argmax(Y, axis=1) if m else np.zeros(0, dtype=np.intp)
        return as_labels(value, name, m, self.sizes[-1])

    # ---- public API -----------------------------------------------------------------------------
    def __repr__(self) -> str:
        extra = ""
        if self.activations != ("sigmoid",) * (self.num_layers - 1):
            extra += f", activations={list(self.activations)}"
        if self.cost_name != "quadratic":
            extra += f", cost={self.cost_name!r}"
        if any(self._dropout):
            extra += f", dropout={list(self._dropout)}"
        return (f"{type(self).__module__}.{type(self).__name__}(sizes={list(self.sizes)}{extra}, "
                f"dtype={self.dtype.name})")

    def feedforward(self, X: npt.ArrayLike) -> FloatArray:
        """a^L for X of shape (m, n_0) -> (m, n_L), or one sample (n_0,) -> (n_L,).
        Computed a chunk of rows at a time (as predict, predict_proba and cost, which give
        the same values)."""
        X2, single = self._rows(X, allow_empty=True)
        out = self._forward_all(X2, "feedforward")
        return out[0] if single else out

    def _forward_all(self, X2: Array, method: str) -> Array:
        """a^L of every row of X2, chunk by chunk (_chunks); FloatingPointError (method's)
        when a value is not finite."""
        if X2.shape[0] <= self._chunk_rows():
            with np.errstate(all="ignore"):
                out = self._forward(X2)
            self._check_outputs(method, X2, out)
            return out
        out = np.empty((X2.shape[0], self.sizes[-1]), dtype=self.dtype)
        for lo, hi, A, _ in self._chunks(X2, method):
            out[lo:hi] = A
        return out

    def _check_outputs(self, method: str, X2: Array, *outputs: Array, first_row: int = 0) -> None:
        """FloatingPointError (_nonfinite.output_error) unless every value of the outputs
        ([m, n_L] each, of the rows X2, numbered from first_row) is finite."""
        for out in outputs:
            if not self._all_finite(out):
                raise _nonfinite.output_error(self, method, X2, np.asarray(~np.isfinite(out).all(axis=1)), first_row)

    def backprop(self, X: npt.ArrayLike, Y: npt.ArrayLike) -> tuple[list[FloatArray], list[FloatArray]]:
        """(nabla_b, nabla_w): the gradient of the network's cost C (the average of the
        per-sample costs over the m rows of X, Y), shaped like biases and weights (new
        arrays).  A gradient being accumulated (accumulate_gradient) is not affected."""
        X2, Y2, _ = self._xy(X, Y)
        with np.errstate(all="ignore"):
            nabla_b, nabla_w = self._gradient(X2, Y2)
        if not all(self._all_finite(g) for g in nabla_b + nabla_w):
            raise _nonfinite.gradient_error(self, "backprop", X2, Y2)
        return nabla_b, nabla_w

    def cost(self, X: npt.ArrayLike, Y: npt.ArrayLike) -> float:
        """The network's cost C = 1/m sum_x C_x over the m rows of X, Y (a float; for the
        quadratic cost C = 1/(2m) sum_x ||y(x) - a^L(x)||^2)."""
        X2, T, _ = self._xt(X, Y)
        return self._sums(Rows(X2, T, self.sizes[-1]), True, False, "cost")[0] / int(X2.shape[0])

    def total_cost(self, X: npt.ArrayLike, Y: npt.ArrayLike, lmbda: float = 0.0) -> float:
        """network2.py's total_cost: the cost over the rows of X, Y plus the L2 term
        lmbda / (2 n) sum_w w^2 with n = the number of rows (eq. (85))."""
        lmbda_ = check("lmbda", lmbda)
        X2, T, _ = self._xt(X, Y)
        n = int(X2.shape[0])
        return self._sums(Rows(X2, T, self.sizes[-1]), True, False, "total_cost")[0] / n + self._l2_term(lmbda_, n)

    def _l2_term(self, lmbda: float, n: int) -> float:
        """total_cost's L2 term lmbda / (2 n) sum_w w^2 (eq. (85)); 0.0 when lmbda is 0."""
        if not lmbda:
            return 0.0
        return 0.5 * (lmbda / n) * sum(float(np.einsum("ij,ij->", w, w, dtype=np.float64))
                                       for w in self._weights)

    def _chunk_rows(self) -> int:
        return max(1, _CHUNK_VALUES // max(self.sizes[1:]))

    def _chunks(self, X2: Array, method: str, with_z: bool = False
                ) -> Iterator[tuple[int, int, Array, Optional[Array]]]:
        """(lo, hi, a^L, z^L (with_z, else None)) of rows lo:hi for consecutive chunks of the
        rows of X2, each small enough that its activations (and one-hot targets) take at
        most about 2 MiB per layer (1 MiB with_z: the costs from z^L hold a few more arrays of
        the chunk's outputs); FloatingPointError (method's) when a value is not finite."""
        step = max(1, self._chunk_rows() // (2 if with_z else 1))
        for lo in range(0, X2.shape[0], step):
            hi = min(X2.shape[0], lo + step)
            with np.errstate(all="ignore"):
                Z, A = self._forward_z(X2[lo:hi]) if with_z else (None, self._forward(X2[lo:hi]))
            self._check_outputs(method, X2[lo:hi], A, *(() if Z is None else (Z,)), first_row=lo)
            yield lo, hi, A, Z

    def _sums(self, data: Rows, cost: bool, accuracy: bool,
              method: str = "sgd (measuring the epoch)") -> tuple[float, int]:
        """(sum_x C_x when cost, how many rows the network classifies as their label (argmax
        of a^L) when accuracy) over the rows of data, from one feedforward per chunk of
        rows (one-hot targets of labels are built per chunk); the cross-entropy and
        log-likelihood costs from z^L (cost_sum).  FloatingPointError (method's) when a
        value is not finite."""
        s, correct = 0.0, 0
        with_z = cost and self.cost_name != "quadratic"
        for lo, hi, A, Z in self._chunks(data.X, method, with_z):
            if cost:
                c = cost_sum(self.cost_name, Z, A, data.targets(lo, hi))
                s = c if lo == 0 else s + c
            if accuracy:
                correct += int(np.count_nonzero(np.argmax(A, axis=1) == data.labels[lo:hi]))
        if cost and not np.isfinite(s):
            raise _nonfinite.cost_error(method, s)
        return s, correct

    def trace(self, X: npt.ArrayLike, Y: npt.ArrayLike) -> Trace:
        """Every quantity of BP1-BP4 for the mini-batch X, Y from one backpropagation:
        a Trace with lists z, a (a^0 = X first), delta, nabla_b, nabla_w and the cost."""
        X2, Y2, _ = self._xy(X, Y)
        with np.errstate(all="ignore"):
            z, a, delta, nabla_b, nabla_w = self._trace(X2, Y2)
        if not all(self._all_finite(v) for v in z + a[1:] + delta + nabla_b + nabla_w):
            raise _nonfinite.gradient_error(self, "trace", X2, Y2)
        if np.may_share_memory(a[0], X):
            a = [a[0].copy()] + a[1:]        # never hand back the caller's own array
        cost = cost_sum(self.cost_name, z[-1], a[-1], Y2) / X2.shape[0]
        if not np.isfinite(cost):
            raise _nonfinite.cost_error("trace", cost)
        return Trace(z, a, delta, nabla_b, nabla_w, cost)

    def update_mini_batch(self, X: npt.ArrayLike, Y: npt.ArrayLike, eta: float, *, lmbda: float = 0.0,
                          n: Optional[int] = None, mu: float = 0.0, optimizer: str = "sgd",
                          betas: tuple[float, float] = DEFAULT_BETAS, eps: float = DEFAULT_EPS) -> None:
        """One gradient-descent step on the mini-batch X, Y with the gradient averaged over
        its rows: w <- (1 - eta lmbda / n) w - eta nabla_w, b <- b - eta nabla_b (network2.py,
        n the training-set size, needed when lmbda > 0); with momentum mu > 0,
        v <- mu v - eta nabla - (eta lmbda / n) w, w <- w + v (biases: no decay term).
        optimizer="nesterov" (with mu > 0) or "adam" (with betas, eps) choose another rule
        (see sgd).  With dropout, the step drops units of the hidden layers."""
        h = check_update(eta, lmbda, n, mu, self.dtype, optimizer, betas, eps)
        X2, Y2, _ = self._xy(X, Y)
        self._guarded("update_mini_batch", lambda: self._step(X2, Y2, h), X2, Y2)

    # ---- gradient accumulation ------------------------------------------------------------------
    @property
    def accumulated(self) -> int:
        """How many samples the gradient being accumulated holds (0: none)."""
        return self._accumulated

    def accumulate_gradient(self, X: npt.ArrayLike, Y: npt.ArrayLike) -> None:
        """Add the gradient of the rows of X, Y to the network's gradient buffer (the sum
        of their per-sample gradients, so that micro-batches of any sizes add up to their
        union); apply_gradient then takes one step with the average."""
        X2, Y2, _ = self._xy(X, Y)
        self._guarded("accumulate_gradient", lambda: self._accumulate(X2, Y2), X2, Y2, state=False)
        self._accumulated += X2.shape[0]

    def apply_gradient(self, eta: float, *, lmbda: float = 0.0, n: Optional[int] = None, mu: float = 0.0,
                       samples: Optional[int] = None, optimizer: str = "sgd",
                       betas: tuple[float, float] = DEFAULT_BETAS, eps: float = DEFAULT_EPS) -> None:
        """One update_mini_batch step with the gradient accumulated since the last
        apply_gradient or zero_gradient, averaged over its samples; then starts afresh.
        Accumulating micro-batches and applying equals update_mini_batch on their union.
        samples: the number of samples the gradient buffer sums over, when it was filled
        elsewhere too (e.g. summed over MPI ranks); default: the samples accumulated here.
        optimizer, betas, eps: the update rule, as for sgd.  (The accumulated gradient is
        backprop's: no dropout.)"""
        if samples is None:
            if self._accumulated == 0:
                raise ValueError("apply_gradient needs an accumulated gradient: call accumulate_gradient(X, Y) "
                                 "first (accumulated = 0)")
            count = self._accumulated
        else:
            count = check("samples", samples)
        h = check_update(eta, lmbda, n, mu, self.dtype, optimizer, betas, eps)
        self._guarded("apply_gradient", lambda: self._apply(h, count), accumulator=True)
        self._accumulated = 0

    def zero_gradient(self) -> None:
        """Discard the gradient being accumulated."""
        self._zero_accumulated()
        self._accumulated = 0

    # ---- saving and loading -----------------------------------------------------------------------
    def save(self, path: PathLike) -> None:
        """Write the network to path: a versioned .npz (never pickle) with sizes,
        activations, cost, dtype, every weight and bias, and a checksum.  It is written to a
        temporary file in the same directory and renamed onto path, so an existing file is
        replaced whole or not at all.  The optimiser state (momentum velocity, an
        accumulated gradient) is not saved.  path is used exactly as given."""
        _io.save_npz(path, sizes=self.sizes, activations=self.activations, cost=self.cost_name,
                     dtype=self.dtype, weights=self._weights, biases=self._biases)

    def save_network2(self, path: PathLike) -> None:
        """Write network2.py's JSON format (sizes, weights, biases as column vectors, cost
        "QuadraticCost" or "CrossEntropyCost"), atomically; network2 knows only sigmoid
        layers and those two costs, so other networks are refused with ValueError."""
        _io.save_network2_json(path, sizes=self.sizes, cost=self.cost_name, weights=self._weights,
                               biases=self._biases, activations=self.activations)

    @classmethod
    def load(cls: type[N], path: PathLike, *, dtype: Optional[npt.DTypeLike] = None, seed: Optional[int] = None,
             dropout: object = None) -> N:
        """A network from a file written by save(); dtype None keeps the saved one (else the
        parameters are converted).  seed seeds the new network's generator (its shuffles)
        and dropout masks; dropout as for Network (a training setting, not saved).
        Corrupt, truncated or inconsistent files raise ValueError naming the problem."""
        built: list[N] = []

        def into(config: dict[str, Any]) -> tuple[list[Array], list[Array]]:
            # once the whole file has passed its checks: the network, without drawing an
            # initialisation; load_npz reads the parameters straight into its arrays (in
            # chunks, converted to its dtype), so that loading takes the network's memory
            # and a chunk, not a second copy of the parameters
            net = cls.__new__(cls)
            net._configure(config["sizes"], config["dtype"] if dtype is None else dtype, seed,
                           config["activations"], config["cost"], dropout=dropout)
            net._allocate()
            built.append(net)
            return net._weights, net._biases

        _io.load_npz(path, into=into)
        net = built[0]
        if seed is not None:
            skip_initial_parameters(net._rng, net.sizes)
        return net

    @classmethod
    def load_network2(cls: type[N], path: PathLike, *, dtype: npt.DTypeLike = DEFAULT_DTYPE,
                      seed: Optional[int] = None) -> N:
        """A sigmoid network from network2.py's JSON (Network.save(filename) in the book's
        code), with its cost; ValueError for malformed files."""
        d = _io.load_network2_json(path)
        return cls._with_parameters(d["sizes"], activations="sigmoid", cost=d["cost"], dtype=dtype, seed=seed,
                                    weights=d["weights"], biases=d["biases"])

    # ---- evaluation and training ------------------------------------------------------------------
    def evaluate(self, X: npt.ArrayLike, labels: npt.ArrayLike) -> int:
        """How many rows of X the network classifies as labels (argmax of a^L)."""
        X2, _ = self._rows(X, allow_empty=True)
        return self._sums(Rows(X2, self._labels(labels, "labels", X2.shape[0]), self.sizes[-1]), False, True,
                          "evaluate")[1]

    def predict(self, X: npt.ArrayLike) -> Union[LabelArray, int]:
        """The class of each row of X: the output neuron with the largest activation
        (argmax of a^L, what evaluate counts), as an int64 array (m,), or an int for one
        sample (n_0,).  Computed a chunk of rows at a time.  Needs at least two output
        neurons (one per class)."""
        X2, single = self._rows(X, allow_empty=True)
        if self.sizes[-1] < 2:
            raise ValueError(f"predict needs a network with at least 2 output neurons (one per class), got "
                             f"sizes {list(self.sizes)}; feedforward(X) gives a^L")
        out = np.empty(X2.shape[0], dtype=np.int64)
        for lo, hi, A, _ in self._chunks(X2, "predict"):
            out[lo:hi] = np.argmax(A, axis=1)
        return int(out[0]) if single else out

    def predict_proba(self, X: npt.ArrayLike) -> FloatArray:
        """The probability of each class for each row of X, for a network with a softmax
        output layer, whose activations a^L are a probability distribution (eqs. (78)-(79):
        positive, each row sums to 1): a^L, [m, n_L], or (n_L,) for one sample; computed a
        chunk of rows at a time.  Other output layers (sigmoid, ...) give no distribution:
        ValueError (feedforward(X) gives their a^L)."""
        if self.activations[-1] != "softmax":
            raise ValueError(f"predict_proba needs a softmax output layer (activations ending in 'softmax', "
                             f"whose a^L rows sum to 1), got output activation {self.activations[-1]!r}; "
                             f"feedforward(X) gives a^L")
        X2, single = self._rows(X, allow_empty=True)
        out = self._forward_all(X2, "predict_proba")
        return out[0] if single else out

    # ---- copies and pickles -----------------------------------------------------------------------
    def _locked(self) -> contextlib.AbstractContextManager[Any]:
        """A context that keeps other threads' calls out (the C path's engine lock)."""
        return contextlib.nullcontext()

    def _accumulator(self, create: bool = False) -> list[Array]:
        """The arrays accumulate_gradient adds to (empty before they exist)."""
        raise NotImplementedError

    def _copy_state(self, copy: bool, checksum: bool) -> dict[str, Any]:
        """Everything a copy needs: save's members (the same arrays, names and values, with
        the checksum when checksum), then the generator state, the momentum velocity, the
        accumulated gradient and its sample count (_extra_state).  copy: new arrays, else
        the network's own (for a copy made under the lock)."""
        take = _copied if copy else _same
        state: dict[str, Any] = {
            "format": np.array(_io.FORMAT, dtype=str), "version": np.array(_io.VERSION, dtype=np.int64),
            "sizes": np.array(self.sizes, dtype=np.int64), "activations": np.array(self.activations, dtype=str),
            "cost": np.array(self.cost_name, dtype=str), "dtype": np.array(self.dtype.name, dtype=str)}
        if checksum:
            state["checksum"] = np.array(_io.checksum(
                sizes=self.sizes, activations=self.activations, cost=self.cost_name, dtype=self.dtype,
                weights=self._weights, biases=self._biases), dtype=str)
        for i, (w, b) in enumerate(zip(self._weights, self._biases)):
            state[f"weights_{i}"], state[f"biases_{i}"] = take(w), take(b)
        state.update(self._extra_state(take))
        return state

    def _extra_state(self, take: Callable[[Array], Array]) -> dict[str, Any]:
        v, acc, m2 = self._velocity(), self._accumulator(), self._moments()
        steps, round_ = self._counters()
        return {"rng": self._rng.bit_generator.state, "velocity": [take(a) for a in v] if v else None,
                "accumulator": [take(a) for a in acc] if acc else None, "accumulated": self._accumulated,
                "moment2": [take(a) for a in m2] if m2 else None, "adam_steps": steps, "dropout_round": round_,
                "state_kind": self._state_kind, "dropout": list(self._dropout), "dropout_seed": self._dropout_seed}

    def _set_extra_state(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state["rng"]
        for name, arrays in (("velocity", self._velocity), ("accumulator", self._accumulator),
                             ("moment2", self._moments)):
            if state.get(name) is not None:
                for a, saved in zip(arrays(True), state[name]):
                    a[...] = saved
        self._accumulated = int(state["accumulated"])
        self._set_counters((float(state.get("adam_steps", 0.0)), int(state.get("dropout_round", 0))))
        self._state_kind = state.get("state_kind")

    def __reduce__(self) -> tuple[Any, ...]:
        """pickle: the network as save writes it (the same members and bytes, with the
        checksum) plus the generator state, the optimizer's state (momentum velocity, Adam's
        moments and steps), the dropout rates, masks' seed and round, the accumulated
        gradient and its count (and the C path's num_threads setting and kernels)."""
        with self._locked():
            return (_restore, (type(self), self._copy_state(copy=True, checksum=True)))

    def __deepcopy__(self: N, memo: dict[int, Any]) -> N:
        """An independent network in the same state (see __reduce__)."""
        with self._locked():
            return _restore(type(self), self._copy_state(copy=False, checksum=False))

    def __copy__(self: N) -> N:
        """copy.copy(net) is an independent copy too (as copy.deepcopy): a network shares
        no parameters, buffers or generator with another."""
        return self.__deepcopy__({})

    def sgd(self, X: npt.ArrayLike, Y: npt.ArrayLike, epochs: int, mini_batch_size: int, eta: float,
            test_data: Optional[tuple[npt.ArrayLike, npt.ArrayLike]] = None, *, lmbda: float = 0.0,
            mu: float = 0.0, evaluation_data: Optional[tuple[npt.ArrayLike, npt.ArrayLike]] = None,
            monitor_evaluation_cost: bool = False, monitor_evaluation_accuracy: bool = False,
            monitor_training_cost: bool = False, monitor_training_accuracy: bool = False,
            early_stopping_n: Optional[int] = None, eta_schedule_n: Optional[int] = None,
            callback: Optional[Callable[[dict[str, Any]], object]] = None, optimizer: str = "sgd",
            betas: tuple[float, float] = DEFAULT_BETAS, eps: float = DEFAULT_EPS,
            monitor_layer_speeds: bool = False) -> list[dict[str, Any]]:
        """Mini-batch stochastic gradient descent, as network.py's SGD and network2.py's.

        Each epoch shuffles the rows with the network's own generator, then runs
        update_mini_batch on consecutive slices of mini_batch_size rows (the last may be
        shorter), with L2 weight decay lmbda (n = len(X)) and momentum mu.  Returns one dict
        per epoch: "epoch" (1-based), "seconds", "eta"; with test_data=(X_test, labels)
        "test_correct", "test_total", "test_accuracy"; with the monitor_* flags (network2's)
        "training_cost", "training_accuracy", "evaluation_cost", "evaluation_accuracy"
        (costs as total_cost with lmbda, accuracies as fractions; evaluation_data is
        (X, labels) or (X, Y)); with monitor_layer_speeds "layer_speeds", layer_speeds(X, Y)
        after the epoch (chapter 5).

        optimizer: the update rule.  "sgd" (default): network2's, with momentum when mu > 0;
        "nesterov": Nesterov momentum mu > 0 (PyTorch's SGD(nesterov=True), scikit-learn's
        nesterovs_momentum), in the book's velocity convention v <- mu v - eta nabla -
        (eta lmbda / n) w, w <- w + mu v - eta nabla - (eta lmbda / n) w; "adam": Adam
        (PyTorch's, bias-corrected moments, betas = (beta1, beta2), eps, mu = 0) on the
        gradient plus the L2 term (lmbda / n) w.  Momentum and Adam keep their state across
        calls; switching between momentum and Adam starts the new rule's state from zero.

        early_stopping_n=k stops after k epochs in a row without a new best evaluation
        accuracy; eta_schedule_n=k halves eta after k such epochs and stops once eta has
        fallen to eta/128 (chapter 3).  Both need evaluation_data; the last record then has
        "stop_reason".  callback(record), if given, is called after each epoch.

        If a mini-batch makes any parameter non-finite (eta far too large), sgd raises
        FloatingPointError naming the epoch and mini-batch, with the parameters as they
        were before that mini-batch and the finished epochs in the error's ``history``.
        A KeyboardInterrupt during an epoch leaves the parameters after a whole number of
        mini-batches (or, if they are not finite, as after a divergence) and carries the
        finished epochs' records in ``history`` too.
        """
        data = training_rows(self, X, Y)
        flags = {"monitor_evaluation_cost": monitor_evaluation_cost,
                 "monitor_evaluation_accuracy": monitor_evaluation_accuracy,
                 "monitor_training_cost": monitor_training_cost,
                 "monitor_training_accuracy": monitor_training_accuracy,
                 "monitor_layer_speeds": monitor_layer_speeds}
        plan = make_plan(self, data, epochs, mini_batch_size, eta, test_data, lmbda, mu, evaluation_data,
                         flags, early_stopping_n, eta_schedule_n, callback, optimizer=optimizer, betas=betas,
                         eps=eps)
        plan.finish(*plan.local_counts())
        return train(self, plan, Epochs(self, plan))

    # ---- dropout, the optimizer's state, the speed of learning ------------------------------------
    @property
    def dropout(self) -> tuple[float, ...]:
        """The dropout rate p_l of each hidden layer l = 1 .. L-1 (chapter 3, "Dropout";
        inverted dropout): in update_mini_batch and sgd each unit of hidden layer l is dropped
        with probability p_l and the kept ones are scaled by 1 / (1 - p_l); feedforward,
        backprop, cost, evaluate and predict never drop.  Set when the network is made."""
        return self._dropout

    @property
    def dropout_seed(self) -> int:
        """The 64-bit key of the dropout masks (Philox4x32-10, see cbackprop._dropout):
        derived from the network's seed (np.random.SeedSequence(seed,
        spawn_key=(0x64726F70,)), a stream independent of the initialisation and shuffles),
        drawn afresh for seed=None; copies and pickles keep it."""
        return self._dropout_seed

    def _prepare_state(self, h: Hyper) -> None:
        """Before an update with h: the state its rule keeps (velocity; Adam's moments),
        created now, and reset to zero when the last rule with a state was another kind
        (momentum and Nesterov share the velocity; Adam's moments are not a velocity)."""
        opt = h[4]
        kind = "adam" if opt and opt[0] == "adam" else "momentum" if h[3] or opt else None
        if kind is None:
            return
        velocity, moments = self._velocity(True), self._moments(kind == "adam")
        if self._state_kind not in (None, kind):
            for a in velocity + moments:
                a.fill(0)
            self._set_counters((0.0, self._counters()[1]))
        self._state_kind = kind

    def layer_speeds(self, X: npt.ArrayLike, Y: npt.ArrayLike) -> list[float]:
        """The speed of learning of each hidden layer (chapter 5, "The vanishing gradient
        problem"): ||delta^l|| for l = 1 .. L-1, where delta^l_j = dC/db^l_j is the gradient
        of the cost C averaged over the rows of X, Y (the book's "gradient", BP3), from one
        backpropagation over the rows (in chunks of rows for large X); float64 norms.  No
        dropout, as backprop."""
        X2, T, _ = self._xt(X, Y)
        return self._layer_speeds(Rows(X2, T, self.sizes[-1]), lambda s: s)

    def _layer_speeds(self, data: Rows, total: Callable[[tuple[Any, ...]], tuple[Any, ...]],
                      n: Optional[int] = None) -> list[float]:
        """layer_speeds over the rows of data; total adds the per-layer sums of nabla_b
        over processes (sgd's monitor), n the total number of rows."""
        step = max(1, _SPEED_VALUES // max(self.sizes))
        sums = [np.zeros(k, dtype=np.float64) for k in self.sizes[1:-1]]
        for lo in range(0, data.m, step):
            hi = min(data.m, lo + step)
            nabla_b, _ = self._gradient(data.X[lo:hi], data.targets(lo, hi))
            for s, b in zip(sums, nabla_b):
                s += (hi - lo) * np.asarray(b, dtype=np.float64)
        count = data.m if n is None else n
        return [float(np.linalg.norm(s / count)) if count else float("nan") for s in total(tuple(sums))]


def _copied(a: Array) -> Array:
    return a.copy()


def _same(a: Array) -> Array:
    return a


def _restore(cls: type[N], state: dict[str, Any]) -> N:
    """The network of _copy_state's state (pickle's reconstructor)."""
    L = len(state["sizes"]) - 1
    sizes = tuple(int(n) for n in state["sizes"])
    activations = tuple(str(a) for a in state["activations"])
    cost, dtype = str(state["cost"]), str(state["dtype"])
    weights = [state[f"weights_{i}"] for i in range(L)]
    biases = [state[f"biases_{i}"] for i in range(L)]
    if "checksum" in state and str(state["checksum"]) != _io.checksum(
            sizes=sizes, activations=activations, cost=cost, dtype=dtype, weights=weights, biases=biases):
        raise ValueError("the pickled network's checksum does not match its parameters (corrupt data)")
    net = cls._with_parameters(sizes, activations=activations, cost=cost, dtype=dtype, seed=None, weights=weights,
                               biases=biases, dropout=state.get("dropout"), dropout_seed=state.get("dropout_seed"))
    net._set_extra_state(state)
    return net
