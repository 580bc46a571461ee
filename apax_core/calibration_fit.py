"""Fitting the calibration families by NLL and choosing one by held-out NLL.

The families are defined in :mod:`apax_core.transforms.calibration`. Each is fitted to the force
components of raw (uncalibrated) predictions by minimising the Gaussian NLL:

- global and per element: closed form, f^2 = mean(err^2 / sigma^2) (over all components, or
  over those of one element);
- power law sigma' = a sigma^b: for fixed b the optimal a^2 = mean(err^2 / sigma^(2b)), which
  leaves a convex 1-D profile NLL in b, minimised by bounded Brent. Per element where an element
  has at least ``MIN_COMPONENTS`` force components, else one (a, b) for every element.

The choice is made by k-fold cross-validation over structures (not components, which are
correlated within a structure): each family is fitted on k-1 folds and scored on the held-out one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

from apax_core.data import Structure
from apax_core.errors import InputError
from apax_core.precision import x64
from apax_core.transforms.calibration import FAMILIES, Calibration, Family

FamilyChoice = Family | Literal["auto"]
MIN_COMPONENTS = 200
"""Force components an element needs for a power law of its own."""
N_FOLDS = 5
EXPONENT_BOUNDS = (0.1, 3.0)
"""Range searched for the power-law exponent b."""
TINY = 1e-12


class ForceComponents(NamedTuple):
    """Every labelled force component, flat: error and raw sigma (eV/A), element, structure."""

    err: np.ndarray
    sigma: np.ndarray
    Z: np.ndarray
    structure: np.ndarray

    def take(self, mask: np.ndarray) -> ForceComponents:
        return ForceComponents(*(v[mask] for v in self))


def force_components(preds: Sequence[dict], structures: Sequence[Structure]) -> ForceComponents:
    """The force components of every structure with force labels and force spreads."""
    rows = [
        (p["forces"] - s.forces, p["forces_uncertainty"], np.repeat(s.Z[:, None], 3, 1), i)
        for i, (p, s) in enumerate(zip(preds, structures, strict=True))
        if s.forces is not None and "forces_uncertainty" in p
    ]
    if not rows:
        raise InputError("calibration: no structure has force labels and force uncertainties")
    return ForceComponents(
        np.concatenate([np.ravel(e) for e, *_ in rows]),
        np.concatenate([np.ravel(s) for _, s, *_ in rows]),
        np.concatenate([np.ravel(z) for *_, z, _ in rows]),
        np.concatenate([np.full(np.size(z), i) for *_, z, i in rows]),
    )


def nll_factor(err: np.ndarray, sigma: np.ndarray) -> float:
    """The NLL-optimal factor f of sigma' = f sigma: sqrt(mean(err^2 / sigma^2))."""
    return float(np.sqrt(np.mean(err**2 / np.maximum(sigma, TINY) ** 2)))


def power_law(err: np.ndarray, sigma: np.ndarray) -> tuple[float, float]:
    """NLL-optimal (a, b) of sigma' = a sigma^b, b within ``EXPONENT_BOUNDS``."""
    log_s = np.log(np.maximum(sigma, TINY))
    weights = np.maximum(err**2, TINY**2)

    def log_a(b: float) -> float:  # 0.5 log mean(err^2 sigma^(-2b)), computed in log space
        return 0.5 * (logsumexp(-2.0 * b * log_s, b=weights) - np.log(len(err)))

    def profile(b: float) -> float:  # mean NLL at the optimal a, less constants
        return log_a(b) + b * float(np.mean(log_s))

    b = minimize_scalar(profile, bounds=EXPONENT_BOUNDS, method="bounded").x
    return float(np.exp(log_a(b))), float(b)


def fit_forces(family: Family, comp: ForceComponents) -> Calibration:
    """The force part of ``family`` fitted to ``comp`` (energy factor 1)."""
    f = nll_factor(comp.err, comp.sigma)
    elements = np.unique(comp.Z)
    if family == "global":
        return Calibration(forces=f)
    if family == "per_element":
        entries = [(z, nll_factor(*_of(comp, z)), 1.0) for z in elements]
        return Calibration(forces=f, family=family, elements=tuple(entries))
    shared = power_law(comp.err, comp.sigma)
    entries = [
        (z, *(power_law(*_of(comp, z)) if np.sum(comp.Z == z) >= MIN_COMPONENTS else shared))
        for z in elements
    ]
    return Calibration(forces=f, family=family, elements=tuple(entries))


def _of(comp: ForceComponents, z: int) -> tuple[np.ndarray, np.ndarray]:
    mask = comp.Z == z
    return comp.err[mask], comp.sigma[mask]


def calibrated_nll(cal: Calibration, comp: ForceComponents) -> np.ndarray:
    """Per-component Gaussian NLL of ``comp`` with sigma calibrated by ``cal``'s transform."""
    with x64():
        ratio = cal.force_ratio(comp.sigma[:, None], comp.Z)[:, 0]
    var = np.maximum(comp.sigma * np.asarray(ratio), TINY) ** 2
    return 0.5 * (np.log(2 * np.pi * var) + comp.err**2 / var)


def held_out_nll(comp: ForceComponents, k: int = N_FOLDS, seed: int = 0) -> dict[str, float]:
    """Mean force NLL of each family on structures held out of its fit (k-fold over structures,
    k at most their number); empty with fewer than two structures."""
    ids = np.unique(comp.structure)
    k = min(k, len(ids))
    if k < 2:
        return {}
    rank = np.random.default_rng(seed).permutation(len(ids))  # a random rank per structure
    fold = (rank % k)[np.searchsorted(ids, comp.structure)]
    totals = dict.fromkeys(FAMILIES, 0.0)
    for j in range(k):
        train, test = comp.take(fold != j), comp.take(fold == j)
        for family in FAMILIES:
            totals[family] += float(np.sum(calibrated_nll(fit_forces(family, train), test)))
    return {family: total / len(comp.err) for family, total in totals.items()}


def chosen_family(family: FamilyChoice, scores: dict[str, float]) -> Family:
    """``family`` itself, or for "auto" the one with the lowest held-out NLL (the simpler one,
    in the order of ``FAMILIES``, on a tie; global without scores)."""
    if family not in ("auto", *FAMILIES):
        raise InputError(f"calibration family must be 'auto' or one of {FAMILIES}: {family!r}")
    if family != "auto":
        return family
    return min(scores, key=lambda f: (scores[f], FAMILIES.index(f))) if scores else "global"
