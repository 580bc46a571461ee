"""Full neighbour lists with explicit periodic image shifts, computed on the host with vesin."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import vesin

from apax_core.data.structure import Structure


class NeighbourList(NamedTuple):
    """All ordered pairs (i, j, image) with |r_ij| <= cutoff; r_ij = R[j] - R[i] + offsets."""

    idx_i: np.ndarray
    """(P,) int32 centre atom."""
    idx_j: np.ndarray
    """(P,) int32 neighbour atom."""
    offsets: np.ndarray
    """(P, 3) float64 Cartesian image shift (integer shift times cell)."""

    @property
    def n_pairs(self) -> int:
        return len(self.idx_i)

    def max_neighbours(self, n_atoms: int) -> int:
        """The largest number of neighbours of any atom (the dense layout's slot count)."""
        return int(np.bincount(self.idx_i, minlength=n_atoms).max(initial=0))

    def slots(self, n_atoms: int) -> np.ndarray:
        """Slot of each pair in its centre atom's row (pairs are sorted by centre)."""
        start = np.concatenate([[0], np.cumsum(np.bincount(self.idx_i, minlength=n_atoms))])
        return np.arange(self.n_pairs) - start[self.idx_i]


def neighbour_list(structure: Structure, cutoff: float) -> NeighbourList:
    """Full (both directions) neighbour list of ``structure`` within ``cutoff``.

    Works for cells smaller than twice the cutoff (an atom then pairs with its own images:
    ``i == j`` with a nonzero shift is a real pair), per-axis periodicity, and non-periodic
    structures (zero box). Pairs are sorted by (i, j, shift) so the result is deterministic.
    """
    if not cutoff > 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    pbc = structure.pbc
    box = structure.cell if pbc.any() else np.zeros((3, 3))
    calc = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, shifts = calc.compute(
        points=structure.positions, box=box, periodic=pbc.tolist(), quantities="ijS"
    )
    shifts = np.asarray(shifts, dtype=np.int64).reshape(-1, 3)
    order = np.argsort(_sort_key(np.asarray(i), np.asarray(j), shifts, structure.n_atoms))
    shifts = shifts[order]
    return NeighbourList(
        idx_i=np.asarray(i, dtype=np.int32)[order],
        idx_j=np.asarray(j, dtype=np.int32)[order],
        offsets=shifts.astype(np.float64) @ structure.cell,
    )


def _sort_key(i, j, shifts, n_atoms: int) -> np.ndarray:
    """One integer per pair ordering by (i, j, shift): a single argsort instead of a lexsort."""
    if len(i) == 0:
        return np.zeros(0, dtype=np.int64)
    low = shifts.min(axis=0)
    span = shifts.max(axis=0) - low + 1
    return np.ravel_multi_index((i, j, *(shifts - low).T), (n_atoms, n_atoms, *span))
