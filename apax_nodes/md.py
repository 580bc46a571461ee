"""Sampling MD with a model (optionally uncertainty-driven), stopped on uncertainty."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import ase
import numpy as np
import pandas as pd
import zntrack

from apax_core.config import MDConfig
from apax_nodes.frames import read_h5
from apax_nodes.model import local_model_dir
from apax_nodes.train import CHECKPOINTS


def md_config(config: dict) -> MDConfig:
    """The validated MD config of a node's ``config`` param (errors name the field)."""
    return MDConfig.model_validate({**config, "progress_bar": True})


def run_stamp(config: MDConfig, atoms: ase.Atoms, model_dir: Path) -> str:
    """What a leftover run directory must match to be continued: settings, start, model."""
    h = hashlib.sha256((model_dir / "params.msgpack").read_bytes())
    h.update(np.ascontiguousarray(atoms.positions).tobytes())
    return json.dumps({"config": config.model_dump(mode="json"), "model": h.hexdigest()})


def trace(frames: list[ase.Atoms], dt_fs: float, sampling_rate: int) -> pd.DataFrame:
    """Temperature and uncertainties of every written frame, for ``dvc plots``."""
    rows = []
    for k, atoms in enumerate(frames):
        res = atoms.calc.results if atoms.calc is not None else {}
        row = {"time_fs": k * sampling_rate * dt_fs, "temperature": atoms.get_temperature()}
        if "energy_uncertainty" in res:
            row["energy_uncertainty"] = float(res["energy_uncertainty"])
        if "forces_uncertainty" in res:
            row["max_forces_uncertainty"] = float(np.max(np.linalg.norm(
                res["forces_uncertainty"], axis=-1)))  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["time_fs", "temperature"])


class MD(zntrack.Node):
    """MD of ``data[index]`` with ``model``; ``config`` is an apax_core MD config (dynamics,
    temperature schedule, UDD, stop checks). ``frames`` are the written frames; ``status``
    says whether and why the run stopped early."""

    model: zntrack.Node = zntrack.deps()
    data: list[ase.Atoms] = zntrack.deps()
    index: int = zntrack.params(-1)
    config: dict = zntrack.params(default_factory=dict)
    md_dir: Path = zntrack.outs_path(zntrack.nwd / "md")
    status: dict = zntrack.metrics()
    temperature_trace: pd.DataFrame = zntrack.plots(x="time_fs", y="temperature")

    def run(self) -> None:
        config = md_config(self.config)
        start = self.data[self.index]
        model_dir = local_model_dir(self.model)
        work = CHECKPOINTS / self.name  # survives `dvc repro` deleting md_dir before a rerun
        stamp = run_stamp(config, start, model_dir)
        if (work / "stamp.json").is_file() and (work / "stamp.json").read_text() != stamp:
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        (work / "stamp.json").write_text(stamp)
        # Imported here: jax_md starts the XLA backend on import, and `zntrack run` forks (to
        # hash the stage) after importing the node module; a fork after that can deadlock.
        from apax_core.md.engine import run_md

        result = run_md(self.model.get_model(), start, config, work)
        self.md_dir.mkdir(parents=True, exist_ok=True)
        for item in work.iterdir():
            if item.name not in ("stamp.json",) and not item.name.startswith("checkpoint"):
                shutil.copy2(item, self.md_dir / item.name)
        shutil.rmtree(work)
        self.status = {k: v for k, v in result.status.items() if v is not None}
        self.temperature_trace = trace(self.frames_local(config), config.dt, config.sampling_rate)

    def frames_local(self, config: MDConfig) -> list[ase.Atoms]:
        path = self.md_dir / config.traj_name
        return read_h5(self, path) if path.exists() else []

    @property
    def frames(self) -> list[ase.Atoms]:
        path = (self.md_dir / md_config(self.config).traj_name).as_posix()
        return read_h5(self, path) if self.state.fs.exists(path) else []
