"""Molecular liquids from scratch: rigid copies of a molecule, randomly placed and rotated in a
cubic periodic box of a given density, with no two molecules closer than a set distance."""

from __future__ import annotations

import ase
import numpy as np
from ase.build import molecule as ase_molecule
from scipy.spatial.transform import Rotation

from apax_core.errors import InputError

AVOGADRO = 6.02214076e23
MAX_TRIES = 1000
"""Random placements tried per molecule before the box is declared too dense."""


def box_length(template: ase.Atoms, n_molecules: int, density: float) -> float:
    """Edge (A) of the cubic box holding ``n_molecules`` copies at ``density`` (g/cm^3)."""
    grams = n_molecules * template.get_masses().sum() / AVOGADRO
    return (grams / density * 1e24) ** (1.0 / 3.0)


def _min_image_distance(a: np.ndarray, b: np.ndarray, length: float) -> float:
    d = a[:, None, :] - b[None, :, :]
    d -= length * np.round(d / length)
    return float(np.sqrt((d**2).sum(-1)).min())


def molecular_box(
    molecule: str | ase.Atoms,
    n_molecules: int,
    density: float,
    seed: int = 0,
    min_distance: float = 1.8,
) -> ase.Atoms:
    """``n_molecules`` copies of ``molecule`` (an ``ase.build.molecule`` name or Atoms) at
    ``density`` (g/cm^3) in a cubic periodic box; atoms of different molecules (and periodic
    images) at least ``min_distance`` (A) apart. A pure function of ``seed``; molecules stay
    whole (unwrapped), in order, so atom k of molecule m is atom m * len(molecule) + k."""
    if n_molecules < 1 or density <= 0 or min_distance < 0:
        raise InputError(
            f"molecular_box: n_molecules >= 1, density > 0 (g/cm^3) and min_distance >= 0 (A) "
            f"needed, got {n_molecules}, {density}, {min_distance}"
        )
    template = ase_molecule(molecule) if isinstance(molecule, str) else molecule.copy()
    body = template.positions - template.get_center_of_mass()
    length = box_length(template, n_molecules, density)
    rng = np.random.default_rng(seed)
    placed: list[np.ndarray] = []
    for m in range(n_molecules):
        for _ in range(MAX_TRIES):
            trial = rng.uniform(0, length, 3) + Rotation.random(random_state=rng).apply(body)
            if all(_min_image_distance(trial, p, length) >= min_distance for p in placed):
                placed.append(trial)
                break
        else:
            raise InputError(
                f"molecular_box: no room for molecule {m + 1} of {n_molecules} at {density} "
                f"g/cm^3 with min_distance {min_distance} A; lower one of them"
            )
    symbols = template.get_chemical_symbols() * n_molecules
    return ase.Atoms(symbols, np.concatenate(placed), cell=[length] * 3, pbc=True)
