"""cbackprop.reference: the same API as cbackprop.Network in pure NumPy, written to read
like chapters 2 and 3 of Nielsen's book.  It never imports the compiled module (a test
enforces this) and is the oracle the C path is tested against; it is itself tested against
central finite differences.

Samples are rows in the public API.  `backprop_per_sample` runs the book's column-vector
algorithm once per sample exactly as printed (BP1-BP4); `backprop` (the default) is the
fully matrix-based mini-batch form; `backprop_sigma_matrix` uses the book's diagonal
matrix Sigma'(z) in place of the Hadamard product (the full Jacobian of a softmax output).
All three return the same gradient.

Derivatives here are computed from z (the C path computes them from a = f(z)), so the two
implementations share no formula but the book's.
"""
# mypy: no-warn-return-any
# (NumPy expressions on arrays of any dtype are typed Any; the book's formulas stay as printed)
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Optional, Union

import numpy as np
import numpy.typing as npt

from ._base import NetworkBase
from ._model import allocation_error, one_hot
from ._validation import DEFAULT_DTYPE, Array, FloatArray, Hyper

#: f(z) or f'(z) of an activation, elementwise (softmax: row-wise)
Activation = Callable[[Array], Array]

__all__ = ["Network", "sigmoid", "sigmoid_prime", "ACTIVATION_FUNCTIONS"]


def sigmoid(z: Array) -> Array:
    """sigma(z) = 1 / (1 + e^{-z}), eq. (3).  exp overflows harmlessly to inf for z << 0."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


def sigmoid_prime(z: Array) -> Array:
    """sigma'(z) = sigma(z) (1 - sigma(z))."""
    s = sigmoid(z)
    return s * (1 - s)


