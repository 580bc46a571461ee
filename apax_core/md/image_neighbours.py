"""A jittable neighbour list with explicit periodic images, for any cell and any periodicity.

The engine's jax-md list uses the minimum image, so it needs full periodicity and every height
above 2 (r_max + skin). This list has neither limit. Atom i holds K slots, each a neighbour j
(N marks an empty slot, as in jax-md's Dense format) and an integer image shift n, with

    r_ij = (s_j - s_i + n_ij) @ cell

for unwrapped fractional positions s (N, 3) and lattice vectors as the rows of ``cell`` (ASE;
jax-md's box is the transpose). The cell enters only through ``@ cell``, so the list stays
exact under a changing cell (a barostat) until :func:`needs_rebuild` says otherwise.

A build is brute force on the device: every atom pair, each at its nearest image along the
periodic axes (``-round(s_j - s_i)``, which also folds in any drift of unwrapped positions) plus
every extra shift the cutoff can reach from there: ``floor(cutoff / height + 1/2)`` each way per
periodic axis, none along non-periodic ones, so a cell with every height >= 2 cutoff searches
the minimum image alone. The extra shifts are a static set fixed on the host from the cell, the
cutoff and a margin for a shrinking cell. Pairs within the cutoff are compacted into the K slots
by a cumulative sum. More neighbours than slots, or a cell grown too thin for the static
shifts, set error bits instead of truncating silently.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from apax_core.data.batch import Batch
from apax_core.errors import InputError

OVERFLOW = 1
"""Error bit: some atom had more neighbours than slots (reallocate a larger list)."""
CELL_SHRANK = 2
"""Error bit: the cell became too thin for the static image shifts (rebuild the list fns)."""
BLOCK = 1 << 16
"""Candidate (atom, shift) distances a build evaluates at once: blocks that stay in the CPU's
cache build 3-4x faster than one pass over all rows (bench/image_build_block.py: 864 atoms
8 ms against 25 ms with 2^22, 2048 atoms 42 against 169 ms)."""
MIN_IMAGE_FROM = 6000
"""Atom count from which jax-md's minimum-image list (cell list) rebuilds faster than this
brute force, where it is exact: between 6000 and 12000 water atoms on 2 CPU cores
(``bench/neighbour_rebuild.py``; at 864 atoms this list rebuilds in half jax-md's time)."""


class ImageNeighbours(NamedTuple):
    """Neighbour slots with image shifts; a pytree, so it rides in a jitted loop carry."""

    idx: jax.Array
    """(N, K) int32 neighbour j in slot k of atom i; N marks an empty slot."""
    shift: jax.Array
    """(N, K, 3) int32 image shift: r_ik = (s[idx] - s[i] + shift) @ cell; 0 if empty."""
    reference: jax.Array
    """(N, 3) fractional positions (unwrapped) at the last build."""
    reference_cell: jax.Array
    """(3, 3) cell (rows) at the last build."""
    error: jax.Array
    """() int32 bits OVERFLOW | CELL_SHRANK, kept until the list is reallocated."""
    max_count: jax.Array
    """() int32 most neighbours of one atom over the builds since allocation."""


class ImageListFns(NamedTuple):
    """The host allocation and the jittable update of one list configuration."""

    allocate: Callable
    """(s, cell, extra_capacity=0) -> ImageNeighbours, on the host (sizes K)."""
    update: Callable
    """(nbrs, s, cell) -> ImageNeighbours: the same list, or rebuilt; jittable."""
    count: Callable
    """(s, cell) -> int: the most neighbours of any atom, on the host."""


# ------------------------------------------------------------------------------------ host


def heights(cell: np.ndarray) -> np.ndarray:
    """(3,) perpendicular distances between opposite faces of ``cell`` (3, 3), rows are lattice
    vectors; 0 for a singular cell."""
    volume = abs(np.linalg.det(cell))
    areas = [np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)]
    return np.array([volume / a if a > 0 else 0.0 for a in areas])


