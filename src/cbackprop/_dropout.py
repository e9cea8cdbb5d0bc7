"""Dropout's masks in NumPy (chapter 3, "Dropout"): the same bits as the C engine's
cbp_dropout_bits (csrc/cbackprop.h), so that cbackprop.reference drops the same units as
cbackprop.Network.  Pure Python and NumPy: it never imports the compiled module.

Unit j of hidden layer l for row i of mini-batch k of round r is dropped when

    (bits >> 8) < floor(p_l 2^24),  bits = word 0 of Philox4x32-10(counter, key),
    counter = (j, i, (k << 8) | l, r) (each mod 2^32),  key = (seed mod 2^32, seed >> 32),

and a kept unit is scaled by 1 / (1 - p_l) (inverted dropout).  A round is one training
call: each update_mini_batch (its mini-batch is k = 0) and each epoch of sgd (its
mini-batches are k = 0, 1, ...).  Philox4x32-10 is the counter-based generator of Salmon,
Moraes, Dror and Shaw, "Parallel random numbers: as easy as 1, 2, 3" (SC 2011), as their
Random123 library defines it.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import numpy.typing as npt

Array = np.ndarray[Any, Any]

_MASK = np.uint64(0xFFFFFFFF)
_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)     # Philox's multipliers
_W0, _W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)     # its key schedule (Weyl) constants
_32 = np.uint64(32)

#: The spawn key that derives the masks' seed from the network's seed (mask_seed).
SPAWN_KEY = 0x64726F70     # "drop"


def philox4x32(ctr: tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike, npt.ArrayLike],
               key: tuple[int, int]) -> tuple[Array, Array, Array, Array]:
    """Philox4x32-10 of the counters ctr (four arrays of 32-bit words, broadcast together)
    under key (two words): the four output words, as uint32 arrays."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) & _MASK for c in ctr)
    k0, k1 = np.uint64(key[0]) & _MASK, np.uint64(key[1]) & _MASK
    for r in range(10):
        if r:
            k0, k1 = (k0 + _W0) & _MASK, (k1 + _W1) & _MASK
        p0, p1 = _M0 * c0, _M1 * c2          # exact 64-bit products of 32-bit words
        c0, c1, c2, c3 = (p1 >> _32) ^ c1 ^ k0, p1 & _MASK, (p0 >> _32) ^ c3 ^ k1, p0 & _MASK
    c0, c1, c2, c3 = np.broadcast_arrays(c0, c1, c2, c3)
    return (c0.astype(np.uint32), c1.astype(np.uint32), c2.astype(np.uint32), c3.astype(np.uint32))


def dropout_bits(seed: int, round: int, batch: int, layer: int, rows: npt.ArrayLike,
                 units: npt.ArrayLike) -> Array:
    """The 32 bits that decide whether unit j of layer `layer` is dropped for row i of
    mini-batch `batch` of round `round`, for every (i, j) of rows x units broadcast together
    (e.g. rows as a column, units as a row)."""
    third = ((int(batch) << 8) | int(layer)) & 0xFFFFFFFF
    key = (int(seed) & 0xFFFFFFFF, (int(seed) >> 32) & 0xFFFFFFFF)
    return philox4x32((units, rows, third, int(round) & 0xFFFFFFFF), key)[0]


def dropout_keep(seed: int, round: int, batch: int, layer: int, m: int, n: int, rate: float,
                 dtype: npt.DTypeLike) -> Array:
    """keep^l of one mini-batch, [m, n]: 0 for a dropped unit, 1 / (1 - rate) (rounded to
    dtype) for a kept one."""
    bits = dropout_bits(seed, round, batch, layer, np.arange(m, dtype=np.uint64)[:, None],
                        np.arange(n, dtype=np.uint64)[None, :])
    below = np.uint32(int(rate * 16777216.0))           # floor(p 2^24)
    kept = np.asarray(1.0 / (1.0 - rate), dtype=dtype)
    return np.where((bits >> np.uint32(8)) < below, np.zeros((), dtype=dtype), kept)


def mask_seed(seed: Optional[int]) -> int:
    """The masks' 64-bit key for a network made with seed: the first 64-bit word of
    np.random.SeedSequence(seed, spawn_key=(SPAWN_KEY,)), a stream independent of the
    network's own generator (np.random.default_rng(seed), which draws the initial
    parameters and the shuffles); seed None draws fresh entropy from the OS."""
    return int(np.random.SeedSequence(seed, spawn_key=(SPAWN_KEY,)).generate_state(1, np.uint64)[0])