def softmax(z: Array) -> Array:
    """a_j = e^{z_j} / sum_k e^{z_k} for each row (eq. (78)), shifted by the row maximum."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


#: name -> (f(z), f'(z)); softmax has no elementwise derivative (its Jacobian is used).
ACTIVATION_FUNCTIONS: dict[str, tuple[Activation, Optional[Activation]]] = {
    "sigmoid": (sigmoid, sigmoid_prime),
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(z.dtype)),
    "identity": (lambda z: z, lambda z: np.ones_like(z)),
    "softmax": (softmax, None),
}


def softmax_jacobian(a: Array) -> Array:
    """da_j/dz_k = a_j (delta_jk - a_k) for one sample a (1-D)."""
    return np.diag(a) - np.outer(a, a)


class Network(NetworkBase):
    """Pure-NumPy reference network: same constructor, attributes and methods as
    cbackprop.Network, and for the same seed the same initial parameters and shuffles."""

    def __init__(self, sizes: Sequence[int], *, activations: Union[str, Sequence[str]] = "sigmoid",
                 cost: str = "quadratic", init: str = "large", dtype: npt.DTypeLike = DEFAULT_DTYPE,
                 seed: Optional[int] = None) -> None:
        self._build(sizes, dtype, seed, activations, cost, init)

    def _allocate(self) -> None:
        shapes = [(n, n_prev) for n_prev, n in zip(self.sizes[:-1], self.sizes[1:])]
        try:
            self._weights = [np.zeros(s, dtype=self.dtype) for s in shapes]
            self._biases = [np.zeros(s[0], dtype=self.dtype) for s in shapes]
            self._acc_w = [np.zeros_like(w) for w in self._weights]
            self._acc_b = [np.zeros_like(b) for b in self._biases]
        except (MemoryError, ValueError) as exc:
            raise allocation_error(self.sizes, self.dtype, exc) from None
        self._fs = [ACTIVATION_FUNCTIONS[name] for name in self.activations]
        self._velocity_w: list[Array] = []          # (empty until momentum is used)
        self._velocity_b: list[Array] = []

    # ---- feedforward, eq. (25): a^l = f(w^l a^{l-1} + b^l), rows as samples ---------------
    def _forward(self, X: Array) -> Array:
        # Overflow to inf (relu/identity layers, huge inputs) is not warned about: the
        # values say it, as the C path's do.
        a = X
        with np.errstate(over="ignore", invalid="ignore"):
            for b, w, (f, _) in zip(self._biases, self._weights, self._fs):
                a = f(a @ w.T + b)
        return a

    def _forward_z(self, X: Array) -> tuple[Array, Array]:
        """(z^L, a^L): the forward pass, keeping the output layer's weighted input."""
        a, z = X, X
        with np.errstate(over="ignore", invalid="ignore"):
            for b, w, (f, _) in zip(self._biases, self._weights, self._fs):
                z = a @ w.T + b
                a = f(z)
        return z, a

    def _prime(self, l: int) -> Activation:
        """f' of layer l's activation (hidden layers: never softmax, so one exists)."""
        fprime = self._fs[l][1]
        assert fprime is not None
        return fprime

    # ---- BP1 for each cost ------------------------------------------------------------------
    def _grad_a(self, a: Array, y: Array) -> Array:
        """grad_a C_x of one sample's cost (rows: samples)."""
        if self.cost_name == "quadratic":
            return a - y                                      # eq. (6)
        if self.cost_name == "cross-entropy":
            return (a - y) / (a * (1 - a))                    # from eq. (63)
        return -y / a                                         # eq. (80)

    def _output_delta(self, zL: Array, aL: Array, Y: Array) -> Array:
        """BP1 per sample (rows), for the per-sample cost C_x: delta^L = J^T grad_a C_x with
        the simplifications the book derives (eqs. (66) and (81)) where they apply."""
        if self.cost_name == "cross-entropy":                 # sigmoid output, eq. (66)
            return aL - Y
        if self.cost_name == "log-likelihood":                # softmax output, eq. (81)
            return aL * Y.sum(axis=1, keepdims=True) - Y
        g = aL - Y
        fprime = self._fs[-1][1]
        if fprime is None:                                    # softmax: J^T g, J symmetric
            return aL * (g - (aL * g).sum(axis=1, keepdims=True))
        return g * fprime(zL)                                 # BP1

    # ---- the book's algorithm, one column-vector sample at a time --------------------------
    def _backprop_one(self, x: Array, y: Array) -> tuple[list[Array], list[Array]]:
        """network.py's backprop(x, y) for one sample; x, y are column vectors (n, 1).
        Returns the gradient of the per-sample cost C_x."""
        nabla_b = [np.zeros((b.shape[0], 1), dtype=self.dtype) for b in self._biases]
        nabla_w = [np.zeros(w.shape, dtype=self.dtype) for w in self._weights]
        activation = x
        activations = [x]  # a^0, a^1, ..., a^L
        zs = []            # z^1, ..., z^L
        for b, w, (f, _) in zip(self._biases, self._weights, self._fs):
            z = w @ activation + b.reshape(-1, 1)
            zs.append(z)
            activation = f(z.T).T                             # (softmax works on rows)
            activations.append(activation)
        # BP1: delta^L = grad_a C_x (.) sigma'(z^L)  (or its softmax / cost-specific form)
        delta = self._output_delta(zs[-1].T, activations[-1].T, y.T).T
        nabla_b[-1] = delta                                  # BP3
        nabla_w[-1] = delta @ activations[-2].T              # BP4
        for l in range(2, self.num_layers):
            # BP2: delta^l = ((w^{l+1})^T delta^{l+1}) (.) sigma'(z^l)
            delta = (self._weights[-l + 1].T @ delta) * self._prime(-l)(zs[-l])
            nabla_b[-l] = delta                              # BP3
            nabla_w[-l] = delta @ activations[-l - 1].T      # BP4
        return nabla_b, nabla_w

    def backprop_per_sample(self, X: npt.ArrayLike, Y: npt.ArrayLike) -> tuple[list[FloatArray], list[FloatArray]]:
        """The batch gradient as the book computes it in update_mini_batch: network.py's
        per-sample backprop summed over the rows, divided by m."""
        X2, Y2, _ = self._xy(X, Y)
        m = X2.shape[0]
        nabla_b = [np.zeros(b.shape, dtype=self.dtype) for b in self._biases]
        nabla_w = [np.zeros(w.shape, dtype=self.dtype) for w in self._weights]
        for x, y in zip(X2, Y2):
            db, dw = self._backprop_one(x.reshape(-1, 1), y.reshape(-1, 1))
            nabla_b = [nb + d.ravel() for nb, d in zip(nabla_b, db)]
            nabla_w = [nw + d for nw, d in zip(nabla_w, dw)]
        return [nb / m for nb in nabla_b], [nw / m for nw in nabla_w]

    def backprop_sigma_matrix(self, X: npt.ArrayLike, Y: npt.ArrayLike) -> tuple[list[FloatArray], list[FloatArray]]:
        """The batch gradient with BP1 and BP2 in the book's matrix form (problem in 2.4):
        delta^L = Sigma'(z^L) grad_a C and delta^l = Sigma'(z^l) (w^{l+1})^T delta^{l+1},
        Sigma'(z) the diagonal matrix with f'(z_j) on its diagonal (for a softmax output the
        full Jacobian da/dz); per sample, with grad_a C_x written out for each cost."""
        X2, Y2, _ = self._xy(X, Y)
        m = X2.shape[0]
        nabla_b = [np.zeros(b.shape, dtype=self.dtype) for b in self._biases]
        nabla_w = [np.zeros(w.shape, dtype=self.dtype) for w in self._weights]
        for x, y in zip(X2, Y2):
            activations, zs = [x.reshape(-1, 1)], []
            for b, w, (f, _) in zip(self._biases, self._weights, self._fs):
                zs.append(w @ activations[-1] + b.reshape(-1, 1))
                activations.append(f(zs[-1].T).T)
            aL, y1 = activations[-1].ravel(), y.ravel()
            fprime = self._fs[-1][1]
            Sigma_L = softmax_jacobian(aL) if fprime is None else np.diag(fprime(zs[-1]).ravel())
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                g = self._grad_a(aL, y1)
                if self.cost_name == "log-likelihood":  # -y/a: y_j = 0 terms are 0 even when a_j = 0
                    g = np.where(y1 != 0, g, 0.0)
                delta = Sigma_L @ g.reshape(-1, 1)
            if not np.isfinite(delta).all():
                # A saturated output (a = 0 or 1) makes grad_a C infinite where Sigma' is 0:
                # the literal product is 0 * inf.  Its limit is the cost's own delta^L (eqs.
                # (66) and (81)), which the other two forms compute directly.
                delta = self._output_delta(zs[-1].T, activations[-1].T, y.reshape(1, -1)).T
            for l in range(1, self.num_layers):
                if l > 1:
                    Sigma = np.diag(self._prime(-l)(zs[-l]).ravel())
                    delta = Sigma @ self._weights[-l + 1].T @ delta
                nabla_b[-l] += delta.ravel()
                nabla_w[-l] += delta @ activations[-l - 1].T
        return [nb / m for nb in nabla_b], [nw / m for nw in nabla_w]

    # ---- the fully matrix-based form over a whole mini-batch (rows are samples) -------------
    def _trace(self, X: Array, Y: Array, scale: Optional[float] = None
               ) -> tuple[list[Array], list[Array], list[Array], list[Array], list[Array]]:
        """z, a, delta, nabla_b, nabla_w of C = scale * sum_x C_x over the m rows of X, Y
        (scale 1/m: the batch average, the network's cost)."""
        m = X.shape[0]
        scale = 1.0 / m if scale is None else scale
        activations, zs = [X], []
        for b, w, (f, _) in zip(self._biases, self._weights, self._fs):
            zs.append(activations[-1] @ w.T + b)             # Z^l = A^{l-1} W^T + b
            activations.append(f(zs[-1]))
        nabla_b: list[Array] = [np.empty(0)] * len(self._biases)
        nabla_w: list[Array] = [np.empty(0)] * len(self._weights)
        deltas: list[Array] = [np.empty(0)] * len(self._weights)
        # BP1 for the batch cost: the per-sample delta^L times scale
        delta = self._output_delta(zs[-1], activations[-1], Y) * self.dtype.type(scale)
        for l in range(1, self.num_layers):
            if l > 1:  # BP2, row-wise: delta^l = (delta^{l+1} W^{l+1}) (.) f'(Z^l)
                delta = (delta @ self._weights[-l + 1]) * self._prime(-l)(zs[-l])
            deltas[-l] = delta
            nabla_b[-l] = delta.sum(axis=0)                  # BP3, summed over the batch
            nabla_w[-l] = delta.T @ activations[-l - 1]      # BP4, summed over the batch
        return zs, activations, deltas, nabla_b, nabla_w

    def _gradient(self, X: Array, Y: Array) -> tuple[list[Array], list[Array]]:
        """Gradient of the network's cost (average of C_x) over the m rows of X, Y."""
        _, _, _, nabla_b, nabla_w = self._trace(X, Y)
        return nabla_b, nabla_w

    def _velocity(self, create: bool = False) -> list[Array]:
        """The momentum velocity arrays (zeros when first used; create=True makes them now)."""
        if create and not self._velocity_w:
            self._velocity_w = [np.zeros_like(w) for w in self._weights]
            self._velocity_b = [np.zeros_like(b) for b in self._biases]
        return self._velocity_w + self._velocity_b

    def _update(self, nabla_b: list[Array], nabla_w: list[Array], h: Hyper) -> None:
        """One update (see cbp_hyper in csrc/cbackprop_decl.h): network2's
        w <- (1 - eta lmbda / n) w - eta nabla_w, or with momentum
        v <- mu v - eta nabla - (eta lmbda / n) w, w <- w + v (biases: no decay)."""
        eta, keep, decay, mu = h
        if mu:
            self._velocity(create=True)
            for w, v, nw in zip(self._weights, self._velocity_w, nabla_w):
                v[...] = mu * v - eta * nw - decay * w
                w += v
            for b, v, nb in zip(self._biases, self._velocity_b, nabla_b):
                v[...] = mu * v - eta * nb
                b += v
            return
        for b, nb in zip(self._biases, nabla_b):
            b -= eta * nb
        for w, nw in zip(self._weights, nabla_w):
            if keep != 1.0:
                w[...] = keep * w - eta * nw
            else:
                w -= eta * nw

    def _step(self, X: Array, Y: Array, h: Hyper) -> None:
        """update_mini_batch with the gradient averaged over the rows.  Overflow is not
        warned about here: sgd checks the parameters after every epoch."""
        with np.errstate(over="ignore", invalid="ignore"):
            nabla_b, nabla_w = self._gradient(X, Y)
            self._update(nabla_b, nabla_w, h)

    def _epoch(self, X: Array, T: Array, perm: Array, mini_batch_size: int, h: Hyper) -> None:
        """update_mini_batch on consecutive slices of perm; T: target rows, or integer
        labels whose one-hot rows are built for each mini-batch."""
        for k in range(0, X.shape[0], mini_batch_size):
            rows = perm[k:k + mini_batch_size]
            Y = T[rows] if T.ndim == 2 else one_hot(T[rows], self.sizes[-1], self.dtype)
            self._step(X[rows], Y, h)

    # ---- gradient accumulation ----------------------------------------------------------------
    def _accumulate(self, X: Array, Y: Array) -> None:
        _, _, _, nabla_b, nabla_w = self._trace(X, Y, scale=1.0)   # the sum over the rows
        for acc, nb in zip(self._acc_b, nabla_b):
            acc += nb
        for acc, nw in zip(self._acc_w, nabla_w):
            acc += nw

    def _apply(self, h: Hyper, count: int) -> None:
        with np.errstate(over="ignore", invalid="ignore"):
            self._update([a / count for a in self._acc_b], [a / count for a in self._acc_w], h)
        self._zero_accumulated()

    def _accumulator(self, create: bool = False) -> list[Array]:
        return self._acc_w + self._acc_b

    def _zero_accumulated(self) -> None:
        for a in self._acc_w + self._acc_b:
            a[...] = 0
