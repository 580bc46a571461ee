"""Post-hoc calibration of ensemble uncertainties and metrics of their quality.

All uncertainties are standard deviations. The calibration minimises the Gaussian NLL of the
validation errors in one of the families of :mod:`apax_core.transforms.calibration` (the global
factor has the closed form f^2 = mean(err^2/sigma^2)); fitting and the held-out choice of family
are in :mod:`apax_core.calibration_fit`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols
from scipy.special import erfinv
from scipy.stats import spearmanr

from apax_core.calibration_fit import (
    FamilyChoice,
    chosen_family,
    fit_forces,
    force_components,
    held_out_nll,
    nll_factor,
)
from apax_core.data import Structure
from apax_core.errors import InputError
from apax_core.frame_predictions import predict
from apax_core.model_dir import Model
from apax_core.plots import reliability_png, rmse_vs_rmv_png, write_csv
from apax_core.precision import x64
from apax_core.residuals import errors_and_sigmas
from apax_core.transforms import Calibration


def fit_calibration(
    preds: list[dict], structures: Sequence[Structure], family: FamilyChoice = "global"
) -> Calibration:
    """The NLL-optimal calibration of raw ``preds`` in ``family`` ("auto": the family with the
    lowest held-out force NLL), with every family's held-out score recorded in it."""
    e, s = errors_and_sigmas(preds, structures, "energy")
    comp = force_components(preds, structures)
    scores = held_out_nll(comp)
    fitted = fit_forces(chosen_family(family, scores), comp)
    energy = nll_factor(e, s) if len(e) else 1.0  # no energy labels: spreads left as they are
    return dataclasses.replace(fitted, energy=energy, held_out_nll=tuple(scores.items()))


def calibrate_model(
    model: Model,
    structures: Sequence[Structure],
    batch_size: int = 16,
    family: FamilyChoice = "global",
) -> Model:
    """``model`` with its calibration refitted on (validation) ``structures``, fitted to its
    raw predictions (the stored calibration is replaced, not composed)."""
    if model.config.n_members < 2:
        raise InputError("calibration needs an ensemble model (config.model.ensemble)")
    raw = dataclasses.replace(model, calibration=Calibration())
    preds = predict(raw, structures, mode="uncertainty", batch_size=batch_size)
    return dataclasses.replace(model, calibration=fit_calibration(preds, structures, family))


def uncalibrated(
    preds: list[dict], calibration: Calibration, structures: Sequence[Structure] | None = None
) -> list[dict]:
    """``preds`` made with ``calibration`` as they were before it (its inverse applied; means
    are never changed by a calibration). A per-element or power calibration needs the
    ``structures`` for each atom's element."""
    if calibration.elements and structures is None:
        raise ValueError(f"uncalibrated: a {calibration.family!r} calibration needs structures")
    numbers = [None] * len(preds) if structures is None else [s.Z for s in structures]
    inverse = calibration.inverse()
    with x64():
        return [
            {k: np.asarray(v) for k, v in inverse.results(p, z).items()}
            for p, z in zip(preds, numbers, strict=True)
        ]


def gaussian_nll(err, sigma) -> float:
    var = np.maximum(sigma, 1e-12) ** 2
    return float(np.mean(0.5 * (np.log(2 * np.pi * var) + err**2 / var)))


def coverage_curve(err, sigma, n_levels: int = 99):
    """Expected vs observed fraction of errors inside central Gaussian intervals."""
    expected = np.linspace(0.01, 0.99, n_levels)
    z = np.sqrt(2.0) * erfinv(expected)  # half-width of the central interval, in sigmas
    observed = np.array([np.mean(np.abs(err) <= q * sigma) for q in z])
    return expected, observed


def miscalibration_area(err, sigma) -> float:
    """Mean |observed - expected| coverage over levels in (0, 1): 0 is perfectly calibrated."""
    expected, observed = coverage_curve(err, sigma)
    return float(np.mean(np.abs(observed - expected)))


def tail_fraction(err, sigma, k: float = 3.0) -> float:
    """Fraction of errors beyond ``k`` sigma (0.27 % for Gaussian errors at k = 3). Mean z^2
    and coverage are set by the bulk; this counts the confident large errors directly."""
    return float(np.mean(np.abs(err) > k * sigma))


