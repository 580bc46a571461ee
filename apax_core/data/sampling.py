"""Structure generation and splitting: perturbed copies of seeds, random partitions."""

from __future__ import annotations

from collections.abc import Sequence

import ase
import numpy as np

from apax_core.data.io import DataError
from apax_core.errors import InputError


def perturbed(
    atoms: ase.Atoms, rng: np.random.Generator, rattle: float, strain: float
) -> ase.Atoms:
    """A copy with a random symmetric strain (|e_ij| <= strain, periodic cells only) and
    Gaussian displacements of standard deviation ``rattle`` (A); no calculator."""
    out = atoms.copy()
    out.calc = None
    if out.pbc.any() and strain > 0:
        e = rng.uniform(-strain, strain, size=(3, 3))
        out.set_cell(out.cell.array @ (np.eye(3) + 0.5 * (e + e.T)), scale_atoms=True)
    out.positions += rng.normal(scale=rattle, size=out.positions.shape)
    return out


def bootstrap(
    seeds: Sequence[ase.Atoms], n: int, rattle: float, strain: float, seed: int
) -> list[ase.Atoms]:
    """``n`` perturbed copies of ``seeds`` (cycled), a pure function of ``seed``."""
    if not seeds:
        raise DataError("no input structures to bootstrap from")
    rng = np.random.default_rng(seed)
    return [perturbed(seeds[k % len(seeds)], rng, rattle, strain) for k in range(n)]


def split_indices(n: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """A random partition of ``range(n)`` into parts of ``floor(f * n)`` indices for all but the
    last fraction; the last part takes the rest. Fractions are non-negative and sum to 1."""
    f = np.asarray(fractions, dtype=float)
    if f.ndim != 1 or len(f) < 2 or np.any(f < 0) or not np.isclose(f.sum(), 1.0):
        raise InputError(f"fractions must be non-negative numbers summing to 1, got {fractions}")
    order = np.random.default_rng(seed).permutation(n)
    sizes = np.floor(f[:-1] * n).astype(int)
    return np.split(order, np.cumsum(sizes))
