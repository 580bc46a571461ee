"""Structure of a liquid from MD frames: mass density and partial radial distribution
functions, the observables a researcher checks first (is the density right, is the first
shell where it should be)."""

from __future__ import annotations

from collections.abc import Sequence

import ase
import numpy as np
from ase.neighborlist import neighbor_list

from apax_core.data.liquids import AVOGADRO
from apax_core.errors import InputError
from apax_core.md.image_neighbours import heights


def density(atoms: ase.Atoms) -> float:
    """Mass density in g/cm^3 of a periodic cell."""
    return float(atoms.get_masses().sum() / AVOGADRO / (atoms.get_volume() * 1e-24))


def rdf(
    frames: Sequence[ase.Atoms], a: str, b: str, r_max: float, n_bins: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres in A, g_ab(r)) averaged over ``frames``; ``r_max`` must not exceed half
    the shortest perpendicular cell height (each pair counted once per image within it)."""
    edges = np.linspace(0.0, r_max, n_bins + 1)
    counts, norm = np.zeros(n_bins), 0.0
    for atoms in frames:
        check_rdf_range(atoms, r_max)
        symbols = np.array(atoms.get_chemical_symbols())
        i, j, d = neighbor_list("ijd", atoms, r_max)
        keep = (symbols[i] == a) & (symbols[j] == b)
        counts += np.histogram(d[keep], bins=edges)[0]
        n_a, n_b = np.sum(symbols == a), np.sum(symbols == b)
        pairs = n_a * (n_b - 1) if a == b else n_a * n_b
        norm += pairs / atoms.get_volume()
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    return 0.5 * (edges[1:] + edges[:-1]), counts / (shell * max(norm, 1e-300))


def check_rdf_range(atoms: ase.Atoms, r_max: float) -> None:
    """InputError unless the cell is periodic with heights of at least 2 r_max."""
    if not atoms.pbc.all():
        raise InputError("rdf: needs fully periodic cells")
    half = heights(atoms.cell.array).min() / 2
    if r_max > half + 1e-9:
        raise InputError(
            f"rdf: r_max {r_max} A exceeds half the cell's smallest height ({half:.2f} A)"
        )


def first_peak(r: np.ndarray, g: np.ndarray, r_min: float = 0.0) -> tuple[float, float]:
    """(position in A, height) of the highest maximum of g beyond ``r_min`` (for water's O-O
    first shell the global maximum)."""
    mask = r >= r_min
    k = int(np.argmax(np.where(mask, g, -np.inf)))
    return float(r[k]), float(g[k])
