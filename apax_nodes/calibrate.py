"""Post-hoc calibration of an ensemble's uncertainties on validation data."""

from __future__ import annotations

import shutil
from pathlib import Path

import ase
import zntrack

from apax_core.data import from_atoms
from apax_core.predict import predict
from apax_core.uq import fit_calibration, uncertainty_metrics
from apax_nodes.model import ModelNode, local_model_dir


class Calibrate(zntrack.Node, ModelNode):
    """A copy of ``model`` whose energy and force spreads are scaled by NLL-optimal factors."""

    model: zntrack.Node = zntrack.deps()
    data: list[ase.Atoms] = zntrack.deps()
    model_dir: Path = zntrack.outs_path(zntrack.nwd / "model")
    metrics: dict = zntrack.metrics()

    def run(self) -> None:
        base = self.model.get_model()
        if base.config.ensemble is None:
            raise ValueError(f"{self.name}: calibration needs an ensemble model")
        structures = [from_atoms(a) for a in self.data]
        preds = predict(base, structures, uncertainty=True)  # base: factors 1, or earlier ones
        cal = fit_calibration(preds, structures)
        cal = type(cal)(energy=cal.energy * base.calibration.energy,
                        forces=cal.forces * base.calibration.forces)  # fmt: skip
        shutil.copytree(local_model_dir(self.model), self.model_dir, dirs_exist_ok=True)
        cal.save(self.model_dir)
        calibrated = predict(self.get_model(), structures, uncertainty=True)
        self.metrics = {"energy_factor": cal.energy, "forces_factor": cal.forces,
                        **uncertainty_metrics(calibrated, structures)}  # fmt: skip
