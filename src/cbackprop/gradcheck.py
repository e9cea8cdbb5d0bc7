"""Gradient checking: backpropagation against central finite differences, per layer.

Chapter 2 of the book ends on why backpropagation is fast: the finite-difference estimate
dC/dw_j ~ (C(w + eps e_j) - C(w - eps e_j)) / (2 eps) needs two forward passes for every
one of the P parameters, while backpropagation gets all P partial derivatives from one
forward and one backward pass.  ``gradient_check`` runs both on a given network and batch,
reports the relative error per layer and the time each took.

The finite differences are computed in float64 by ``cbackprop.reference.Network`` on a
copy of the network's parameters, so they are independent of the implementation being
checked (and meaningful for a float32 network, whose own cost is too coarse for them).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import numpy.typing as npt

from ._base import NetworkBase
from ._model import cost_sum
from ._validation import Array, _short, check

if TYPE_CHECKING:
    from .reference import Network as Reference

__all__ = ["gradient_check"]


def _relative_error(g: Array, fd: Array) -> float:
    """||g - fd|| / (||g|| + ||fd||): 0 for equal vectors, 1 for opposite ones; 0 when both
    are zero."""
    with np.errstate(over="ignore", invalid="ignore"):   # (huge gradients: inf, NaN)
        num = float(np.linalg.norm(g - fd))
        den = float(np.linalg.norm(g) + np.linalg.norm(fd))
        return num / den if den > 0 else 0.0


def _central_differences(cost: Callable[[], float], flat: Array, idx: Array, eps: float) -> Array:
    """(C(p + eps e_j) - C(p - eps e_j)) / (2 eps) for the entries idx of the parameter
    array flat (changed in place and restored), cost() the network's cost."""
    fd = np.empty(idx.size)
    for t, j in enumerate(idx):
        saved = flat[j]
        flat[j] = saved + eps
        c_plus = cost()
        flat[j] = saved - eps
        c_minus = cost()
        flat[j] = saved
        fd[t] = (c_plus - c_minus) / (2 * eps)
    return fd


def _check_layers(ref: Reference, X2: Array, Y2: Array, nabla_b: list[Array], nabla_w: list[Array], eps: float,
                  max_per_layer: Optional[int], rng: np.random.Generator
                  ) -> tuple[list[dict[str, Any]], int, int]:
    """(per-layer result dicts, cost evaluations, entries checked): the gradient nabla_b,
    nabla_w against central differences of ref's cost on X2, Y2, layer by layer."""
    m = int(X2.shape[0])

    def cost() -> float:
        return cost_sum(ref.cost_name, *ref._forward_z(X2), Y2) / m

    layers, evaluations, checked_total = [], 0, 0
    for l, (w, b, gw, gb) in enumerate(zip(ref._weights, ref._biases, nabla_w, nabla_b), start=1):
        errors = {}
        n_checked = 0
        for name, p, g in (("weights", w, gw), ("biases", b, gb)):
            flat, gflat = p.reshape(-1), np.asarray(g, dtype=np.float64).reshape(-1)
            idx = np.arange(flat.size)
            if max_per_layer is not None and flat.size > max_per_layer:
                idx = np.sort(rng.choice(flat.size, size=max_per_layer, replace=False))
            errors[name] = _relative_error(gflat[idx], _central_differences(cost, flat, idx, eps))
            evaluations += 2 * idx.size
            n_checked += idx.size
        checked_total += n_checked
        layers.append({"layer": l, "weights_error": errors["weights"], "biases_error": errors["biases"],
                       "checked": n_checked})
    return layers, evaluations, checked_total


def gradient_check(net: NetworkBase, X: npt.ArrayLike, Y: npt.ArrayLike, *, eps: float = 1e-5,
                   max_per_layer: Optional[int] = None, seed: int = 0) -> dict[str, Any]:
    """Compare net.backprop(X, Y) with central finite differences of the cost.

    Parameters
    ----------
    net : cbackprop.Network or cbackprop.reference.Network
    X, Y : the batch, as for net.backprop.
    eps : float in (0, 1), the finite-difference step.  The central difference errs by
        O(eps^2) (truncation) plus O(1e-16 C / eps) (rounding) in float64.  Default 1e-5:
        on [784, 30, 10] with N(0, 1) weights and cross-entropy the per-layer errors were
        1.8e-6 / 2.1e-7 / 2.4e-8 / 2.6e-9 / 2.2e-8 at eps = 1e-7 / 1e-6 / 1e-5 / 1e-4 / 1e-3
        (rounding dominates below 1e-4).
    max_per_layer : int >= 1 or None; check at most this many weights and this many biases
        per layer, drawn at random with ``seed`` (None: every parameter).

    Returns a dict: "layers", one dict per layer l = 1..L with "layer", "weights_error",
    "biases_error" (relative errors ||g - fd|| / (||g|| + ||fd||) over the checked entries)
    and "checked" (how many entries); "max_error"; "parameters" (P, the network's total);
    "cost_evaluations" (forward passes the finite differences took); "backprop_seconds"
    and "finite_difference_seconds" (wall time of each); and
    "finite_difference_seconds_all" (the finite-difference time scaled to all P
    parameters, when only some were checked).
    """
    if not isinstance(net, NetworkBase):
        raise TypeError(f"net must be a cbackprop.Network or cbackprop.reference.Network, got {_short(net)}")
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, (int, float, np.floating, np.integer)):
        raise TypeError(f"eps must be a real number, got {_short(eps)}")
    eps = float(eps)
    if not (np.isfinite(eps) and 0 < eps < 1):
        raise ValueError(f"eps must be a finite number in (0, 1), got {eps}")
    if max_per_layer is not None:
        max_per_layer = check("max_per_layer", max_per_layer)
    from .reference import Network as Reference

    t0 = time.perf_counter()
    nabla_b, nabla_w = net.backprop(X, Y)
    t_backprop = time.perf_counter() - t0

    ref = Reference(net.sizes, activations=net.activations, cost=net.cost_name, dtype=np.float64)
    ref.weights = [np.asarray(w, dtype=np.float64) for w in net.weights]
    ref.biases = [np.asarray(b, dtype=np.float64) for b in net.biases]
    X2, Y2, _ = ref._xy(X, Y)
    t0 = time.perf_counter()
    layers, evaluations, checked_total = _check_layers(ref, X2, Y2, nabla_b, nabla_w, eps, max_per_layer,
                                                       np.random.default_rng(seed))
    t_fd = time.perf_counter() - t0
    n_params = sum(w.size + b.size for w, b in zip(ref._weights, ref._biases))
    return {
        "layers": layers,
        "max_error": max(max(d["weights_error"], d["biases_error"]) for d in layers),
        "parameters": n_params,
        "cost_evaluations": evaluations,
        "backprop_seconds": t_backprop,
        "finite_difference_seconds": t_fd,
        "finite_difference_seconds_all": t_fd * n_params / checked_total,
    }
