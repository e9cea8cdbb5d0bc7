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

The update rules (network2's SGD with L2 and momentum, Nesterov momentum, Adam) are written
out in `_update`, and dropout draws its masks with a NumPy Philox4x32-10 (cbackprop._dropout)
that gives the C engine's bits, so that both paths drop the same units.
"""
# mypy: no-warn-return-any
# (NumPy expressions on arrays of any dtype are typed Any; the book's formulas stay as printed)
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Optional, Union

import numpy as np
import numpy.typing as npt

from ._base import NetworkBase
from ._dropout import dropout_keep
from ._model import allocation_error, cost_sum, one_hot
from ._validation import DEFAULT_DTYPE, Array, FloatArray, Hyper

#: keep^l of each hidden layer l = 1 .. L-1 for one mini-batch ([m, n_l], 0 or 1 / (1 - p_l)),
#: None for a layer without dropout
Masks = list[Optional[Array]]

#: f(z) or f'(z) of an activation, elementwise (softmax: row-wise)
Activation = Callable[[Array], Array]

__all__ = ["Network", "sigmoid", "sigmoid_prime", "ACTIVATION_FUNCTIONS"]


def _quiet() -> np.errstate:
    """The floating-point state of every computation of the reference: overflow and invalid
    operations are not warned about, the values say it (inf, nan), as the C path's do.  Matrix
    products need it even on finite inputs: some OpenBLAS kernels raise the invalid-operation
    flag without producing a NaN (numpy/numpy#24067, OpenMathLib/OpenBLAS#1924), which NumPy
    reports as "invalid value encountered in matmul"."""
    return np.errstate(over="ignore", invalid="ignore")


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
                 seed: Optional[int] = None, dropout: Union[None, float, Sequence[float]] = None) -> None:
        self._build(sizes, dtype, seed, activations, cost, init, dropout)

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
        self._velocity_w: list[Array] = []          # (empty until momentum or Adam is used)
        self._velocity_b: list[Array] = []
        self._moment2_w: list[Array] = []           # Adam's second moment (empty until used)
        self._moment2_b: list[Array] = []
        self._adam_steps = 0.0                      # Adam's t: steps taken
        self._dropout_round = 0                     # the next training call's dropout round

    # ---- feedforward, eq. (25): a^l = f(w^l a^{l-1} + b^l), rows as samples ---------------
    def _forward(self, X: Array) -> Array:
        # Overflow to inf (relu/identity layers, huge inputs) is not warned about: the
        # values say it, as the C path's do.
        a = X
        with _quiet():
            for b, w, (f, _) in zip(self._biases, self._weights, self._fs):
                a = f(a @ w.T + b)
        return a

    def _forward_z(self, X: Array) -> tuple[Array, Array]:
        """(z^L, a^L): the forward pass, keeping the output layer's weighted input."""
        a, z = X, X
        with _quiet():
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
        with _quiet():
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
        with _quiet():
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
    def _trace(self, X: Array, Y: Array, scale: Optional[float] = None, keep: Optional[Masks] = None
               ) -> tuple[list[Array], list[Array], list[Array], list[Array], list[Array]]:
        """z, a, delta, nabla_b, nabla_w of C = scale * sum_x C_x over the m rows of X, Y
        (scale 1/m: the batch average, the network's cost).  keep: dropout's masks keep^l of
        the hidden layers (dropout_masks), or None: layer l + 1 then sees a^l (.) keep^l, and
        BP2 goes through the mask."""
        m = X.shape[0]
        scale = 1.0 / m if scale is None else scale
        activations, zs, inputs = [X], [], [X]               # inputs[l]: what layer l + 1 sees
        for l, (b, w, (f, _)) in enumerate(zip(self._biases, self._weights, self._fs), start=1):
            zs.append(inputs[-1] @ w.T + b)                  # Z^l = A^{l-1} W^T + b
            activations.append(f(zs[-1]))
            mask = keep[l - 1] if keep is not None and l < len(self._weights) else None
            inputs.append(activations[-1] if mask is None else activations[-1] * mask)
        nabla_b: list[Array] = [np.empty(0)] * len(self._biases)
        nabla_w: list[Array] = [np.empty(0)] * len(self._weights)
        deltas: list[Array] = [np.empty(0)] * len(self._weights)
        # BP1 for the batch cost: the per-sample delta^L times scale
        delta = self._output_delta(zs[-1], activations[-1], Y) * self.dtype.type(scale)
        for l in range(1, self.num_layers):
            if l > 1:  # BP2, row-wise: delta^l = ((delta^{l+1} W^{l+1}) (.) keep^l) (.) f'(Z^l)
                delta = delta @ self._weights[-l + 1]
                mask = keep[-l + 1] if keep is not None else None
                if mask is not None:
                    delta = delta * mask
                delta = delta * self._prime(-l)(zs[-l])
            deltas[-l] = delta
            nabla_b[-l] = delta.sum(axis=0)                  # BP3, summed over the batch
            nabla_w[-l] = delta.T @ inputs[-l - 1]           # BP4, summed over the batch
        return zs, activations, deltas, nabla_b, nabla_w

    def _gradient(self, X: Array, Y: Array) -> tuple[list[Array], list[Array]]:
        """Gradient of the network's cost (average of C_x) over the m rows of X, Y."""
        _, _, _, nabla_b, nabla_w = self._trace(X, Y)
        return nabla_b, nabla_w

    # ---- dropout (chapter 3): the masks, and the cost and gradient with fixed masks ----------
    def dropout_masks(self, m: int, round: int, batch: int = 0) -> Masks:
        """keep^l of hidden layers l = 1 .. L-1 for the m rows of mini-batch `batch` of
        training round `round` (update_mini_batch: batch 0 of each round; an epoch of sgd:
        its mini-batches 0, 1, ... of one round): 0 for a dropped unit, 1 / (1 - p_l) for a
        kept one; None for a layer without dropout.  The C engine draws the same masks."""
        return [dropout_keep(self._dropout_seed, round, batch, l, m, n, p, self.dtype) if p else None
                for l, (n, p) in enumerate(zip(self.sizes[1:-1], self._dropout), start=1)]

    def _masked_forward(self, X: Array, keep: Masks) -> tuple[Array, Array]:
        """(z^L, a^L) with the masks keep (layer l + 1 sees a^l (.) keep^l)."""
        a, z = X, X
        with _quiet():
            for l, (b, w, (f, _)) in enumerate(zip(self._biases, self._weights, self._fs), start=1):
                z = a @ w.T + b
                a = f(z)
                if l < len(self._weights) and keep[l - 1] is not None:
                    a = a * keep[l - 1]
        return z, a

    def cost_with_masks(self, X: npt.ArrayLike, Y: npt.ArrayLike, keep: Masks) -> float:
        """The cost C of the rows of X, Y through the network thinned by the dropout masks
        keep (dropout_masks): what a training step with those masks descends."""
        X2, Y2, _ = self._xy(X, Y)
        return cost_sum(self.cost_name, *self._masked_forward(X2, keep), Y2) / int(X2.shape[0])

    def backprop_with_masks(self, X: npt.ArrayLike, Y: npt.ArrayLike, keep: Masks
                            ) -> tuple[list[FloatArray], list[FloatArray]]:
        """(nabla_b, nabla_w) of cost_with_masks: BP1-BP4 with BP2 through the masks,
        delta^l = ((delta^{l+1} W^{l+1}) (.) keep^l) (.) f'(z^l), and BP4 on the kept
        activations a^l (.) keep^l."""
        X2, Y2, _ = self._xy(X, Y)
        with _quiet():
            _, _, _, nabla_b, nabla_w = self._trace(X2, Y2, keep=keep)
        return nabla_b, nabla_w

    # ---- the update rules ------------------------------------------------------------------------
    def _velocity(self, create: bool = False) -> list[Array]:
        """The momentum velocity (Adam: the first moment) arrays (zeros when first used;
        create=True makes them now)."""
        if create and not self._velocity_w:
            self._velocity_w = [np.zeros_like(w) for w in self._weights]
            self._velocity_b = [np.zeros_like(b) for b in self._biases]
        return self._velocity_w + self._velocity_b

    def _moments(self, create: bool = False) -> list[Array]:
        """Adam's second moment arrays (zeros when first used)."""
        if create and not self._moment2_w:
            self._moment2_w = [np.zeros_like(w) for w in self._weights]
            self._moment2_b = [np.zeros_like(b) for b in self._biases]
        return self._moment2_w + self._moment2_b

    def _counters(self) -> tuple[float, int]:
        return self._adam_steps, self._dropout_round

    def _set_counters(self, counters: tuple[float, int]) -> None:
        self._adam_steps, self._dropout_round = float(counters[0]), int(counters[1])

    def _update(self, nabla_b: list[Array], nabla_w: list[Array], h: Hyper) -> None:
        """One update of every parameter with the batch gradient, by h's rule (see
        update.h in the C sources for the same rules):
        SGD       w <- (1 - eta lmbda / n) w - eta nabla_w, b <- b - eta nabla_b (eq. (93))
        momentum  v <- mu v - eta nabla - decay w, w <- w + v  (decay = eta lmbda / n; biases 0)
        Nesterov  v <- mu v - eta nabla - decay w, w <- w + mu v - eta nabla - decay w
        Adam      g = nabla + (lmbda / n) w; m <- beta1 m + (1 - beta1) g;
                  s <- beta2 s + (1 - beta2) g^2; w <- w - eta m_hat / (sqrt(s_hat) + eps),
                  m_hat = m / (1 - beta1^t), s_hat = s / (1 - beta2^t) at step t."""
        self._prepare_state(h)
        eta, keep, decay, mu, opt = h
        layers = [(w, nw, decay) for w, nw in zip(self._weights, nabla_w)] + \
                 [(b, nb, 0.0) for b, nb in zip(self._biases, nabla_b)]
        if opt is not None and opt[0] == "adam":
            self._adam_steps += 1
            for (p, g, d), m, s in zip(layers, self._velocity(), self._moments()):
                self._adam(p, g, eta, d / eta, m, s, opt[1:])
        elif opt is not None or mu:
            for (p, g, d), v in zip(layers, self._velocity()):
                v[...] = mu * v - eta * g - d * p
                if opt is None:                              # momentum (chapter 3)
                    p += v
                else:                                        # Nesterov: a look-ahead step
                    p[...] = p + (mu * v - eta * g - d * p)
        else:
            for p, g, d in layers:
                p[...] = (keep * p - eta * g) if d else p - eta * g

    def _adam(self, p: Array, g: Array, eta: float, l2: float, m: Array, s: Array,
              betas_eps: tuple[float, ...]) -> None:
        """Adam's step t = self._adam_steps on one parameter array p (PyTorch's Adam with
        weight_decay = l2 = lmbda / n; l2 = 0 for biases)."""
        beta1, beta2, eps = betas_eps
        t = self._adam_steps
        g = g + l2 * p if l2 else g
        m[...] = beta1 * m + (1 - beta1) * g
        s[...] = beta2 * s + (1 - beta2) * (g * g)
        m_hat = m / (1 - beta1 ** t)
        s_hat = s / (1 - beta2 ** t)
        p -= eta * m_hat / (np.sqrt(s_hat) + eps)

    def _step(self, X: Array, Y: Array, h: Hyper) -> None:
        """update_mini_batch with the gradient averaged over the rows (with dropout, through
        the masks of mini-batch 0 of the next round).  Overflow is not warned about here:
        sgd checks the parameters after every epoch."""
        self._masked_step(X, Y, h, 0)
        self._dropout_round += 1

    def _masked_step(self, X: Array, Y: Array, h: Hyper, batch: int) -> None:
        keep = self.dropout_masks(X.shape[0], self._dropout_round, batch) if any(self._dropout) else None
        with _quiet():
            _, _, _, nabla_b, nabla_w = self._trace(X, Y, keep=keep)
            self._update(nabla_b, nabla_w, h)

    def _epoch(self, X: Array, T: Array, perm: Array, mini_batch_size: int, h: Hyper) -> None:
        """update_mini_batch on consecutive slices of perm (mini-batches k = 0, 1, ... of one
        dropout round); T: target rows, or integer labels whose one-hot rows are built for
        each mini-batch."""
        if perm.shape[0] == 0:
            return
        for k, lo in enumerate(range(0, perm.shape[0], mini_batch_size)):
            rows = perm[lo:lo + mini_batch_size]
            Y = T[rows] if T.ndim == 2 else one_hot(T[rows], self.sizes[-1], self.dtype)
            self._masked_step(X[rows], Y, h, k)
        self._dropout_round += 1

    # ---- gradient accumulation ----------------------------------------------------------------
    def _accumulate(self, X: Array, Y: Array) -> None:
        _, _, _, nabla_b, nabla_w = self._trace(X, Y, scale=1.0)   # the sum over the rows
        for acc, nb in zip(self._acc_b, nabla_b):
            acc += nb
        for acc, nw in zip(self._acc_w, nabla_w):
            acc += nw

    def _apply(self, h: Hyper, count: int) -> None:
        with _quiet():
            self._update([a / count for a in self._acc_b], [a / count for a in self._acc_w], h)
        self._zero_accumulated()

    def _accumulator(self, create: bool = False) -> list[Array]:
        return self._acc_w + self._acc_b

    def _zero_accumulated(self) -> None:
        for a in self._acc_w + self._acc_b:
            a[...] = 0