def rmse_vs_rmv(err, sigma, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Error-based calibration (Levi et al. 2022): the entries sorted by sigma into ``n_bins``
    equal-count bins; per bin the root mean variance sqrt(mean sigma^2) and the RMSE, both
    (n_bins,) in the unit of ``err``. Calibrated: RMSE = RMV in every bin (the diagonal)."""
    bins = np.array_split(np.argsort(sigma, kind="stable"), max(1, min(n_bins, len(sigma))))
    rmv = np.array([np.sqrt(np.mean(sigma[b] ** 2)) for b in bins])
    return rmv, np.array([np.sqrt(np.mean(err[b] ** 2)) for b in bins])


def ence(err, sigma, n_bins: int = 10) -> float:
    """Expected normalised calibration error: mean over the bins of :func:`rmse_vs_rmv` of
    |RMV - RMSE| / RMV; 0 is calibrated, 1 means errors twice (or zero times) sigma."""
    rmv, rmse = rmse_vs_rmv(err, sigma, n_bins)
    return float(np.mean(np.abs(rmv - rmse) / np.maximum(rmv, 1e-12)))


def force_species(preds: Sequence[dict], structures: Sequence[Structure]) -> np.ndarray:
    """Atomic number of each force component, in the order of ``errors_and_sigmas(...,
    "forces")`` (structures with force labels and predicted forces)."""
    pairs = zip(preds, structures, strict=True)
    z = [np.repeat(s.Z, 3) for p, s in pairs if s.forces is not None and "forces" in p]
    return np.concatenate(z) if z else np.zeros(0, np.int32)


def force_rmse_vs_rmv(preds, structures, n_bins: int = 10) -> dict[str, tuple]:
    """:func:`rmse_vs_rmv` of the force components of each element, by its symbol: force
    errors differ in scale between species, which one global curve averages away."""
    e, s = errors_and_sigmas(preds, structures, "forces")
    z = force_species(preds, structures)
    return {chemical_symbols[n]: rmse_vs_rmv(e[z == n], s[z == n], n_bins) for n in np.unique(z)}


def per_structure_forces(preds, structures):
    """Per-structure force RMSE and RMS predicted force uncertainty."""
    rmse = [
        np.sqrt(np.mean((p["forces"] - s.forces) ** 2))
        for p, s in zip(preds, structures, strict=True)
    ]
    unc = [np.sqrt(np.mean(p["forces_uncertainty"] ** 2)) for p in preds]
    return np.array(rmse), np.array(unc)


def uncertainty_metrics(preds: list[dict], structures: Sequence[Structure]) -> dict[str, float]:
    """NLL, miscalibration area, mean squared z-score, the fraction beyond 3 sigma
    (``tail3_``), ENCE (``ence_``) and Spearman rho of |error| vs sigma; energies per structure
    (per atom), forces per component."""
    out = {}
    for q in ("energy", "forces"):
        e, s = errors_and_sigmas(preds, structures, q)
        out[f"nll_{q}"] = gaussian_nll(e, s)
        out[f"miscal_area_{q}"] = miscalibration_area(e, s)
        out[f"mean_z2_{q}"] = float(np.mean(e**2 / np.maximum(s, 1e-12) ** 2))
        out[f"tail3_{q}"] = tail_fraction(e, s)
        out[f"ence_{q}"] = ence(e, s)
        out[f"spearman_{q}_per_{'structure' if q == 'energy' else 'atom'}"] = float(
            spearmanr(np.abs(e), s).statistic
        )
    rmse, unc = per_structure_forces(preds, structures)
    out["spearman_forces"] = float(spearmanr(rmse, unc).statistic)
    return out


def reliability_diagram(preds, structures, quantity: str, path_stem: Path) -> list[Path]:
    """Coverage curve of ``quantity`` as CSV (for dvc plots) and PNG."""
    e, s = errors_and_sigmas(preds, structures, quantity)
    expected, observed = coverage_curve(e, s)
    rows = zip(expected.round(4), observed.round(4), strict=True)
    title = f"{quantity}: miscalibration area {miscalibration_area(e, s):.3f}"
    return [
        write_csv(path_stem.with_suffix(".csv"), ["expected", "observed"], rows),
        reliability_png(expected, observed, title, path_stem.with_suffix(".png")),
    ]


FORCE_CURVE_COLUMNS = ("element", "rmv_eV_per_A", "rmse_eV_per_A", "ideal_eV_per_A")
"""Columns of :func:`force_calibration_curve`'s table (ideal = rmv: the diagonal)."""


def force_calibration_curve(preds, structures, path: Path, n_bins: int = 10) -> dict[str, list]:
    """Per-element force RMSE against RMV (:func:`force_rmse_vs_rmv`) as a PNG at ``path``,
    and as the :data:`FORCE_CURVE_COLUMNS` of a dvc plots table, which it returns."""
    curves = force_rmse_vs_rmv(preds, structures, n_bins)
    e, s = errors_and_sigmas(preds, structures, "forces")
    rmse_vs_rmv_png(curves, f"forces: ENCE {ence(e, s, n_bins):.3f}", path)
    table = {c: [] for c in FORCE_CURVE_COLUMNS}
    for element, (rmv, rmse) in curves.items():
        table["element"] += [element] * len(rmv)
        table["rmv_eV_per_A"] += list(rmv.round(6))
        table["rmse_eV_per_A"] += list(rmse.round(6))
        table["ideal_eV_per_A"] += list(rmv.round(6))
    return table
