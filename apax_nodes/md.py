"""Sampling MD with a model (optionally uncertainty-driven), stopped on uncertainty."""

from __future__ import annotations

import shutil
from pathlib import Path

import ase
import pandas as pd
import zntrack

from apax_core.config import MDConfig
from apax_core.md.checkpoint import CHECKPOINT
from apax_core.md.io import trace
from apax_nodes.errors import one_line_errors
from apax_nodes.frames import read_h5
from apax_nodes.model import require_apax_model
from apax_nodes.train import checkpoint_dir

TRAJECTORY = "md.h5"


def md_config(config: dict) -> MDConfig:
    """The validated MD spec of a node's ``config`` param (errors name the field)."""
    return MDConfig.model_validate(config)


@one_line_errors
class MD(zntrack.Node):
    """MD of ``data[index]`` with ``model``; ``config`` is an apax_core MD spec (dynamics,
    temperature schedule, UDD, stop checks). ``frames`` are the written frames; ``status``
    says whether and why the run stopped early."""

    model: zntrack.Node = zntrack.deps()
    data: list[ase.Atoms] = zntrack.deps()
    index: int = zntrack.params(-1)
    config: dict = zntrack.params(default_factory=dict)
    md_dir: Path = zntrack.outs_path(zntrack.nwd / "md")
    status: dict = zntrack.metrics()
    temperature_trace: pd.DataFrame = zntrack.plots(x="time_fs", y="temperature")

    def __post_init__(self):
        super().__post_init__()
        require_apax_model(self)

    def run(self) -> None:
        # Imported here: jax_md starts the XLA backend on import, and `zntrack run` forks (to
        # hash the stage) after importing the node module; a fork after that can deadlock.
        from apax_core.md.engine import run_md

        work = checkpoint_dir(self.name)  # survives `dvc repro` deleting md_dir before a rerun
        config = md_config(self.config)
        result = run_md(
            self.model.get_model(), self.data[self.index], config, work, traj_name=TRAJECTORY
        )
        self.md_dir.mkdir(parents=True, exist_ok=True)
        for item in work.iterdir():
            if item.name != CHECKPOINT:
                shutil.copy2(item, self.md_dir / item.name)
        shutil.rmtree(work)
        self.status = {k: v for k, v in result.status.items() if v is not None}
        frames = self.frames
        columns = None if frames else ["time_fs", "temperature"]
        self.temperature_trace = pd.DataFrame(trace(frames), columns=columns)

    @property
    def frames(self) -> list[ase.Atoms]:
        path = (self.md_dir / TRAJECTORY).as_posix()
        return read_h5(self, path) if self.state.fs.exists(path) else []
