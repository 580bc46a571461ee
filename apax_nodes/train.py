"""Train (or warm-start) a model on the frames of another node."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import ase
import pandas as pd
import zntrack

from apax_core.config import TrainConfig, validate
from apax_core.data import from_atoms
from apax_core.labelling import write_labellers
from apax_core.train.trainer import SCREENING, train
from apax_nodes.errors import one_line_errors
from apax_nodes.model import ModelNode, local_model_dir, require_apax_model
from apax_nodes.paths import checkpoint_dir


def train_spec(config: dict) -> TrainConfig:
    """The validated training spec of a node's ``config`` param (errors name the field)."""
    return validate(TrainConfig, config, "config")


@one_line_errors
class Train(zntrack.Node, ModelNode):
    """Train on ``data`` (validated on ``validation_data``, or a held-out fraction of ``data``).

    With ``model`` (a previous Train, also one from ``zntrack.from_rev``) the run warm-starts
    from its parameters; ``config["warm_start"]`` may name groups to reset or freeze.
    """

    data: list[ase.Atoms] = zntrack.deps()
    validation_data: list[ase.Atoms] | None = zntrack.deps(None)
    calibration_data: list[ase.Atoms] | None = zntrack.deps(None)
    """Frames an ensemble is calibrated on (a loop passes its own MD frames); None or empty:
    the validation data."""
    model: Train | None = zntrack.deps(None)
    config: dict = zntrack.params(default_factory=dict)
    """An apax_core training spec (see ``apax-core template train``; no paths)."""
    model_dir: Path = zntrack.outs_path(zntrack.nwd / "model")
    metrics: dict = zntrack.metrics()
    learning_curve: pd.DataFrame = zntrack.plots(x="epoch", y=["train_loss", "val_loss"])

    def __post_init__(self):
        super().__post_init__()
        require_apax_model(self)

    def run(self) -> None:
        train_frames, val_frames = self.data, self.validation_data
        checkpoints = checkpoint_dir(self.name)
        train(
            train_spec(self.config),
            self.model_dir,
            [from_atoms(a) for a in train_frames],
            None if val_frames is None else [from_atoms(a) for a in val_frames],
            base_model=None if self.model is None else local_model_dir(self.model),
            checkpoint_dir=checkpoints,
            progress_bar=False,
            calibration_data=[from_atoms(a) for a in self.calibration_data or []],
        )
        write_labellers(self.model_dir, [*train_frames, *(val_frames or [])])  # for get_spec
        best = json.loads((self.model_dir / "metrics.json").read_text())
        n_val = {} if val_frames is None else {"n_val": len(val_frames)}
        screening = json.loads((self.model_dir / SCREENING).read_text())
        self.metrics = {
            **best,
            "n_train": len(train_frames),
            **n_val,
            "n_implausible": sum(map(len, screening["flagged"].values())),
            "n_missing": len(screening["missing"]),
        }
        log = pd.read_csv(self.model_dir / "log.csv")
        self.learning_curve = log[["epoch", "train_loss", "val_loss"]]
        shutil.rmtree(checkpoints, ignore_errors=True)  # only once every output is complete
