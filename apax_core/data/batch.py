"""The padded batch: the one array structure that flows from the data pipeline into models.

Shapes are fixed per batch (B structures, N atom slots, K neighbour slots per atom) and masks
say what is real. Neighbours are dense: row i lists the neighbours of atom i, so sums over
neighbours are reductions over an axis (fast forward and backward) rather than scatters.
Padded atoms have ``Z == 0`` and ``atom_mask == False``; padded neighbour slots have
``pair_mask == False``, ``idx_j == 0`` and a zero offset. A real pair may have ``idx_j == i``
(an atom and its own periodic image in a small cell), so masks, never indices, decide what is
padding.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Batch(NamedTuple):
    """Stacked, padded structures: numpy arrays on the host, jax arrays inside jitted code."""

    Z: np.ndarray
    """(B, N) int32 atomic numbers, 0 for padding."""
    positions: np.ndarray
    """(B, N, 3) float64 Cartesian positions in Angstrom."""
    cell: np.ndarray
    """(B, 3, 3) float64 cell vectors as rows (ASE convention); zeros when not periodic."""
    idx_j: np.ndarray
    """(B, N, K) int32 neighbour atom in slot k of atom i."""
    offsets: np.ndarray
    """(B, N, K, 3) float64 image shift: r_ik = positions[idx_j] - positions[i] + offsets."""
    atom_mask: np.ndarray
    """(B, N) bool, True for real atoms."""
    pair_mask: np.ndarray
    """(B, N, K) bool, True for real neighbour slots."""
    n_atoms: np.ndarray
    """(B,) int32 real atom count per structure (0 for a padding structure)."""
    energy: np.ndarray
    """(B,) float64 reference energy in eV (0 where absent)."""
    forces: np.ndarray
    """(B, N, 3) float64 reference forces in eV/A (0 where absent or padded)."""
    stress: np.ndarray
    """(B, 3, 3) float64 reference stress in eV/A^3, ASE sign convention (0 where absent)."""

    @property
    def structure_mask(self) -> np.ndarray:
        """(B,) bool, True for real structures (a last, short batch is padded with empty ones)."""
        return self.n_atoms > 0


def two_atoms(z: int) -> Batch:
    """One unbatched structure of two atoms of element ``z``, 1 A apart, each the other's only
    neighbour: the smallest input for initialising parameters and tracing shapes."""
    return Batch(
        Z=np.full(2, z, np.int32),
        positions=np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]),
        cell=np.zeros((3, 3)),
        idx_j=np.array([[1], [0]], np.int32),
        offsets=np.zeros((2, 1, 3)),
        atom_mask=np.ones(2, bool),
        pair_mask=np.ones((2, 1), bool),
        n_atoms=np.asarray(2, np.int32),
        energy=np.zeros(()),
        forces=np.zeros((2, 3)),
        stress=np.zeros((3, 3)),
    )
