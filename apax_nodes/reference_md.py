"""Reference MD with the labeller itself (ASE Langevin): held-out test data made by the pipeline."""

from __future__ import annotations

from pathlib import Path

import ase
import numpy as np
import zntrack
from ase import units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from tqdm import tqdm

from apax_nodes.errors import one_line_errors
from apax_nodes.frames import read_h5, write_h5
from apax_nodes.label import Labeller, label


@one_line_errors
class ReferenceMD(zntrack.Node):
    """Langevin MD of ``data[index]`` with the reference calculator; every ``sampling_rate``-th
    step is kept with its reference energy, forces and stress."""

    data: list[ase.Atoms] = zntrack.deps()
    labeller: Labeller = zntrack.deps()
    index: int = zntrack.params(0)
    temperature: float = zntrack.params(600.0)
    timestep: float = zntrack.params(2.0)
    """fs"""
    steps: int = zntrack.params(400)
    sampling_rate: int = zntrack.params(20)
    friction: float = zntrack.params(0.02)
    """1/fs"""
    seed: int = zntrack.params(0)
    frames_path: Path = zntrack.outs_path(zntrack.nwd / "frames.h5")

    def run(self) -> None:
        atoms = self.data[self.index].copy()
        atoms.calc = self.labeller.get_calculator()
        rng = np.random.default_rng(self.seed)
        MaxwellBoltzmannDistribution(atoms, temperature_K=self.temperature, rng=rng)
        dyn = Langevin(
            atoms,
            self.timestep * units.fs,
            temperature_K=self.temperature,
            friction=self.friction / units.fs,
            rng=rng,
        )
        frames = []
        for _ in tqdm(range(self.steps // self.sampling_rate), desc=self.name):
            dyn.run(self.sampling_rate)
            frames.append(label(atoms, atoms.calc))
        write_h5(self.frames_path, frames)

    @property
    def frames(self) -> list[ase.Atoms]:
        return read_h5(self, self.frames_path)
