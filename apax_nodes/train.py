"""Train (or warm-start) a model on the frames of another node."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import ase
import pandas as pd
import zntrack

from apax_core.config import TrainConfig
from apax_core.data import from_atoms
from apax_core.train.trainer import train
from apax_nodes.model import ModelNode, local_model_dir

CHECKPOINTS = Path(".apax_checkpoints")
"""Resume state lives here, outside the stage outputs that ``dvc repro`` deletes before a rerun."""


def train_config(config: dict, *, directory: str, train_file: str, **extra) -> TrainConfig:
    """The node's config dict completed with what the node supplies (paths), validated.

    Errors name the offending field, so a typo fails when the graph is built or the stage starts.
    """
    data = {**config.get("data", {}), "train_file": train_file}
    return TrainConfig.model_validate({**config, **extra, "directory": directory, "data": data})


class Train(zntrack.Node, ModelNode):
    """Train on ``data`` (validated on ``validation_data``, or a held-out fraction of ``data``).

    With ``model`` (a previous Train, also one from ``zntrack.from_rev``) the run warm-starts
    from its parameters; ``config["warm_start"]`` may name groups to reset or freeze.
    """

    data: list[ase.Atoms] = zntrack.deps()
    validation_data: list[ase.Atoms] | None = zntrack.deps(None)
    model: Train | None = zntrack.deps(None)
    config: dict = zntrack.params(default_factory=dict)
    """apax_core training config without ``directory`` and data files (see apax-core template)."""
    model_dir: Path = zntrack.outs_path(zntrack.nwd / "model")
    metrics: dict = zntrack.metrics()
    learning_curve: pd.DataFrame = zntrack.plots(x="epoch", y=["train_loss", "val_loss"])

    def run(self) -> None:
        train_frames = self.data
        val_frames = self.validation_data
        with tempfile.TemporaryDirectory() as tmp:
            warm = {}
            if self.model is not None:
                base = local_model_dir(self.model)
                copy = shutil.copytree(base, Path(tmp) / "base")  # fetched or local: same path
                warm = {"warm_start": {**self.config.get("warm_start", {}), "model": str(copy)}}
            config = train_config(
                self.config, directory=str(self.model_dir), train_file=f"{self.name}.data",
                progress_bar=False, **warm,
            )  # fmt: skip
            checkpoints = CHECKPOINTS / self.name
            structures = (
                [from_atoms(a) for a in train_frames],
                None if val_frames is None else [from_atoms(a) for a in val_frames],
            )
            train(config, checkpoint_dir=checkpoints, structures=structures)
        shutil.rmtree(checkpoints, ignore_errors=True)
        best = json.loads((self.model_dir / "metrics.json").read_text())
        self.metrics = {**best, "n_train": len(train_frames)}
        log = pd.read_csv(self.model_dir / "log.csv")
        self.learning_curve = log[["epoch", "train_loss", "val_loss"]]
