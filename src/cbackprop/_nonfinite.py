"""The one rule for non-finite results (inf or NaN), shared by every public method of
cbackprop.Network and cbackprop.reference.Network.

Inputs and parameters are finite (the arguments are checked; parameters set through the
weights and biases setters too), but finite values can still give inf or NaN: products
beyond the dtype's range (inputs of 1e30 through a relu layer in float32), or an update
with a far too large eta.  No method returns such values or leaves them in the network:

* a method that computes (feedforward, predict, predict_proba, backprop, trace, cost,
  total_cost, evaluate, and sgd's measurements after each epoch) raises
  FloatingPointError naming the method, the first layer whose values are not finite, the
  quantity (z^l, a^l, delta^l, nabla_w^l, nabla_b^l, or the cost) and where;
* a method that changes the network (update_mini_batch, accumulate_gradient,
  apply_gradient) raises the same error with the network exactly as before the call;
* sgd keeps its own rule (per epoch: the parameters from before the mini-batch that made
  them non-finite, FloatingPointError with ``history``).

This module builds the messages: it locates the first non-finite value by running the
network's own trace (z, a, delta, nabla of BP1-BP4) on the rows concerned.  Pure Python
and NumPy: it never imports the compiled module.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

if TYPE_CHECKING:
    from ._base import NetworkBase

Array = np.ndarray[Any, Any]


def _where(arr: Array, rows: bool, first_row: int = 0) -> str:
    """'inf at row i, unit j' (rows: samples by units, as z, a, delta) or 'inf at index
    (j, k)' (a parameter or gradient array) for the first non-finite value of arr (its rows
    numbered from first_row)."""
    flat = int(np.flatnonzero(~np.isfinite(arr))[0])
    index = tuple(int(i) for i in np.unravel_index(flat, arr.shape))
    value = arr[index]
    if rows and arr.ndim == 2:
        return f"{value} at row {first_row + index[0]}, unit {index[1]}"
    return f"{value} at index {index if len(index) > 1 else index[0]}"


#: (what, where): e.g. ("layer 2's weighted input z^2", "inf at row 0, unit 3")
Found = tuple[str, str]


def _first_in(named: Sequence[tuple[str, Array, bool]], all_finite: Any, first_row: int = 0) -> Optional[Found]:
    """The first array of named ((name, array, rows) triples) that holds a non-finite
    value, or None."""
    for name, arr, rows in named:
        if arr.size and not all_finite(np.ascontiguousarray(arr)):
            return name, _where(arr, rows, first_row)
    return None


def first_nonfinite_layer(net: NetworkBase, X2: Array, Y2: Optional[Array], first_row: int = 0
                          ) -> Optional[Found]:
    """Where the forward pass of the rows X2 (and, with targets Y2, the backward pass and
    the gradient) first leaves the finite numbers, in the order they are computed:
    z^1, a^1, ..., z^L, a^L, then delta^L ... delta^1, then nabla_w^l, nabla_b^l; None when
    every value is finite.  Rows are numbered from first_row."""
    forward_only = Y2 is None
    Y = np.zeros((X2.shape[0], net.sizes[-1]), dtype=net.dtype) if Y2 is None else Y2
    with np.errstate(all="ignore"):
        z, a, delta, nabla_b, nabla_w = net._trace(X2, Y)
    L = len(z)
    named: list[tuple[str, Array, bool]] = []
    for l in range(1, L + 1):
        named += [(f"layer {l}'s weighted input z^{l}", z[l - 1], True),
                  (f"layer {l}'s activation a^{l}", a[l], True)]
    if not forward_only:
        named += [(f"layer {l}'s error delta^{l}", delta[l - 1], True) for l in range(L, 0, -1)]
        for l in range(1, L + 1):
            named += [(f"layer {l}'s weight gradient nabla_w^{l}", nabla_w[l - 1], False),
                      (f"layer {l}'s bias gradient nabla_b^{l}", nabla_b[l - 1], False)]
    return _first_in(named, net._all_finite, first_row)


def first_nonfinite_parameter(net: NetworkBase) -> Optional[Found]:
    """The first layer whose weights or biases are not finite, or None."""
    named: list[tuple[str, Array, bool]] = []
    for l, (w, b) in enumerate(zip(net._weights, net._biases), start=1):
        named += [(f"layer {l}'s weights w^{l}", w, False), (f"layer {l}'s biases b^{l}", b, False)]
    return _first_in(named, net._all_finite)


def _range(net: NetworkBase) -> str:
    return (f"the inputs and parameters are finite, but what the network computes from them "
            f"exceeds the {net.dtype} range (smaller inputs or parameters help)")


def _not_finite(method: str, found: Found, why: str) -> FloatingPointError:
    return FloatingPointError(f"{method}: a non-finite value in {found[0]} ({found[1]}); {why}")


def _preset(method: str, found: Found, unchanged: str = "") -> FloatingPointError:
    return _not_finite(method, found, f"it was set so directly (weights, biases){unchanged}")


def output_error(net: NetworkBase, method: str, X2: Array, bad_rows: Array, first_row: int = 0
                 ) -> FloatingPointError:
    """The error of a method whose outputs (a^L or z^L) of some rows of X2 are not finite
    (bad_rows: a boolean mask of those rows, at least one true; X2's rows numbered from
    first_row)."""
    found = first_nonfinite_parameter(net)
    if found is not None:
        return _preset(method, found)
    i = int(np.flatnonzero(bad_rows)[0])
    found = first_nonfinite_layer(net, X2[i:i + 1], None, first_row + i) or ("the output a^L", "")
    return _not_finite(method, found, _range(net))


def cost_error(method: str, total: float) -> FloatingPointError:
    """The error of a cost whose sum over the rows exceeds the float64 range although every
    value of the network is finite."""
    return FloatingPointError(f"{method}: the cost is not finite ({total}): its sum over the rows exceeds the "
                              f"float64 range although every value of the network is finite")


def gradient_error(net: NetworkBase, method: str, X2: Array, Y2: Array) -> FloatingPointError:
    """The error of backprop or trace, whose results on the rows X2, Y2 are not finite."""
    found = first_nonfinite_parameter(net)
    if found is not None:
        return _preset(method, found)
    found = first_nonfinite_layer(net, X2, Y2) or ("the gradient", "")
    return _not_finite(method, found, _range(net))


def update_error(net: NetworkBase, method: str, X2: Optional[Array], Y2: Optional[Array],
                 after: Optional[Found], hint: str) -> FloatingPointError:
    """The error of a method that changes the network, raised after putting it back: the
    parameters already non-finite (set directly), else the first non-finite value of the
    forward or backward pass of the rows X2, Y2 (when given), else after, what the change
    made non-finite (hint: how to avoid it)."""
    unchanged = "; the network is unchanged"
    found = first_nonfinite_parameter(net)
    if found is not None:
        return _preset(method, found, unchanged)
    found = None if X2 is None or Y2 is None else first_nonfinite_layer(net, X2, Y2)
    if found is not None:
        return _not_finite(method, found, _range(net) + unchanged)
    what, where = after or ("the training state", "")
    return FloatingPointError(f"{method}: the update would make {what} non-finite ({where}); {hint}{unchanged}")
