"""Reference MD with the labeller itself (ASE Langevin): held-out test data made by the pipeline."""

from __future__ import annotations

import ase
import numpy as np
import zntrack

from apax_core.labelling import Labeller, reference_md
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
        rng = np.random.default_rng(self.seed)
        steps = round(self.duration / self.dt)
        thermostat = (self.temperature, self.friction)
        calc = self.labeller.get_calculator()
        frames = reference_md(atoms, calc, thermostat, self.dt, steps, self.sampling_rate, rng)
        write_h5(self.frames_path, frames)
