"""Errors of a model on labelled data, with parity and (ensembles) reliability plots."""

from __future__ import annotations

from pathlib import Path

import ase
import numpy as np
import pandas as pd
import zntrack

from apax_core.data import from_atoms
from apax_core.evaluate import error_metrics
from apax_core.plots import parity_png
from apax_core.predict import predict
from apax_core.uq import reliability_diagram, uncertainty_metrics


class Evaluate(zntrack.Node):
    """Energy/force/stress MAE and RMSE (meV/atom, meV/A, meV/A^3) on ``data``; for ensembles
    also NLL, miscalibration area and Spearman rho of the (calibrated) uncertainties."""

    model: zntrack.Node = zntrack.deps()
    data: list[ase.Atoms] = zntrack.deps()
    metrics: dict = zntrack.metrics()
    force_parity: pd.DataFrame = zntrack.plots(x="reference", y="predicted", template="scatter")
    plots_dir: Path = zntrack.outs_path(zntrack.nwd / "plots")

    def run(self) -> None:
        model = self.model.get_model()
        structures = [from_atoms(a) for a in self.data]
        if not structures:
            raise ValueError(f"{self.name}: no structures to evaluate")
        ensemble = model.config.n_members > 1
        mode = "uncertainty" if ensemble else "forces"
        preds = predict(model, structures, mode=mode, progress=True)
        metrics = error_metrics(preds, structures)
        self.plots_dir.mkdir(parents=True, exist_ok=True)
        if ensemble:
            metrics |= uncertainty_metrics(preds, structures)
            reliability_diagram(preds, structures, "forces", self.plots_dir / "reliability")
        self.metrics = {k: float(v) for k, v in metrics.items()}
        ref = np.concatenate([s.forces.ravel() for s in structures])
        pred = np.concatenate([p["forces"].ravel() for p in preds])
        self.force_parity = pd.DataFrame({"reference": ref, "predicted": pred}).round(5)
        title = f"{self.name}: MAE {metrics['forces_mae']:.1f} meV/A"
        parity_png(ref, pred, title, self.plots_dir / "force_parity.png")
