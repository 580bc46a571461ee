"""Reference MD with the labeller itself (ASE Langevin): held-out test data made by the pipeline."""

from __future__ import annotations

import ase
import numpy as np
import zntrack
from ase import units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from tqdm import tqdm

from apax_core.labelling import Labeller, label
from apax_nodes.errors import one_line_errors
from apax_nodes.frames import FramesNode, write_h5


@one_line_errors
class ReferenceMD(FramesNode):
    """Langevin MD of ``data[index]`` with the reference calculator; a frame is kept every
    ``sampling_rate`` steps with its reference energy, forces and stress. Time is in the terms
    of apax_core's MDConfig: ``dt`` and ``duration`` in fs, ``sampling_rate`` in steps."""

    data: list[ase.Atoms] = zntrack.deps()
    labeller: Labeller = zntrack.deps()
    index: int = zntrack.params(0)
    temperature: float = zntrack.params(600.0)
    """Thermostat and initial Maxwell-Boltzmann temperature in K."""
    dt: float = zntrack.params(2.0)
    """Time step in fs."""
    duration: float = zntrack.params(800.0)
    """Simulated time in fs; the run has round(duration / dt) steps."""
    sampling_rate: int = zntrack.params(20)
    """A frame is kept every ``sampling_rate`` steps."""
    friction: float = zntrack.params(0.02)
    """Langevin friction coefficient in 1/fs."""
    seed: int = zntrack.params(0)
    """Seed of the initial velocities and of the Langevin noise."""

    def run(self) -> None:
        atoms = self.data[self.index].copy()
        atoms.calc = self.labeller.get_calculator()
        rng = np.random.default_rng(self.seed)
        MaxwellBoltzmannDistribution(atoms, temperature_K=self.temperature, rng=rng)
        dyn = Langevin(
            atoms,
            self.dt * units.fs,
            temperature_K=self.temperature,
            friction=self.friction / units.fs,
            rng=rng,
        )
        frames = []
        n_steps = round(self.duration / self.dt)
        for _ in tqdm(range(n_steps // self.sampling_rate), desc=self.name):
            dyn.run(self.sampling_rate)
            frames.append(label(atoms, atoms.calc))
        write_h5(self.frames_path, frames)
