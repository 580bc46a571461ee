"""Dataset statistics that initialise the model's per-element energy shift and scale."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from apax_core.data.structure import Structure, species_index

logger = logging.getLogger(__name__)

RCOND = 1e-8
"""Relative singular-value cut-off of the energy-shift least-squares fit (see energy_shift)."""


def element_counts(structures: Sequence[Structure], elements: Sequence[int]) -> np.ndarray:
    """(S, E) float64: how many atoms of each element every structure has."""
    index = species_index(structures, elements)
    owner = np.repeat(np.arange(len(structures)), [s.n_atoms for s in structures])
    counts = np.zeros((len(structures), len(elements)))
    np.add.at(counts, (owner, index), 1.0)
    return counts


def _energy_system(structures: Sequence[Structure], elements: Sequence[int]):
    """(S, E) element counts and (S,) energies of the structures that have an energy."""
    labelled = [s for s in structures if s.energy is not None]
    return element_counts(labelled, elements), np.array([s.energy for s in labelled])


def energy_shift(structures: Sequence[Structure], elements: Sequence[int]) -> np.ndarray:
    """(E,) per-element reference energies mu with E_total ~= sum_e n_e mu_e (least squares).

    With one element this is the mean energy per atom. Composition directions the data cannot
    resolve (elements always in a fixed ratio, or absent) have singular values below ``RCOND``
    times the largest and are cut: lstsq then returns the minimum-norm solution, which is finite
    and predicts the training energies equally well, instead of an arbitrary huge split.
    Structures without energy are ignored; with none at all the shift is zero.
    """
    counts, energies = _energy_system(structures, elements)
    if not len(energies):
        logger.warning("no energy labels: per-element energy shift set to zero")
        return np.zeros(len(elements))
    shift, *_ = np.linalg.lstsq(counts, energies, rcond=RCOND)
    return shift


def energy_residuals(
    structures: Sequence[Structure], elements: Sequence[int], shift: np.ndarray
) -> np.ndarray:
    """Per-atom energy left after subtracting the per-element ``shift`` (eV/atom), one value
    per structure that has an energy, in order."""
    counts, energies = _energy_system(structures, elements)
    return (energies - counts @ np.asarray(shift)) / counts.sum(axis=1)


def energy_residual_rms(
    structures: Sequence[Structure], elements: Sequence[int], shift: np.ndarray
) -> float:
    """RMS per-atom energy after subtracting ``shift``: an energy scale when forces are absent.

    Falls back to 1.0 when there are no energies or the residual vanishes (a zero scale would
    switch the model off).
    """
    residual = energy_residuals(structures, elements, shift)
    rms = float(np.sqrt(np.mean(residual**2))) if residual.size else 0.0
    return rms if rms > 0 else 1.0


def force_scale(structures: Sequence[Structure], elements: Sequence[int]) -> np.ndarray:
    """(E,) per-element RMS of force components, sqrt(mean F_a^2) over atoms and x, y, z.

    An element with no (or only zero) force labels gets the RMS over all elements; without any
    nonzero forces the scale is 1.0 (a zero scale would switch the model off).
    """
    labelled = [s for s in structures if s.forces is not None]
    scale = np.ones(len(elements))
    if not labelled:
        logger.warning("no force labels: force scale set to 1.0")
        return scale
    index = species_index(labelled, elements)
    sq = np.concatenate([s.forces for s in labelled]) ** 2  # (atoms, 3)
    total = np.bincount(index, weights=sq.sum(axis=1), minlength=len(elements))
    n_components = 3 * np.bincount(index, minlength=len(elements))
    global_rms = float(np.sqrt(sq.mean())) if sq.size else 0.0
    fallback = global_rms if global_rms > 0 else 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        rms = np.sqrt(total / n_components)
    ok = (n_components > 0) & (rms > 0)
    scale[:] = fallback
    scale[ok] = rms[ok]
    return scale