def image_shifts(cell: np.ndarray, pbc, cutoff: float, cell_margin: float = 0.0) -> np.ndarray:
    """(S, 3) int32 every shift from a pair's nearest image that ``cutoff`` can reach.

    ``floor(cutoff / ((1 - cell_margin) * height) + 1/2)`` each way along a periodic axis (the
    margin keeps them sufficient while the cell shrinks by that fraction), none along others:
    a fractional pair component at the nearest image is at most 1/2, and at most
    cutoff / height within the cutoff.
    """
    if not 0.0 <= cell_margin < 1.0:
        raise InputError(f"cell_margin must be in [0, 1), got {cell_margin}")
    h = heights(np.asarray(cell, float)) * (1.0 - cell_margin)
    pbc = np.asarray(pbc, bool)
    if np.any(pbc & (h <= 0)):
        raise InputError(f"periodic axes need nonzero heights, got {np.round(h, 3).tolist()} A")
    reach = [math.floor(cutoff / h[a] + 0.5) if pbc[a] else 0 for a in range(3)]
    grid = np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij")
    return np.stack(grid, -1).reshape(-1, 3).astype(np.int32)


def embedding_cell(cell: np.ndarray, pbc) -> np.ndarray:
    """(3, 3) an invertible cell for fractional coordinates: ``cell`` itself, or, where it is
    singular (a molecule's zero cell, a slab without a vector along z), its periodic rows
    completed by orthonormal vectors along the non-periodic axes."""
    cell, pbc = np.array(cell, float), np.asarray(pbc, bool)
    norms = np.prod(np.maximum(np.linalg.norm(cell, axis=1), 1e-300))
    if abs(np.linalg.det(cell)) > 1e-9 * norms:
        return cell
    if not pbc.any():
        return np.eye(3)
    _, _, vt = np.linalg.svd(cell[pbc])
    cell[~pbc] = vt[int(pbc.sum()) :]
    return cell if np.linalg.det(cell) > 0 else cell * np.where(pbc, 1.0, -1.0)[:, None]


def minimum_image_ok(cell: np.ndarray, pbc, cutoff: float) -> bool:
    """Whether jax-md's minimum-image list is exact: periodic along every axis, a right-handed
    cell (its triangular form has a positive diagonal) and every height at least 2 ``cutoff``
    (the list cutoff, r_max + skin)."""
    cell, pbc = np.asarray(cell, float), np.asarray(pbc, bool)
    right_handed = np.linalg.det(cell) > 0
    return bool(pbc.all() and right_handed) and float(heights(cell).min()) >= 2 * cutoff


def recommend(cell: np.ndarray, pbc, n_atoms: int, cutoff: float) -> str:
    """``"minimum_image"`` (jax-md list) where it is exact and the system has at least
    :data:`MIN_IMAGE_FROM` atoms, else ``"images"`` (this module)."""
    big = n_atoms >= MIN_IMAGE_FROM
    return "minimum_image" if big and minimum_image_ok(cell, pbc, cutoff) else "images"


def image_neighbour_list(
    cell: np.ndarray,
    pbc,
    r_max: float,
    skin: float,
    capacity_multiplier: float = 1.25,
    cell_margin: float = 0.0,
) -> ImageListFns:
    """Allocate and update functions for pairs within ``r_max + skin`` (Angstrom).

    The image shifts are fixed here from ``cell`` (3, 3), ``pbc`` (3,) and ``cell_margin``
    (the fraction by which heights may shrink during the run before CELL_SHRANK is set).
    """
    pbc = tuple(bool(p) for p in np.asarray(pbc, bool))
    shifts = image_shifts(cell, pbc, r_max + skin, cell_margin)
    build_fn = jax.jit(
        functools.partial(build, shifts=shifts, pbc=pbc, cutoff=r_max + skin),
        static_argnames="capacity",
    )

    def count(s, cell) -> int:
        return int(build_fn(s, cell, capacity=1).max_count)

    def allocate(s, cell, extra_capacity: int = 0) -> ImageNeighbours:
        capacity = max(1, int(count(s, cell) * capacity_multiplier) + int(extra_capacity))
        return build_fn(s, cell, capacity=capacity)

    update_fn = functools.partial(update, shifts=shifts, pbc=pbc, r_max=r_max, skin=skin)
    return ImageListFns(allocate, update_fn, count)


