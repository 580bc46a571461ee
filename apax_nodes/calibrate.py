"""Post-hoc calibration of an ensemble's uncertainties on validation data."""

from __future__ import annotations

import shutil
from pathlib import Path

import ase
import zntrack

from apax_core.data import from_atoms
from apax_core.frame_predictions import predict
from apax_core.uq import calibrate_model, uncertainty_metrics
from apax_nodes.errors import one_line_errors
from apax_nodes.model import ModelNode, local_model_dir


@one_line_errors
class Calibrate(zntrack.Node, ModelNode):
    """A copy of ``model`` whose energy and force spreads are recalibrated by NLL on ``data``."""

    model: zntrack.Node = zntrack.deps()
    data: list[ase.Atoms] = zntrack.deps()
    family: str = zntrack.params("auto")
    """Calibration law: "global" (one force factor), "per_element", "power" (sigma' = a
    sigma^b), or "auto" (the lowest held-out force NLL, 5-fold over ``data``)."""
    model_dir: Path = zntrack.outs_path(zntrack.nwd / "model")
    metrics: dict = zntrack.metrics()

    def run(self) -> None:
        structures = [from_atoms(a) for a in self.data]
        calibrated = calibrate_model(self.model.get_model(), structures, family=self.family)
        shutil.copytree(local_model_dir(self.model), self.model_dir, dirs_exist_ok=True)
        calibrated.calibration.save(self.model_dir)
        preds = predict(calibrated, structures, mode="uncertainty")
        cal = calibrated.calibration
        self.metrics = {
            "energy_factor": cal.energy,
            "forces_factor": cal.forces,
            "family": cal.family,
            **{f"held_out_nll_{f}": nll for f, nll in cal.held_out_nll},
            **uncertainty_metrics(preds, structures),
        }
