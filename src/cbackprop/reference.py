"""cbackprop.reference: the same API as cbackprop.Network in pure NumPy, written to read
like chapter 2 of Nielsen's book.  It never imports the compiled module (a test enforces
this) and is the oracle the C path is tested against; it is itself tested against central
finite differences.

Samples are rows in the public API.  `backprop_per_sample` runs the book's column-vector
algorithm once per sample exactly as printed (BP1-BP4); `backprop` (the default) is the
fully matrix-based mini-batch form; `backprop_sigma_matrix` uses the book's diagonal
matrix Sigma'(z) in place of the Hadamard product.  All three return the same gradient.
"""
from __future__ import annotations

import numpy as np

from ._common import DEFAULT_DTYPE, NetworkBase

__all__ = ["Network", "sigmoid", "sigmoid_prime"]


def sigmoid(z):
    """sigma(z) = 1 / (1 + e^{-z}), eq. (3).  exp overflows harmlessly to inf for z << 0."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


def sigmoid_prime(z):
    """sigma'(z) = sigma(z) (1 - sigma(z))."""
    s = sigmoid(z)
    return s * (1 - s)


class Network(NetworkBase):
    """Pure-NumPy reference network: same constructor, attributes and methods as
    cbackprop.Network, and for the same seed the same initial parameters and shuffles."""

    def __init__(self, sizes, *, dtype=DEFAULT_DTYPE, seed=None):
        self._biases, self._weights = self._setup(sizes, dtype, seed)

    # ---- feedforward, eq. (25): a^l = sigma(w^l a^{l-1} + b^l), rows as samples ------------
    def _forward(self, X):
        a = X
        for b, w in zip(self._biases, self._weights):
            a = sigmoid(a @ w.T + b)
        return a

    # ---- the book's algorithm, one column-vector sample at a time --------------------------
    def _backprop_one(self, x, y):
        """network.py's backprop(x, y) for one sample; x, y are column vectors (n, 1).
        Returns the gradient of the per-sample cost C_x = 1/2 ||y - a^L||^2."""
        nabla_b = [np.zeros((b.shape[0], 1), dtype=self.dtype) for b in self._biases]
        nabla_w = [np.zeros(w.shape, dtype=self.dtype) for w in self._weights]
        activation = x
        activations = [x]  # a^0, a^1, ..., a^L
        zs = []            # z^1, ..., z^L
        for b, w in zip(self._biases, self._weights):
            z = w @ activation + b.reshape(-1, 1)
            zs.append(z)
            activation = sigmoid(z)
            activations.append(activation)
        # BP1: delta^L = grad_a C_x (.) sigma'(z^L), grad_a C_x = a^L - y
        delta = (activations[-1] - y) * sigmoid_prime(zs[-1])
        nabla_b[-1] = delta                                  # BP3
        nabla_w[-1] = delta @ activations[-2].T              # BP4
        for l in range(2, self.num_layers):
            # BP2: delta^l = ((w^{l+1})^T delta^{l+1}) (.) sigma'(z^l)
            delta = (self._weights[-l + 1].T @ delta) * sigmoid_prime(zs[-l])
            nabla_b[-l] = delta                              # BP3
            nabla_w[-l] = delta @ activations[-l - 1].T      # BP4
        return nabla_b, nabla_w

    def backprop_per_sample(self, X, Y):
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

    def backprop_sigma_matrix(self, X, Y):
        """The batch gradient with BP1 and BP2 in the book's matrix form (problem in 2.4):
        delta^L = Sigma'(z^L) grad_a C and delta^l = Sigma'(z^l) (w^{l+1})^T delta^{l+1},
        Sigma'(z) the diagonal matrix with sigma'(z_j) on its diagonal; per sample."""
        X2, Y2, _ = self._xy(X, Y)
        m = X2.shape[0]
        nabla_b = [np.zeros(b.shape, dtype=self.dtype) for b in self._biases]
        nabla_w = [np.zeros(w.shape, dtype=self.dtype) for w in self._weights]
        for x, y in zip(X2, Y2):
            activations, zs = [x.reshape(-1, 1)], []
            for b, w in zip(self._biases, self._weights):
                zs.append(w @ activations[-1] + b.reshape(-1, 1))
                activations.append(sigmoid(zs[-1]))
            delta = np.diag(sigmoid_prime(zs[-1]).ravel()) @ (activations[-1] - y.reshape(-1, 1))
            for l in range(1, self.num_layers):
                if l > 1:
                    delta = np.diag(sigmoid_prime(zs[-l]).ravel()) @ self._weights[-l + 1].T @ delta
                nabla_b[-l] += delta.ravel()
                nabla_w[-l] += delta @ activations[-l - 1].T
        return [nb / m for nb in nabla_b], [nw / m for nw in nabla_w]

    # ---- the fully matrix-based form over a whole mini-batch (rows are samples) -------------
    def _gradient(self, X, Y):
        """Gradient of C = 1/(2m) sum_x ||y(x) - a^L(x)||^2 over the m rows of X, Y."""
        m = X.shape[0]
        activations, zs = [X], []
        for b, w in zip(self._biases, self._weights):
            zs.append(activations[-1] @ w.T + b)             # Z^l = A^{l-1} W^T + b
            activations.append(sigmoid(zs[-1]))
        nabla_b = [None] * len(self._biases)
        nabla_w = [None] * len(self._weights)
        # BP1 for the batch cost: grad_a C = (A^L - Y) / m
        delta = (activations[-1] - Y) / m * sigmoid_prime(zs[-1])
        for l in range(1, self.num_layers):
            if l > 1:  # BP2, row-wise: delta^l = (delta^{l+1} W^{l+1}) (.) sigma'(Z^l)
                delta = (delta @ self._weights[-l + 1]) * sigmoid_prime(zs[-l])
            nabla_b[-l] = delta.sum(axis=0)                  # BP3, summed over the batch
            nabla_w[-l] = delta.T @ activations[-l - 1]      # BP4, summed over the batch
        return nabla_b, nabla_w

    def _step(self, X, Y, eta):
        """update_mini_batch: w <- w - eta nabla_w, b <- b - eta nabla_b (batch average).
        Overflow is not warned about here: sgd checks the parameters after every epoch."""
        with np.errstate(over="ignore", invalid="ignore"):
            nabla_b, nabla_w = self._gradient(X, Y)
            for b, nb in zip(self._biases, nabla_b):
                b -= eta * nb
            for w, nw in zip(self._weights, nabla_w):
                w -= eta * nw

    def _epoch(self, X, Y, perm, mini_batch_size, eta):
        for k in range(0, X.shape[0], mini_batch_size):
            rows = perm[k:k + mini_batch_size]
            self._step(X[rows], Y[rows], eta)
