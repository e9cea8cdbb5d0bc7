"""The book's model outside the update rule: the parameters' layout and initialisation, the
costs, and class labels as one-hot targets.  Shared by cbackprop.Network and
cbackprop.reference.Network; pure Python and NumPy (never imports the compiled module)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import numpy.typing as npt

from ._validation import check

#: float64 values drawn at a time when a float32 network is initialised (512 KiB).
DRAW_CHUNK = 1 << 16


def make_rng(seed: object) -> np.random.Generator:
    """The network's own generator: np.random.default_rng(seed), seed None or an int >= 0."""
    return np.random.default_rng(check("seed", seed))


def parameter_count(sizes: Sequence[int]) -> int:
    """P = sum over the layers of n_l (n_{l-1} + 1): every weight and bias."""
    return sum(n * (n_prev + 1) for n_prev, n in zip(sizes[:-1], sizes[1:]))


def blob_views(blob: np.ndarray[Any, Any], sizes: Sequence[int]
               ) -> tuple[list[np.ndarray[Any, Any]], list[np.ndarray[Any, Any]]]:
    """([w^1, ..., w^L], [b^1, ..., b^L]) as views into a 1-D blob of P values laid out as
    the C engine's parameter and gradient blobs: per layer w^l (n_l x n_{l-1}, C order), then
    b^l."""
    weights, biases = [], []
    off = 0
    for n_prev, n in zip(sizes[:-1], sizes[1:]):
        weights.append(blob[off:off + n * n_prev].reshape(n, n_prev))
        off += n * n_prev
        biases.append(blob[off:off + n])
        off += n
    return weights, biases


def draw_initial_parameters(rng: np.random.Generator, weights: Sequence[np.ndarray[Any, Any]],
                            biases: Sequence[np.ndarray[Any, Any]], init: str = "large") -> None:
    """Fill the (C-contiguous) arrays weights and biases with network.py's initialisation
    ('large': N(0, 1) everywhere) or network2.py's ('default': weights N(0, 1/n_in), biases
    N(0, 1)).  The values are drawn in float64 in network.py's order, first every layer's
    biases, then every layer's weights, and then rounded to the arrays' dtype: the values
    of drawing whole float64 arrays and casting them, but a float32 network is drawn
    DRAW_CHUNK values at a time, so that no more than its own parameters are allocated."""
    buf = None
    if any(p.dtype != np.float64 for p in list(weights) + list(biases)):
        buf = np.empty(min(DRAW_CHUNK, max(p.size for p in list(weights) + list(biases))), dtype=np.float64)
    for b in biases:
        _fill_normal(rng, b, None, buf)
    for w in weights:
        _fill_normal(rng, w, np.sqrt(w.shape[1]) if init == "default" else None, buf)


def skip_initial_parameters(rng: np.random.Generator, sizes: Sequence[int]) -> None:
    """Advance rng past the draws of draw_initial_parameters for sizes (P normal draws,
    DRAW_CHUNK at a time into a scratch buffer), so that a network given its parameters
    shuffles as a new network with the same seed would."""
    n = parameter_count(sizes)
    buf = np.empty(min(DRAW_CHUNK, n), dtype=np.float64)
    for lo in range(0, n, DRAW_CHUNK):
        rng.standard_normal(out=buf[:min(DRAW_CHUNK, n - lo)])


def _fill_normal(rng: np.random.Generator, out: np.ndarray[Any, Any], scale: Optional[np.floating[Any]],
                 buf: Optional[np.ndarray[Any, Any]]) -> None:
    """out[...] = N(0, 1) draws (divided by scale) in float64, in C order."""
    flat = out.reshape(-1)                  # (a view: out is C-contiguous)
    if flat.dtype == np.float64:
        rng.standard_normal(out=flat)
        if scale is not None:
            np.divide(flat, scale, out=flat)
        return
    assert buf is not None
    for lo in range(0, flat.size, buf.size):
        chunk = buf[:min(buf.size, flat.size - lo)]
        rng.standard_normal(out=chunk)
        if scale is not None:
            np.divide(chunk, scale, out=chunk)
        flat[lo:lo + chunk.size] = chunk   # rounds to out's dtype as astype does


def _physical_memory() -> float:
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not available on this platform
        return float("inf")


def allocation_error(sizes: Sequence[int], dtype: npt.DTypeLike, exc: object) -> MemoryError:
    """MemoryError naming sizes when the parameters of a network cannot be allocated."""
    n = parameter_count(sizes)
    return MemoryError(f"sizes {list(sizes)} need {n} parameters ({n * np.dtype(dtype).itemsize / 2**30:.3g} GiB "
                       f"in {np.dtype(dtype)}), which cannot be allocated: {exc}")


