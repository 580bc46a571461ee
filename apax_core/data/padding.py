"""Pad sizes and collation: turn variable-size structures into one fixed-shape Batch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from apax_core.data.batch import Batch
from apax_core.data.neighbours import NeighbourList
from apax_core.data.structure import Structure

if TYPE_CHECKING:  # the data package reads padding by its ``kind``; no runtime config import
    from apax_core.config import PadBinned, PadToMax


def _round_up(n: int, multiple: int) -> int:
    """Smallest positive multiple of ``multiple`` that is >= n (one bin for n == 0)."""
    return max(1, math.ceil(n / multiple)) * multiple


def pad_sizes(
    n_atoms: Sequence[int], n_neighbours: Sequence[int], padding: PadToMax | PadBinned
) -> tuple[int, int]:
    """Atom and neighbour slot counts (N, K) for structures with the given maxima.

    PadToMax: the maximum, neighbours rounded up to a multiple of ``neighbour_bin`` (call it
    with the whole dataset for a single compiled shape).
    PadBinned: the maximum rounded up to a multiple of ``atom_bin`` / ``neighbour_bin`` (call it
    per batch; mixed sizes then compile a handful of shapes). Both are at least 1, so no array
    has a zero-length axis even for isolated atoms without neighbours.
    """
    kind = getattr(padding, "kind", None)
    if kind == "max":
        n, k = max_sizes(n_atoms, n_neighbours)
        return n, _round_up(k, padding.neighbour_bin)
    if kind == "binned":
        n, k = max_sizes(n_atoms, n_neighbours)
        return _round_up(n, padding.atom_bin), _round_up(k, padding.neighbour_bin)
    raise TypeError(f"unknown padding {padding!r}")


def max_sizes(n_atoms: Sequence[int], n_neighbours: Sequence[int]) -> tuple[int, int]:
    """(N, K): the largest atom and per-atom neighbour counts, at least 1 each."""
    if len(n_atoms) == 0 or len(n_neighbours) == 0:
        raise ValueError("pad sizes need at least one structure")
    return max(1, int(max(n_atoms))), max(1, int(max(n_neighbours)))


def _empty_batch(b: int, n: int, k: int) -> Batch:
    """All-padding batch: zeros everywhere, every mask False."""
    return Batch(
        Z=np.zeros((b, n), np.int32),
        positions=np.zeros((b, n, 3)),
        cell=np.zeros((b, 3, 3)),
        idx_j=np.zeros((b, n, k), np.int32),
        offsets=np.zeros((b, n, k, 3)),
        atom_mask=np.zeros((b, n), bool),
        pair_mask=np.zeros((b, n, k), bool),
        n_atoms=np.zeros(b, np.int32),
        energy=np.zeros(b),
        forces=np.zeros((b, n, 3)),
        stress=np.zeros((b, 3, 3)),
    )


def collate(
    structures: Sequence[Structure],
    nls: Sequence[NeighbourList],
    n_atoms_pad: int,
    n_neighbours_pad: int,
    batch_size: int | None = None,
) -> Batch:
    """Stack structures and their neighbour lists into a Batch of shape (B, N, K).

    B is ``batch_size`` if given (missing rows are empty padding structures with n_atoms 0, so
    the last short batch keeps the compiled shape), else ``len(structures)``. Padding follows
    the Batch contract: Z 0, idx 0, zero offsets, masks False; absent labels are 0.
    """
    if len(structures) != len(nls):
        raise ValueError(f"{len(structures)} structures but {len(nls)} neighbour lists")
    b = len(structures) if batch_size is None else batch_size
    if b < len(structures):
        raise ValueError(f"batch_size {batch_size} < {len(structures)} structures")
    out = _empty_batch(b, n_atoms_pad, n_neighbours_pad)
    for k, (s, nl) in enumerate(zip(structures, nls, strict=True)):
        n, m = s.n_atoms, nl.max_neighbours(s.n_atoms)
        if n > n_atoms_pad or m > n_neighbours_pad:
            raise ValueError(
                f"structure {k} ({n} atoms, up to {m} neighbours) exceeds pad sizes "
                f"({n_atoms_pad} atoms, {n_neighbours_pad} neighbours)"
            )
        slot = nl.slots(n)
        out.Z[k, :n] = s.Z
        out.positions[k, :n] = s.positions
        out.cell[k] = s.cell
        out.idx_j[k, nl.idx_i, slot] = nl.idx_j
        out.offsets[k, nl.idx_i, slot] = nl.offsets
        out.atom_mask[k, :n] = True
        out.pair_mask[k, nl.idx_i, slot] = True
        out.n_atoms[k] = n
        if s.energy is not None:
            out.energy[k] = s.energy
        if s.forces is not None:
            out.forces[k, :n] = s.forces
        if s.stress is not None:
            out.stress[k] = s.stress
    return out