def error_text(nbrs: ImageNeighbours) -> str | None:
    """None if the list is sound, else what went wrong (host)."""
    code = int(np.asarray(nbrs.error))
    problems = []
    if code & OVERFLOW:
        problems.append(f"an atom has {int(nbrs.max_count)} neighbours, above the capacity")
    if code & CELL_SHRANK:
        problems.append("the cell shrank beyond the image shifts' margin (raise cell_margin)")
    return "; ".join(problems) or None


# ---------------------------------------------------------------------------------- device


def nearest(i, s, pbc) -> jax.Array:
    """(N, 3) int32 shifts n_j with |s_j - s_i + n_j| <= 1/2 along periodic axes, 0 along others."""
    return jnp.where(jnp.asarray(pbc), -jnp.round(s - s[i]), 0.0).astype(jnp.int32)


def _row_mask(i, s, near, cell, shifts, cutoff: float) -> jax.Array:
    """(N * S,) bool: candidate (j, near_j + shift) of atom i within ``cutoff``, i itself
    excluded."""
    f = (s - s[i] + near)[:, None, :] + shifts[None].astype(s.dtype)  # (N, S, 3)
    self_pair = (jnp.arange(s.shape[0]) == i)[:, None] & jnp.all(shifts == 0, axis=-1)
    return ((jnp.sum((f @ cell) ** 2, axis=-1) <= cutoff**2) & ~self_pair).reshape(-1)


def compact(mask: jax.Array, capacity: int) -> tuple[jax.Array, jax.Array]:
    """(K,) positions of the first ``capacity`` True entries of ``mask`` (M,), M where fewer;
    and the number of True entries (may exceed ``capacity``).

    Slot k holds where the running count first reaches k + 1: K binary searches (gathers),
    cheaper than scattering all M candidates.
    """
    running = jnp.cumsum(mask, dtype=jnp.int32)
    wanted = jnp.arange(1, capacity + 1, dtype=jnp.int32)
    found = jnp.searchsorted(running, wanted, method="scan_unrolled").astype(jnp.int32)
    return found, running[-1]


