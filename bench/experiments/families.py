"""Every calibration family fitted on one set and judged on another (issue #25's acceptance).

:func:`family_table` takes raw (uncalibrated) predictions on the calibration set and on a test
set; it fits each family of :mod:`apax_core.calibration_fit` on the first and reports, on the
second, the force mean z^2, miscalibration area, NLL and fraction beyond 3 sigma
(:func:`apax_core.uq.uncertainty_metrics`), for the raw spreads too, plus the family that
``auto`` chooses by held-out NLL. ``isotonic`` is measured offline only (not a product family):
the force variance as a monotone function of the raw sigma, fitted by isotonic regression of
err^2 on sigma. A family *meets* the aim when its z^2 is in [0.5, 2] and its area is at most
min(raw area, 0.08).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy.optimize import isotonic_regression

from apax_core.calibration_fit import chosen_family, force_components
from apax_core.data import Structure
from apax_core.frame_predictions import predict
from apax_core.precision import x64
from apax_core.transforms.calibration import FAMILIES, Calibration
from apax_core.uq import fit_calibration, uncertainty_metrics

Z2_RANGE = (0.5, 2.0)
MAX_AREA = 0.08
KEYS = {"mean_z2_forces": "z2", "miscal_area_forces": "area", "nll_forces": "nll"}
KEYS |= {"tail3_forces": "tail3"}


def raw_predictions(model, structures: Sequence[Structure]) -> list[dict]:
    """``model``'s predictions with uncertainties, its stored calibration left out."""
    raw = dataclasses.replace(model, calibration=Calibration())
    return predict(raw, structures, mode="uncertainty")


def calibrated(preds: list[dict], cal: Calibration, structures: Sequence[Structure]) -> list:
    """Raw ``preds`` with ``cal`` applied (each atom's element from ``structures``)."""
    with x64():
        return [
            {k: np.asarray(v) for k, v in cal.results(p, s.Z).items()}
            for p, s in zip(preds, structures, strict=True)
        ]


def isotonic(cal_preds, cal_s, test_preds, test_s, energy: float) -> list[dict]:
    """Test predictions with force variance = the isotonic (increasing) fit of err^2 against
    raw sigma on the calibration set, interpolated in sigma; energy spreads times ``energy``."""
    comp = force_components(cal_preds, cal_s)
    order = np.argsort(comp.sigma, kind="stable")
    var = isotonic_regression(comp.err[order] ** 2).x
    out = []
    for p in test_preds:
        s = np.interp(p["forces_uncertainty"], comp.sigma[order], var) ** 0.5
        e = energy * p["energy_uncertainty"]
        out.append(p | {"forces_uncertainty": s, "energy_uncertainty": e})
    return out


def scores(preds: list[dict], structures: Sequence[Structure]) -> dict[str, float]:
    m = uncertainty_metrics(preds, structures)
    return {short: m[key] for key, short in KEYS.items()}


def meets(row: dict, raw_area: float) -> bool:
    """z^2 within ``Z2_RANGE`` and area at most min(raw area, ``MAX_AREA``)."""
    low, high = Z2_RANGE
    return low <= row["z2"] <= high and row["area"] <= min(raw_area, MAX_AREA)


def family_table(cal_preds, cal_s, test_preds, test_s) -> dict:
    """Per family (and ``uncalibrated``, ``isotonic``) the test z^2, area, NLL, tail3 and
    whether it meets the aim; ``auto``: the family held-out NLL chooses; its scores."""
    fits = {f: fit_calibration(cal_preds, cal_s, f) for f in FAMILIES}
    held_out = dict(fits["global"].held_out_nll)
    rows = {"uncalibrated": scores(test_preds, test_s)}
    for family, cal in fits.items():
        rows[family] = scores(calibrated(test_preds, cal, test_s), test_s)
    iso = isotonic(cal_preds, cal_s, test_preds, test_s, fits["global"].energy)
    rows["isotonic"] = scores(iso, test_s)
    raw_area = rows["uncalibrated"]["area"]
    for row in rows.values():
        row["meets"] = meets(row, raw_area)
    auto = chosen_family("auto", held_out)
    return {
        "n_calibration": len(cal_s),
        "rows": rows,
        "auto": auto,
        "held_out_nll": held_out,
        "auto_meets": rows[auto]["meets"],
        "any_meets": [f for f in FAMILIES if rows[f]["meets"]],
    }


def model_family_table(model, cal_s, test_s, test_raw: list[dict] | None = None) -> dict:
    """:func:`family_table` of ``model`` (raw test predictions made unless given)."""
    test_raw = raw_predictions(model, test_s) if test_raw is None else test_raw
    table = family_table(raw_predictions(model, cal_s), cal_s, test_raw, test_s)
    return table | {"stored": model.calibration.family}
