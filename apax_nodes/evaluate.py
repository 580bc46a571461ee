"""Errors of a model on labelled data, with parity and (ensembles) reliability plots."""

from __future__ import annotations

from pathlib import Path

import ase
import numpy as np
import pandas as pd
import zntrack

from apax_core.data import DataError, from_atoms
from apax_core.evaluate import error_metrics
from apax_core.frame_predictions import calculator_predictions, predict
from apax_core.plots import parity_png
from apax_core.uq import (
    FORCE_CURVE_COLUMNS,
    force_calibration_curve,
    reliability_diagram,
    uncalibrated,
    uncertainty_metrics,
)
from apax_nodes.errors import one_line_errors


@one_line_errors
class Evaluate(zntrack.Node):
    """Energy/force/stress MAE and RMSE (meV/atom, meV/A, meV/A^3) on ``data``; for ensembles
    also NLL, miscalibration area, mean z^2, the fraction beyond 3 sigma, ENCE and Spearman rho
    of the calibrated uncertainties, the same of the uncalibrated ones (``uncal_`` prefix), and
    the per-element force RMSE-vs-RMV curve (``force_calibration``, ``plots/rmse_vs_rmv.png``)."""

    model: zntrack.Node = zntrack.deps()
    """Our model node, or any node with ``get_calculator()`` (evaluated through ASE)."""
    data: list[ase.Atoms] = zntrack.deps()
    metrics: dict = zntrack.metrics()
    force_parity: pd.DataFrame = zntrack.plots(x="reference", y="predicted", template="scatter")
    force_calibration: pd.DataFrame = zntrack.plots(
        x="rmv_eV_per_A", y=["rmse_eV_per_A", "ideal_eV_per_A"], template="scatter"
    )
    """Calibrated force RMSE (eV/A) against RMV, per element, in 10 equal-count sigma bins;
    ideal on the diagonal (``ideal_eV_per_A``). Empty without an ensemble."""
    plots_dir: Path = zntrack.outs_path(zntrack.nwd / "plots")

    def run(self) -> None:
        frames = self.data
        structures = [from_atoms(a) for a in frames]
        if not structures:
            raise DataError("no structures to evaluate")
        if hasattr(self.model, "get_model"):
            model = self.model.get_model()
            mode = "uncertainty" if model.config.n_members > 1 else "forces"
            preds = predict(model, structures, mode=mode, progress_bar=True)
        else:  # a model of another package: its ASE calculator
            model, preds = None, calculator_predictions(self.model.get_calculator(), frames)
        metrics = error_metrics(preds, structures)
        self.plots_dir.mkdir(parents=True, exist_ok=True)
        curve = None
        if "forces_uncertainty" in preds[0] and "energy_uncertainty" in preds[0]:
            metrics |= uncertainty_metrics(preds, structures)
            reliability_diagram(preds, structures, "forces", self.plots_dir / "reliability")
            curve = force_calibration_curve(preds, structures, self.plots_dir / "rmse_vs_rmv.png")
        self.force_calibration = pd.DataFrame(curve, columns=list(FORCE_CURVE_COLUMNS))
        if model is not None and model.config.n_members > 1:  # also as trained
            raw = uncalibrated(preds, model.calibration, structures)
            raw = uncertainty_metrics(raw, structures)
            metrics |= {f"uncal_{k}": v for k, v in raw.items()}
        self.metrics = {k: float(v) for k, v in metrics.items()}
        ref = np.concatenate([s.forces.ravel() for s in structures])
        pred = np.concatenate([p["forces"].ravel() for p in preds])
        self.force_parity = pd.DataFrame({"reference": ref, "predicted": pred}).round(5)
        title = f"{self.name}: MAE {metrics['forces_mae']:.1f} meV/A"
        parity_png(ref, pred, title, self.plots_dir / "force_parity.png")