def _row(i, s, cell, shifts, pbc, cutoff: float, capacity: int):
    """Slots of atom i: (idx (K,), shift (K, 3), count ())."""
    n, n_shifts = s.shape[0], shifts.shape[0]
    near = nearest(i, s, pbc)
    found, count = compact(_row_mask(i, s, near, cell, shifts, cutoff), capacity)
    full = found < n * n_shifts
    j = jnp.where(full, found // n_shifts, n)
    image = shifts[found % n_shifts] + near[jnp.minimum(j, n - 1)]
    return j, jnp.where(full[:, None], image, 0), count


def reaches(cell: jax.Array, shifts: np.ndarray, pbc, cutoff: float) -> jax.Array:
    """() bool: the shifts cover ``cutoff`` in ``cell``: (reach + 1/2) height >= cutoff along
    periodic axes."""
    area = jnp.linalg.norm(jnp.cross(jnp.roll(cell, -1, 0), jnp.roll(cell, -2, 0)), axis=-1)
    h = jnp.abs(jnp.linalg.det(cell)) / area
    reach = np.abs(shifts).max(axis=0)
    return jnp.all(~np.asarray(pbc) | ((reach + 0.5) * h >= cutoff))


def build(s, cell, *, shifts, pbc, cutoff: float, capacity: int) -> ImageNeighbours:
    """A fresh list at ``s`` (N, 3) in ``cell`` (3, 3), all pairs within ``cutoff``.

    Rows go through ``lax.map`` in blocks of at most :data:`BLOCK` candidates.
    """
    n, shifts = s.shape[0], np.asarray(shifts)
    row = functools.partial(
        _row, s=s, cell=cell, shifts=jnp.asarray(shifts), pbc=pbc, cutoff=cutoff, capacity=capacity
    )
    block = max(1, min(n, BLOCK // (n * len(shifts))))
    idx, image, count = jax.lax.map(row, jnp.arange(n), batch_size=block)
    max_count = jnp.max(count)
    error = jnp.where(max_count > capacity, OVERFLOW, 0) | jnp.where(
        reaches(cell, shifts, pbc, cutoff), 0, CELL_SHRANK
    )
    return ImageNeighbours(idx, image, s, cell, error.astype(jnp.int32), max_count)


def needs_rebuild(nbrs: ImageNeighbours, s, cell, r_max: float, skin: float) -> jax.Array:
    """() bool: a pair within ``r_max`` at (s, cell) might be missing from the list.

    With u_i = (s_i - s_i^ref) @ cell_ref and M = inv(cell) @ cell_ref, a pair has
    r_ref = r @ M - u_j + u_i, so |r| <= r_max implies |r_ref| <= ||M||_2 r_max + 2 max|u|.
    The list (pairs within r_max + skin at the build) is complete while that bound holds:
    2 max|u| + (||M||_2 - 1) r_max <= skin; for a fixed cell, max|u| <= skin / 2.
    """
    u = (s - nbrs.reference) @ nbrs.reference_cell
    stretch = jnp.linalg.norm(jnp.linalg.solve(cell, nbrs.reference_cell), ord=2)
    return 2.0 * jnp.max(jnp.linalg.norm(u, axis=-1)) + (stretch - 1.0) * r_max > skin


def update(nbrs, s, cell, *, shifts, pbc, r_max: float, skin: float) -> ImageNeighbours:
    """``nbrs`` if still complete at (s, cell), else a list rebuilt there with the same
    capacity (errors and the largest count carry over). Jittable: ``lax.cond``."""

    def rebuild(_):
        new = build(
            s, cell, shifts=shifts, pbc=pbc, cutoff=r_max + skin, capacity=nbrs.idx.shape[1]
        )
        return new._replace(
            error=new.error | nbrs.error, max_count=jnp.maximum(new.max_count, nbrs.max_count)
        )

    return jax.lax.cond(needs_rebuild(nbrs, s, cell, r_max, skin), rebuild, lambda _: nbrs, None)


def offsets(nbrs: ImageNeighbours, cell) -> jax.Array:
    """(N, K, 3) Cartesian image offsets ``shift @ cell``, 0 in empty slots (Batch.offsets)."""
    full = nbrs.idx < nbrs.idx.shape[0]
    return jnp.where(full[..., None], nbrs.shift.astype(cell.dtype) @ cell, 0.0)


def pair_vectors(nbrs: ImageNeighbours, s, cell) -> jax.Array:
    """(N, K, 3) r_ik = (s_j - s_i + n_ik) @ cell in Angstrom, 0 in empty slots."""
    j = jnp.minimum(nbrs.idx, s.shape[0] - 1)
    full = nbrs.idx < s.shape[0]
    return jnp.where(full[..., None], (s[j] - s[:, None, :]) @ cell, 0.0) + offsets(nbrs, cell)


def structure_with_images(s, nbrs: ImageNeighbours, Z, cell, periodic: bool = True) -> Batch:
    """A one-structure Batch from fractional ``s`` (N, 3) and the list, as
    ``model_adapter.structure``: the gradient with respect to ``s`` of an energy of it is the
    Cartesian gradient (``space.transform``). ``Batch.cell`` is ``cell``, or zeros if not
    ``periodic`` (a molecule in its embedding cell)."""
    from apax_core.md.jax_md_parts import space  # here: a Train stage needs no jax-md

    n = s.shape[0]
    mask = nbrs.idx < n
    return Batch(
        Z=Z,
        positions=space.transform(cell.T, s),
        cell=cell if periodic else jnp.zeros_like(cell),
        idx_j=jnp.where(mask, nbrs.idx, 0),
        offsets=offsets(nbrs, cell),
        atom_mask=jnp.ones(n, bool),
        pair_mask=mask,
        n_atoms=jnp.asarray(n, jnp.int32),
        energy=jnp.zeros((), s.dtype),
        forces=jnp.zeros_like(s),
        stress=jnp.zeros((3, 3), s.dtype),
    )
