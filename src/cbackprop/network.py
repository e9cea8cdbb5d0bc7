"""cbackprop.Network: the C path.  Validation happens here, once; the numerics run in the
C kernels (csrc/) through the Cython engine (_core.pyx) with the GIL released."""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import numpy as np
import numpy.typing as npt

from . import _core
from ._base import NetworkBase
from ._model import allocation_error, blob_views
from ._nonfinite import first_nonfinite_parameter, update_error
from ._validation import ACTIVATIONS, COSTS, DEFAULT_BETAS, DEFAULT_DTYPE, DEFAULT_EPS, Array, FloatArray, Hyper

_FORWARD_CHUNK = 1024  # rows per C forward call in feedforward/evaluate on large inputs


class Network(NetworkBase):
    """A fully-connected feedforward network trained by backpropagation (book chapters 2
    and 3); by default sigmoid neurons and the quadratic cost, as network.py.

    Parameters
    ----------
    sizes : sequence of int
        [n_0, ..., n_L], neurons per layer; at least two layers, each at least 1.
    activations : str or sequence of str, keyword-only, default "sigmoid"
        One of "sigmoid", "tanh", "relu", "identity", "softmax" for every layer, or a list
        with one per layer after the input; softmax only for the output layer.
    cost : str, keyword-only, default "quadratic"
        "quadratic"; "cross-entropy" (needs a sigmoid output layer); "log-likelihood"
        (needs a softmax output layer).
    init : str, keyword-only, default "large"
        "large": every parameter N(0, 1), as network.py; "default": weights N(0, 1/n_in),
        biases N(0, 1), as network2.py's default_weight_initializer.
    dtype : float32 or float64, keyword-only, default float64
        float64 is the default because it is what network.py computes in and what
        finite-difference checks need; float32 halves memory traffic and is faster.
    seed : int >= 0 or None, keyword-only
        Seeds the network's own generator (np.random.default_rng), used for the N(0, 1)
        initialisation and for the shuffles of sgd, and the dropout masks (dropout_seed).
        cbackprop.reference.Network with the same seed draws the same parameters, shuffles
        and masks.
    dropout : float or sequence of float, keyword-only, default None
        Dropout (chapter 3): the probability p in [0, 1) that update_mini_batch and sgd drop
        a unit of a hidden layer, for every hidden layer or one per hidden layer; the kept
        units are scaled by 1 / (1 - p) (inverted dropout), so that feedforward, evaluate
        and predict use the whole network unchanged.  None or 0: no dropout.

    Attributes ``weights`` and ``biases`` are lists of writable views into one contiguous
    parameter buffer: ``net.weights[0][...] = w`` changes the network.  Calls on one network
    from several threads are serialised by a lock; different networks run in parallel.
    """

    _all_finite = staticmethod(_core.all_finite)

    def __init__(self, sizes: Sequence[int], *, activations: Union[str, Sequence[str]] = "sigmoid",
                 cost: str = "quadratic", init: str = "large", dtype: npt.DTypeLike = DEFAULT_DTYPE,
                 seed: Optional[int] = None, dropout: Union[None, float, Sequence[float]] = None) -> None:
        self._build(sizes, dtype, seed, activations, cost, init, dropout)

    def _allocate(self) -> None:
        rates = [0.0, *self._dropout, 0.0] if any(self._dropout) else None
        try:
            self._engine = _core.Engine(self.sizes, self.dtype,
                                        [ACTIVATIONS.index(a) for a in self.activations],
                                        COSTS.index(self.cost_name), dropout=rates, seed=self._dropout_seed)
        except (MemoryError, ValueError) as exc:
            raise allocation_error(self.sizes, self.dtype, exc) from None
        self._weights, self._biases = blob_views(self._engine.params, self.sizes)
        self._nabla_w, self._nabla_b = blob_views(self._engine.grads, self.sizes)

    @property
    def _lock(self) -> threading.RLock:
        # (the engine's: a forked child gives the engine a new one)
        return self._engine.lock

    @property
    def kernels(self) -> str:
        """The C kernel variant this network runs: "avx512", "avx2", "generic" (baseline
        SIMD) or "plain" (the oracle loops), picked at run time for this CPU; the
        environment variable CBACKPROP_KERNELS overrides the choice for new networks."""
        return self._engine.kernels

    @property
    def num_threads(self) -> int:
        """Threads each epoch of sgd may run on; other calls run on the calling thread.  The
        result is bitwise the same for any value.  By default (unless CBACKPROP_NUM_THREADS
        is set) it is automatic, and reads as the usable cores: a network with one hidden
        layer wide enough to share trains with its hidden units split between the cores
        from 1e6 flops per mini-batch (forward, BP2 and BP4: e.g. [784, 100, 10] at
        mini-batch 10), other networks on every core from 2e7 flops (e.g. [784, 256, 256,
        10] at mini-batch 32), and smaller ones on one thread with a second gathering the
        next mini-batch (the threads guide has the details).  Setting it (or
        CBACKPROP_NUM_THREADS) to k uses at most k threads in every epoch; 1 trains on the
        calling thread alone."""
        return self._engine.num_threads

    @num_threads.setter
    def num_threads(self, n: int) -> None:
        self._engine.num_threads = n        # TypeError / ValueError naming num_threads

    def update_mini_batch(self, X: npt.ArrayLike, Y: npt.ArrayLike, eta: float, *, lmbda: float = 0.0,
                          n: Optional[int] = None, mu: float = 0.0, optimizer: str = "sgd",
                          betas: tuple[float, float] = DEFAULT_BETAS, eps: float = DEFAULT_EPS) -> None:
        """One gradient-descent step on the mini-batch X, Y with the gradient averaged over
        its rows: w <- (1 - eta lmbda / n) w - eta nabla_w, b <- b - eta nabla_b (network2.py,
        n the training-set size, needed when lmbda > 0); with momentum mu > 0,
        v <- mu v - eta nabla - (eta lmbda / n) w, w <- w + v (biases: no decay term).
        optimizer="nesterov" (with mu > 0) or "adam" (with betas, eps) choose another rule
        (see sgd).  With dropout, the step drops units of the hidden layers."""
        # Fast path for the common case (contiguous arrays of the network's dtype, a float
        # eta, plain SGD without decay); anything else goes through the general checks.
        if (type(lmbda) is not float or lmbda != 0.0 or type(mu) is not float or mu != 0.0
                or n is not None or type(optimizer) is not str or optimizer != "sgd"
                or not self._fast_step(X, Y, eta)):
            super().update_mini_batch(X, Y, eta, lmbda=lmbda, n=n, mu=mu, optimizer=optimizer, betas=betas,
                                      eps=eps)

    def _fast_step(self, X: object, Y: object, eta: object) -> bool:
        """The engine's try_step (no momentum: only the parameters and the dropout round
        change) under _guarded's rule, without its generality: the step saves each parameter
        into the gradient blob as it updates it, and the parameters are put back from there,
        with FloatingPointError, when the step leaves one non-finite.  False when try_step
        does not apply."""
        e = self._engine
        with e.lock:
            round_ = e.dropout_round
            done = e.try_step(X, Y, eta)
            if done != 2:
                return done == 1
            what = first_nonfinite_parameter(self)
            np.copyto(e.params, e.grads)
            e.dropout_round = round_
        raise update_error(self, "update_mini_batch", X, Y, what,  # type: ignore[arg-type]
                           "eta is too large for these values (a smaller eta helps)")

    def _params(self) -> tuple[Array, ...]:
        # What updates and accumulate_gradient write (the parameter blob, the accumulated
        # gradient, the momentum velocity): inputs that share memory with them are copied.
        e = self._engine
        return tuple(a for a in (e.params, e.accum, e.velocity) if a is not None)

    def _forward(self, X: Array) -> Array:
        m = X.shape[0]
        if m == 0:
            return np.empty((0, self.sizes[-1]), dtype=self.dtype)
        with self._lock:
            # The workspace holds one mini-batch once the network has trained; before
            # that, up to _FORWARD_CHUNK rows.  C runs through X that many rows at a time.
            if self._engine.m_cap == 0:
                self._engine.reserve(min(m, _FORWARD_CHUNK))
            return self._engine.predict(X)

    def _forward_z(self, X: Array) -> tuple[Array, Array]:
        if X.shape[0] == 0:
            return (np.empty((0, self.sizes[-1]), dtype=self.dtype),) * 2
        with self._lock:
            if self._engine.m_cap == 0:
                self._engine.reserve(min(X.shape[0], _FORWARD_CHUNK))
            return self._engine.predict_z(X)

    def _gradient(self, X: Array, Y: Array) -> tuple[list[Array], list[Array]]:
        with self._lock:
            self._engine.reserve(X.shape[0])
            self._engine.backprop(X, Y, 1.0 / X.shape[0])
            return [b.copy() for b in self._nabla_b], [w.copy() for w in self._nabla_w]

    def _trace(self, X: Array, Y: Array) -> tuple[list[Array], list[Array], list[Array], list[Array], list[Array]]:
        m = X.shape[0]
        with self._lock:
            self._engine.reserve(m)
            self._engine.backprop(X, Y, 1.0 / m)
            zs, as_, ds = self._engine.layer_views(m)
            return ([z.copy() for z in zs], [X] + [a.copy() for a in as_[1:]],
                    [d.copy() for d in ds], [b.copy() for b in self._nabla_b],
                    [w.copy() for w in self._nabla_w])

    def _step(self, X: Array, Y: Array, h: Hyper) -> None:
        with self._lock:
            self._prepare_state(h)
            self._engine.reserve(X.shape[0])
            self._engine.sgd_step(X, Y, *h)

    def _epoch(self, X: Array, T: Array, perm: Array, mini_batch_size: int, h: Hyper) -> None:
        # T: target rows, or 1-D integer labels (the engine builds each mini-batch's one-hot
        # rows: bitwise the epoch on the one-hot rows)
        if T.ndim == 1:
            T = np.ascontiguousarray(T, dtype=np.int64)
        with self._lock:
            self._prepare_state(h)
            self._engine.reserve(mini_batch_size)
            self._engine.sgd_epoch(X, T, np.ascontiguousarray(perm, dtype=np.int64),
                                   mini_batch_size, *h)

    def _state(self, create: bool = False) -> list[Array]:
        # the parameter blob (every weight and bias) and the momentum velocity
        return [self._engine.params] + self._velocity(create)

    def _finite(self) -> bool:
        return _core.all_finite(self._engine.params)

    def _velocity(self, create: bool = False) -> list[Array]:
        if create:
            self._engine.ensure_velocity()
        v = self._engine.velocity
        return [] if v is None else [v]

    def _moments(self, create: bool = False) -> list[Array]:
        if create:
            self._engine.ensure_moment2()
        m = self._engine.moment2
        return [] if m is None else [m]

    def _counters(self) -> tuple[float, int]:
        return self._engine.adam_steps, self._engine.dropout_round

    def _set_counters(self, counters: tuple[float, int]) -> None:
        self._engine.adam_steps, self._engine.dropout_round = counters

    def _accumulate(self, X: Array, Y: Array) -> None:
        with self._lock:
            self._engine.reserve(X.shape[0])
            self._engine.accumulate(X, Y)

    def _apply(self, h: Hyper, count: int) -> None:
        with self._lock:
            self._prepare_state(h)
            self._engine.apply_accumulated(count, *h)
            for a in self._accumulator():
                a.fill(0)

    @property
    def gradient_buffer(self) -> FloatArray:
        """The accumulated gradient as one contiguous 1-D array (allocated on first use), in
        the parameter blob's layout: per layer w^l then b^l.  accumulate_gradient adds to
        it; it may be reduced in place (e.g. an MPI Allreduce) before apply_gradient."""
        with self._lock:
            return self._accumulator(create=True)[0]

    def _accumulator(self, create: bool = False) -> list[Array]:
        if create:
            self._engine.accumulate_alloc()
        a = self._engine.accum
        return [] if a is None else [a]

    def _locked(self) -> contextlib.AbstractContextManager[Any]:
        return self._lock

    def _scratch(self, arrays: list[Array]) -> list[Array]:
        # (the gradient blob is scratch between calls, and none of the calls _guarded
        # watches writes it: it holds the copy of the parameter blob or of the accumulated
        # gradient, so that a step needs no memory of its own)
        if arrays and arrays[0].shape == self._engine.grads.shape:
            return [self._engine.grads] + super()._scratch(arrays[1:])
        return super()._scratch(arrays)

    def _extra_state(self, take: Callable[[Array], Array]) -> dict[str, Any]:
        state = super()._extra_state(take)
        e = self._engine
        state.update(num_threads=None if e.num_threads_automatic else e.num_threads, kernels=e.kernels)
        return state

    def _set_extra_state(self, state: dict[str, Any]) -> None:
        super()._set_extra_state(state)
        if state.get("num_threads") is not None:
            self._engine.num_threads = state["num_threads"]
        if state.get("kernels") in _core.kernels_supported():   # (else this machine's best)
            self._engine.kernels = state["kernels"]

    def _zero_accumulated(self) -> None:
        with self._lock:
            if self._engine.accum is not None:
                self._engine.accum.fill(0)
