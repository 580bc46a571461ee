"""Uncertainty metrics that see the tails: the fraction of errors beyond 3 sigma and the binned
RMSE-vs-RMV curve (error-based calibration), on errors drawn with known standard deviations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from apax_core.data import Structure
from apax_core.uq import (
    force_calibration_curve,
    force_rmse_vs_rmv,
    rmse_vs_rmv,
    tail_fraction,
    uncertainty_metrics,
)

GAUSSIAN_TAIL3 = 2 * norm.sf(3.0)  # 0.0027


def gaussian_errors(n, scale=1.0, seed=0):
    """(errors, sigma): sigma log-uniform over two decades, errors ~ N(0, (scale sigma)^2)."""
    rng = np.random.default_rng(seed)
    sigma = 10 ** rng.uniform(-2, 0, n)
    return scale * sigma * rng.standard_normal(n), sigma


def test_gaussian_errors_exceed_three_sigma_in_0_27_percent():
    err, sigma = gaussian_errors(1_000_000)
    standard_error = np.sqrt(GAUSSIAN_TAIL3 * (1 - GAUSSIAN_TAIL3) / len(err))
    assert abs(tail_fraction(err, sigma) - GAUSSIAN_TAIL3) < 4 * standard_error
    # heavy tails show where mean z^2 does not: Student t (5) errors scaled to unit variance
    t = np.random.default_rng(1).standard_t(5, len(err)) * np.sqrt(3 / 5)
    assert np.mean(t**2) == pytest.approx(1.0, rel=0.02)
    assert tail_fraction(t * sigma, sigma) > 1.5 * GAUSSIAN_TAIL3


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_rmse_against_rmv_has_the_slope_of_the_error_scale(scale):
    err, sigma = gaussian_errors(1_000_000, scale)
    rmv, rmse = rmse_vs_rmv(err, sigma, n_bins=10)
    assert np.all(np.diff(rmv) > 0) and rmv[-1] > 10 * rmv[0]  # bins span the sigma range
    np.testing.assert_allclose(rmse / rmv, scale, rtol=0.02)


def structures_of_two_elements(n_structures=2000, scale_h=1.0, scale_o=3.0, seed=0):
    """(preds, structures) of H2O-like 3-atom structures whose force errors are Gaussian with
    scale x sigma per element (H: ``scale_h``, O: ``scale_o``); energies calibrated."""
    rng = np.random.default_rng(seed)
    scale = np.array([scale_o, scale_h, scale_h])[:, None]
    preds, structures = [], []
    for _ in range(n_structures):
        sigma_f = 10 ** rng.uniform(-2, 0, (3, 3))
        forces = rng.normal(size=(3, 3))
        energy, sigma_e = rng.normal(), 10 ** rng.uniform(-2, 0)
        structures.append(
            Structure(
                Z=[8, 1, 1],
                positions=np.eye(3),
                cell=np.zeros((3, 3)),
                pbc=[False] * 3,
                energy=energy,
                forces=forces,
            )
        )
        preds.append(
            {
                "energy": energy + sigma_e * rng.standard_normal(),
                "energy_uncertainty": sigma_e,
                "forces": forces + scale * sigma_f * rng.standard_normal((3, 3)),
                "forces_uncertainty": sigma_f,
            }
        )
    return preds, structures


def test_per_element_curves_separate_elements_with_different_error_scales(tmp_path):
    preds, structures = structures_of_two_elements()
    curves = force_rmse_vs_rmv(preds, structures, n_bins=5)
    assert set(curves) == {"H", "O"}
    for element, scale in (("H", 1.0), ("O", 3.0)):
        rmv, rmse = curves[element]
        np.testing.assert_allclose(rmse / rmv, scale, rtol=0.1)
    table = force_calibration_curve(preds, structures, tmp_path / "rmse_vs_rmv.png", n_bins=5)
    assert table["element"] == ["H"] * 5 + ["O"] * 5
    assert table["ideal_eV_per_A"] == table["rmv_eV_per_A"]
    assert (tmp_path / "rmse_vs_rmv.png").stat().st_size > 0


def test_uncertainty_metrics_report_the_tails_of_energy_and_forces():
    preds, structures = structures_of_two_elements(scale_o=1.0)
    metrics = uncertainty_metrics(preds, structures)
    for q in ("energy", "forces"):
        assert metrics[f"tail3_{q}"] < 0.01
        assert metrics[f"ence_{q}"] < 0.15
    wide = uncertainty_metrics(*structures_of_two_elements(scale_o=3.0))
    assert wide["tail3_forces"] > 0.08 and wide["ence_forces"] > 0.3
