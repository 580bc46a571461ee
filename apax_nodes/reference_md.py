"""Reference MD with the labeller itself (ASE Langevin): held-out test data made by the pipeline."""

from __future__ import annotations

import ase
import numpy as np
import zntrack

from apax_core.labelling import Labeller, record_labeller, reference_md
from apax_nodes.errors import one_line_errors
from apax_nodes.frames import FramesNode, write_h5


@one_line_errors
class ReferenceMD(FramesNode):
    """Langevin MD of ``data[index]`` with the reference calculator: ``equilibration`` fs
    unsampled, then ``duration`` fs in which a frame is kept every ``sampling_rate`` steps with
    its reference energy, forces and (3D-periodic cells) stress. Time is in the terms of
    apax_core's MDConfig: ``dt``, ``equilibration`` and ``duration`` in fs, ``sampling_rate``
    in steps. The centre of mass stays put (ASE's FixCom)."""

    data: list[ase.Atoms] = zntrack.deps()
    labeller: Labeller = zntrack.deps()
    index: int = zntrack.params(0)
    """The start structure: ``data[index]``."""
    temperature: float = zntrack.params(600.0)
    """Thermostat and initial Maxwell-Boltzmann temperature in K."""
    dt: float = zntrack.params(2.0)
    """Time step in fs."""
    duration: float = zntrack.params(800.0)
    """Sampled time in fs (after the equilibration): round(duration / dt) steps."""
    equilibration: float = zntrack.params(0.0)
    """Time in fs run first and not sampled (round(equilibration / dt) steps), so that the
    first kept frame is thermalised, not the start structure with Maxwell-Boltzmann
    velocities; a few hundred fs for a liquid at 2 fs steps."""
    sampling_rate: int = zntrack.params(20)
    """A frame is kept every ``sampling_rate`` steps (sampling_rate x dt fs apart)."""
    friction: float = zntrack.params(0.02)
    """Langevin friction coefficient in 1/fs."""
    seed: int = zntrack.params(0)
    """Seed of the initial velocities and of the Langevin noise."""
    masses: dict[str, float] | None = zntrack.params(None)
    """Masses in amu that replace the standard ones in the dynamics only, e.g. {"H": 4.0}:
    the sampled configurations follow the same Boltzmann distribution for any masses, and
    heavier hydrogens allow 1-2 fs steps for water. Kept frames carry the standard masses."""

    def run(self) -> None:
        atoms = self.data[self.index].copy()
        rng = np.random.default_rng(self.seed)
        steps, warm_up = round(self.duration / self.dt), round(self.equilibration / self.dt)
        thermostat = (self.temperature, self.friction)
        calc = self.labeller.get_calculator()
        frames = reference_md(
            atoms, calc, thermostat, self.dt, steps, self.sampling_rate, rng, warm_up, self.masses
        )
        write_h5(self.frames_path, record_labeller(frames, self.labeller))