def check_memory(sizes: Sequence[int], dtype: npt.DTypeLike) -> None:
    """MemoryError (allocation_error) before allocating when the parameters and their
    gradients cannot fit in this machine's memory (instead of swapping or being killed)."""
    need = parameter_count(sizes) * 2 * np.dtype(dtype).itemsize
    if need > _physical_memory():
        raise allocation_error(sizes, dtype, f"about {need / 2**30:.3g} GiB are needed, "
                               f"the machine has {_physical_memory() / 2**30:.3g} GiB")


def cost_sum(cost: str, Z: Optional[npt.ArrayLike], A: Optional[npt.ArrayLike], Y: npt.ArrayLike) -> float:
    """sum_x C_x over the rows of z^L = Z, a^L = A and y = Y, in float64 (see cbackprop.h):
    quadratic 1/2 ||y - a||^2, from a^L; cross-entropy -sum_j [y ln a + (1-y) ln(1-a)] and
    log-likelihood -sum_j y ln a from z^L (cross_entropy_sum, log_likelihood_sum), so that
    a saturated output (a^L rounded to exactly 0 or 1: a float32 sigmoid from z ~ 17) still
    gives the finite, accurate cost.  Z or A may be None where the cost does not use it."""
    Y = np.asarray(Y, dtype=np.float64)
    if cost == "quadratic":
        d = Y - np.asarray(A, dtype=np.float64)
        return float(0.5 * np.einsum("ij,ij->", d, d))
    Z = np.asarray(Z, dtype=np.float64)
    return cross_entropy_sum(Z, Y) if cost == "cross-entropy" else log_likelihood_sum(Z, Y)


def cross_entropy_sum(Z: np.ndarray[Any, Any], Y: np.ndarray[Any, Any]) -> float:
    """sum of -[y ln a + (1-y) ln(1-a)] (eq. (63)) over a = sigma(z), from z (float64
    arrays): ln sigma(z) = -softplus(-z) and ln(1 - sigma(z)) = -softplus(z), softplus(t) =
    max(t, 0) + ln(1 + e^-|t|), so each term is ln(1 + e^-|z|) + y max(-z, 0) + (1-y)
    max(z, 0) (for any y; for y in [0, 1] three sums of terms >= 0, nothing cancels).  A
    few [m, n] temporaries, no more."""
    T = np.abs(Z)
    np.negative(T, out=T)
    np.exp(T, out=T)
    np.log1p(T, out=T)
    total = float(T.sum())
    np.maximum(Z, 0, out=T)
    total += float(np.einsum("ij,ij->", np.subtract(1.0, Y), T))
    np.minimum(Z, 0, out=T)
    return total - float(np.einsum("ij,ij->", Y, T))


def log_likelihood_sum(Z: np.ndarray[Any, Any], Y: np.ndarray[Any, Any]) -> float:
    """sum of -y_j ln a_j (eq. (80)) over a = softmax(z) (rows), from z (float64 arrays):
    -ln a_j = logsumexp(z) - z_j = (z_max - z_j) + ln(1 + s), s the sum of e^(z_k - z_max)
    over every k but the row's largest (one of them, if tied), so that ln(1 + s) keeps its
    digits when a_j is close to 1.  Terms with y_j = 0 are 0, even where z_max - z_j
    overflows."""
    if Z.shape[0] == 0:
        return 0.0
    rows = np.arange(Z.shape[0])
    k = np.argmax(Z, axis=1)
    z_max = Z[rows, k][:, None]
    E = np.subtract(Z, z_max)
    np.exp(E, out=E)
    E[rows, k] = 0.0
    log1p_s = np.log1p(E.sum(axis=1, keepdims=True))
    with np.errstate(over="ignore", invalid="ignore"):
        np.subtract(z_max, Z, out=E)
        E += log1p_s
        E[Y == 0] = 0.0
        return float(np.einsum("ij,ij->", Y, E))


def one_hot(labels: np.ndarray[Any, Any], n_out: int, dtype: npt.DTypeLike) -> np.ndarray[Any, Any]:
    """The [m, n_out] targets of m integer labels (checked to lie in [0, n_out)): y_j = 1 for
    j = the label, 0 elsewhere."""
    Y = np.zeros((labels.shape[0], n_out), dtype=dtype)
    Y[np.arange(labels.shape[0]), labels] = 1
    return Y
