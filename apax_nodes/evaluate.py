"""Errors of a model on labelled data, with parity and (ensembles) reliability plots."""

from __future__ import annotations

from pathlib import Path

import ase
import numpy as np
import pandas as pd
import zntrack

from apax_core.data import from_atoms
from apax_core.evaluate import error_metrics
from apax_core.predict import predict
from apax_core.uq import reliability_diagram, uncertainty_metrics


def parity_png(reference: np.ndarray, predicted: np.ndarray, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(reference, predicted, s=2, alpha=0.4)
    lo, hi = (
        float(min(reference.min(), predicted.min())),
        float(max(reference.max(), predicted.max())),
    )
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set(xlabel="reference force (eV/A)", ylabel="predicted force (eV/A)", title=title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


class Evaluate(zntrack.Node):
    """Energy/force/stress MAE and RMSE (meV/atom, meV/A, meV/A^3) on ``data``; for ensembles
    also NLL, miscalibration area and Spearman rho of the (calibrated) uncertainties."""

    model: zntrack.Node = zntrack.deps()
    data: list[ase.Atoms] = zntrack.deps()
    metrics: dict = zntrack.metrics()
    force_parity: pd.DataFrame = zntrack.plots(x="reference", y="predicted",
                                               template="scatter")  # fmt: skip
    plots_dir: Path = zntrack.outs_path(zntrack.nwd / "plots")

    def run(self) -> None:
        model = self.model.get_model()
        structures = [from_atoms(a) for a in self.data]
        if not structures:
            raise ValueError(f"{self.name}: no structures to evaluate")
        ensemble = model.config.ensemble is not None
        preds = predict(model, structures, uncertainty=ensemble, progress=True)
        metrics = error_metrics(preds, structures)
        self.plots_dir.mkdir(parents=True, exist_ok=True)
        if ensemble:
            metrics |= uncertainty_metrics(preds, structures)
            reliability_diagram(preds, structures, "forces", self.plots_dir / "reliability")
        self.metrics = {k: float(v) for k, v in metrics.items()}
        ref = np.concatenate([s.forces.ravel() for s in structures])
        pred = np.concatenate([p["forces"].ravel() for p in preds])
        self.force_parity = pd.DataFrame({"reference": ref, "predicted": pred}).round(5)
        parity_png(ref, pred, f"{self.name}: MAE {metrics['forces_mae']:.1f} meV/A",
                   self.plots_dir / "force_parity.png")  # fmt: skip
