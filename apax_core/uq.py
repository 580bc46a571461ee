"""Post-hoc calibration of ensemble uncertainties and metrics of their quality.

All uncertainties are standard deviations. The calibration factors minimise the Gaussian NLL of
the validation errors under sigma -> f sigma, which has the closed form f^2 = mean(err^2/sigma^2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.special import erfinv
from scipy.stats import spearmanr

from apax_core.data import Structure
from apax_core.errors import InputError
from apax_core.frame_predictions import predict
from apax_core.model_dir import Model
from apax_core.plots import reliability_png, write_csv
from apax_core.residuals import errors_and_sigmas
from apax_core.transforms import Calibration


def fit_calibration(preds: list[dict], structures: Sequence[Structure]) -> Calibration:
    """Factors that minimise the NLL of ``preds`` (relative to the factors they were made with)."""

    def factor(q):
        e, s = errors_and_sigmas(preds, structures, q)
        return float(np.sqrt(np.mean(e**2 / np.maximum(s, 1e-12) ** 2)))

    return Calibration(energy=factor("energy"), forces=factor("forces"))


def calibrate_model(model: Model, structures: Sequence[Structure], batch_size: int = 16) -> Model:
    """``model`` with its calibration refitted on (validation) ``structures``: the new factors
    are fitted to its calibrated predictions and composed with the stored ones."""
    if model.config.n_members < 2:
        raise InputError("calibration needs an ensemble model (config.model.ensemble)")
    preds = predict(model, structures, mode="uncertainty", batch_size=batch_size)
    fitted = model.calibration * fit_calibration(preds, structures)
    return dataclasses.replace(model, calibration=fitted)


def uncalibrated(preds: list[dict], calibration: Calibration) -> list[dict]:
    """``preds`` made with ``calibration`` as they were before it (spreads divided by its
    factors; means are never changed by a calibration)."""
    inverse = Calibration(1.0 / calibration.energy, 1.0 / calibration.forces)
    return [{k: np.asarray(v) for k, v in inverse.results(p).items()} for p in preds]


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


def per_structure_forces(preds, structures):
    """Per-structure force RMSE and RMS predicted force uncertainty."""
    rmse = [
        np.sqrt(np.mean((p["forces"] - s.forces) ** 2))
        for p, s in zip(preds, structures, strict=True)
    ]
    unc = [np.sqrt(np.mean(p["forces_uncertainty"] ** 2)) for p in preds]
    return np.array(rmse), np.array(unc)


def uncertainty_metrics(preds: list[dict], structures: Sequence[Structure]) -> dict[str, float]:
    """NLL, miscalibration area, mean squared z-score and Spearman rho of |error| vs sigma."""
    out = {}
    for q in ("energy", "forces"):
        e, s = errors_and_sigmas(preds, structures, q)
        out[f"nll_{q}"] = gaussian_nll(e, s)
        out[f"miscal_area_{q}"] = miscalibration_area(e, s)
        out[f"mean_z2_{q}"] = float(np.mean(e**2 / np.maximum(s, 1e-12) ** 2))
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
