"""Greedy max-min distance selection in feature space (paper eq. 12, farthest-point sampling).

Each pool point carries its distance to the nearest *known* point: initially the nearest
training point (the whole training set, computed in blocks), afterwards also every pick. The
next pick is the pool point farthest from everything known. The reference implementation starts
from the distance to the origin instead and so can pick near-duplicates of training data.

Distances use the kernel trick |a - b|^2 = |a|^2 + |b|^2 - 2 a.b in fp64 (BLAS matrix products,
bounded memory). Candidates within rounding of the best are ties, broken by the lexicographic
order of their feature vectors, so the result does not depend on the order of the pool.
"""

from __future__ import annotations

import logging

import numpy as np

from apax_core.errors import InputError

logger = logging.getLogger(__name__)

BLOCK_ELEMENTS = 1 << 22
"""Largest pool x train block of squared distances held at once (32 MiB in fp64)."""
TIE_ULPS = 64.0
"""Squared distances closer than this many eps x (largest squared norm) are ties."""


def squared_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def min_squared_distances(
    a: np.ndarray, b: np.ndarray, *, block_elements: int = BLOCK_ELEMENTS
) -> np.ndarray:
    """For each row of ``a``, the squared distance to the nearest row of ``b`` (inf if ``b`` is
    empty), without ever holding more than ``block_elements`` pairwise distances."""
    out = np.full(len(a), np.inf)
    if len(a) == 0 or len(b) == 0:
        return out
    sq_a, sq_b = squared_norms(a), squared_norms(b)
    cols = min(len(b), block_elements)
    rows = max(1, block_elements // cols)
    for i in range(0, len(a), rows):
        block = slice(i, i + rows)
        for j in range(0, len(b), cols):
            other = slice(j, j + cols)
            d2 = sq_a[block, None] + sq_b[None, other] - 2.0 * (a[block] @ b[other].T)
            np.minimum(out[block], d2.min(axis=1), out=out[block])
    return np.maximum(out, 0.0)


def _pick(scores: np.ndarray, features: np.ndarray, tol: float) -> int:
    """Index of the largest score; near-ties (within ``tol``) go to the lexicographically
    smallest feature vector, a rule that ignores the order of the rows."""
    best = scores.max()
    ties = np.flatnonzero(scores >= best - tol)
    if len(ties) == 1:
        return int(ties[0])
    return int(ties[np.lexsort(features[ties].T[::-1])[0]])


def max_distance_selection(
    train: np.ndarray,
    pool: np.ndarray,
    n: int,
    *,
    min_distance: float | None = None,
    block_elements: int = BLOCK_ELEMENTS,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedily pick up to ``n`` pool rows, each the farthest from the training rows and the
    earlier picks. Returns (pool indices in pick order, distance of each pick when picked).

    The distances are Euclidean (not squared) and non-increasing. ``n`` may be the pool size
    (a ranking of the whole pool). With ``min_distance`` the selection stops before the first
    pick closer than that. With an empty training set the first pick is the point farthest from
    the pool mean, reported with distance inf (it is infinitely far from nothing).
    """
    pool, train = _as_features(pool, train)
    if not 0 <= n <= len(pool):
        raise InputError(f"cannot select {n} of {len(pool)} pool points")
    sq = squared_norms(pool)
    scale = max(float(sq.max()), float(squared_norms(train).max(initial=0.0)), 1e-300)
    tol = TIE_ULPS * np.finfo(np.float64).eps * scale

    d2 = min_squared_distances(pool, train, block_elements=block_elements)  # -inf: picked
    picks: list[int] = []
    dists: list[float] = []
    while len(picks) < n:
        if not picks and len(train) == 0:  # nothing known yet: start from the outlier
            pick = _pick(squared_norms(pool - pool.mean(axis=0)), pool, tol)
        else:
            pick = _pick(d2, pool, tol)
        dist = float(np.sqrt(max(d2[pick], 0.0)))
        if min_distance is not None and dist < min_distance:
            logger.info(
                "stopping after %d picks: next distance %.4g < %.4g", len(picks), dist, min_distance
            )
            break
        picks.append(pick)
        dists.append(dist)
        # einsum, not BLAS: a matrix-vector product is memory-bound, and multithreaded BLAS
        # gemv slows down by 40x when the cores are busy (e.g. with JAX threads)
        dots = np.einsum("ij,j->i", pool, pool[pick])
        np.minimum(d2, sq + sq[pick] - 2.0 * dots, out=d2)
        d2[pick] = -np.inf
    return np.asarray(picks, dtype=np.int64), np.asarray(dists, dtype=np.float64)


def _as_features(pool, train) -> tuple[np.ndarray, np.ndarray]:
    """Both as fp64 (rows, D); an empty training set may have any shape."""
    pool = np.asarray(pool, dtype=np.float64)
    if pool.ndim != 2 or len(pool) == 0:
        raise ValueError(f"pool features must be a non-empty 2-D array, got shape {pool.shape}")
    train = np.asarray(train, dtype=np.float64)
    if train.size == 0:
        return pool, np.zeros((0, pool.shape[1]))
    if train.ndim != 2 or train.shape[1] != pool.shape[1]:
        raise ValueError(f"training features {train.shape} do not match pool features {pool.shape}")
    return pool, train


def n_before_threshold(distances: np.ndarray, n: int, min_distance: float | None) -> int:
    """How many of a ranking's picks a selection of ``n`` with ``min_distance`` keeps (the
    greedy selection is a prefix of the ranking of the whole pool)."""
    if min_distance is None:
        return min(n, len(distances))
    below = np.flatnonzero(np.asarray(distances) < min_distance)
    return min(n, int(below[0]) if len(below) else len(distances))
