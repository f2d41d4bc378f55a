"""Deterministic, resumable, rank-sharded index streams for ``Task.batches``.

The global stream is the concatenation of per-epoch permutations of ``range(n)`` (epoch ``e``
shuffled with seed ``(seed, e)``). Micro-batch ``g`` of rank ``r`` takes stream positions
``[(g * world + r) * B, ... + B)``, so every rank sees a disjoint shard, any ``n`` works (even
``n < B * world``), and resuming at ``start_step`` needs no state besides the step.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def _perm(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_indices(n: int, batch_size: int, rank: int = 0, world: int = 1, seed: int = 0,
                  start_step: int = 0) -> Iterator[np.ndarray]:
    """Infinite stream of index arrays (length ``batch_size``) for this rank, from ``start_step``."""
    if n <= 0:
        raise ValueError("batch_indices: empty dataset (n=0); nothing to train on")
    cache: dict[int, np.ndarray] = {}
    g = start_step
    while True:
        pos = (g * world + rank) * batch_size + np.arange(batch_size)
        epochs, offsets = pos // n, pos % n
        needed = set(np.unique(epochs).tolist())
        cache = {e: cache[e] if e in cache else _perm(n, seed, e) for e in needed}  # drop past epochs
        yield np.array([cache[int(e)][o] for e, o in zip(epochs, offsets, strict=True)], dtype=np.int64)
        g += 1
