"""Trajectory and status files of an MD run, and the names of its files.

Frames are appended to an H5MD file with znh5md once per chunk. Restart truncates the file to
the frame count of the checkpoint (:func:`apax_core.data.io.truncate_h5md`), so frames written
after the last checkpoint (a crash between appending and checkpointing, even mid-append) are
dropped and rewritten exactly once. ``md_status.json`` is rewritten whole after every chunk.
The run's own observables carry H5MD ``unit`` attributes (:data:`H5MD_UNITS`); the trace's
column names end in their units (:func:`trace`).
"""

from __future__ import annotations

import json
from pathlib import Path

import ase
import numpy as np
from ase import units

from apax_core.calculator import ase_results, with_results
from apax_core.files import atomic_write
from apax_core.md.checkpoint import RunState

STATUS = "md_status.json"
TRAJECTORY = "md.h5"
"""The trajectory (H5MD) of a run directory, unless the run names another."""
WALKER = "walker{:03d}"
"""The run directory of walker k inside a directory of walkers: ``WALKER.format(k)``."""
TRACE_COLUMNS = ("time_fs", "temperature_K")
"""The columns every row of :func:`trace` has."""
H5MD_UNITS = {
    "temperature": "K",
    "pressure_bar": "bar",
    "volume_A3": "Angstrom^3",
    "md_time_fs": "fs",
    "free_energy": "eV",
    "energy_uncertainty": "eV",
    "energy_ensemble": "eV",
    "forces_uncertainty": "eV/Angstrom",
    "forces_ensemble": "eV/Angstrom",
    "stress_uncertainty": "eV/Angstrom^3",
}
"""H5MD ``unit`` attributes of the datasets znh5md leaves without one (it labels positions,
velocities, forces, energy, stress, the box and time itself), in its spelling."""


def frames_to_atoms(buf: dict, count: int, numbers, cell, pbc, dt_fs: float) -> list[ase.Atoms]:
    """Host copies of the first ``count`` buffered frames as Atoms with their results, steps
    (``md_step``), times (``md_time_fs``) and kinetic temperatures (``temperature``, K).
    Constant-pressure frames (``buf`` has ``cell``) carry their own cell, its volume
    (``volume_A3``) and the instantaneous pressure (``pressure_bar``, :func:`pressure_bar`).

    Args: ``buf`` arrays of shape (F, ...) per key, e.g. positions (F, N, 3) and, under
    constant pressure, cell (F, 3, 3); ``numbers`` (N,), ``cell`` (3, 3) of constant-volume
    frames, rows are lattice vectors, ``pbc`` (3,).
    """
    keys = [k for k in buf if k not in ("positions", "momenta", "step", "temperature", "cell")]
    frames = []
    for k in range(count):
        frame_cell = buf["cell"][k] if "cell" in buf else cell
        atoms = ase.Atoms(numbers=numbers, positions=buf["positions"][k], cell=frame_cell, pbc=pbc)
        atoms.set_momenta(buf["momenta"][k], apply_constraint=False)
        step = int(buf["step"][k])
        atoms.info.update(
            md_step=step, md_time_fs=step * dt_fs, temperature=float(buf["temperature"][k])
        )
        pred = {key: buf[key][k] for key in keys}
        atoms = with_results(atoms, ase_results(pred, len(atoms), bool(pbc.any())))
        if "cell" in buf:
            atoms.info.update(volume_A3=atoms.get_volume(), pressure_bar=pressure_bar(atoms))
        frames.append(atoms)
    return frames


def pressure_bar(atoms: ase.Atoms) -> float:
    """Instantaneous pressure in bar of a periodic frame with stress and momenta: the trace / 3
    of sum_i p_i p_i^T / (m_i V) - stress (ASE's ``include_ideal_gas``; the barostats' own)."""
    stress = atoms.get_stress(voigt=False, include_ideal_gas=True)
    return float(-np.trace(stress) / 3.0 / units.bar)


def append_frames(path: Path, frames: list[ase.Atoms], timestep_fs: float) -> None:
    import znh5md  # deferred: h5py/znh5md import is slow

    znh5md.IO(path, store="linear", timestep=timestep_fs, compression=None).extend(frames)
    label_units(path)


def label_units(path: Path) -> None:
    """Set the H5MD ``unit`` attribute (:data:`H5MD_UNITS`) of every ``value`` dataset of the
    observables and particles groups in ``path`` that lacks one."""
    import h5py

    with h5py.File(path, "a") as fh:
        for top in ("observables", "particles"):
            for group in fh[top].values() if top in fh else []:
                for name, unit in H5MD_UNITS.items():
                    value = group.get(f"{name}/value")
                    if value is not None and "unit" not in value.attrs:
                        value.attrs["unit"] = unit


def read_trajectory(path: str | Path) -> list[ase.Atoms]:
    """Every frame of an MD trajectory with its results (``atoms.calc.results``) and info.

    A run that stopped before its first frame has no trajectory file; its ``md_status.json``
    then says 0 frames and the result is an empty list.
    """
    import znh5md

    path = Path(path)
    if not path.is_file():
        status = path.with_name(STATUS)
        if status.is_file() and json.loads(status.read_text()).get("n_frames") == 0:
            return []
        raise FileNotFoundError(f"{path}: trajectory not found")
    return list(znh5md.IO(path)[:])


def write_status(directory: Path, status: dict) -> None:
    atomic_write(directory / STATUS, json.dumps(status, indent=2))


def status_dict(run: RunState, dt_fs: float) -> dict:
    """The content of ``md_status.json``: stopped, reason (a check's kind or "nan"), step,
    time_fs, n_frames and, once stopped, ``stop_detail``: check, value, threshold, unit,
    time_fs and a message, e.g. ``energy_uncertainty 0.081 eV/atom > 0.05 eV/atom at 840 fs``
    (:func:`apax_core.md.checks.stop_detail`)."""
    status = {
        "stopped": bool(run.stopped),
        "reason": run.reason,
        "step": int(run.step),
        "time_fs": float(run.step * dt_fs),
        "n_frames": int(run.n_frames),
    }
    return status | ({"stop_detail": run.stop_detail} if run.stop_detail else {})


def trace(frames: list[ase.Atoms]) -> list[dict[str, float]]:
    """One row per frame, each column name ending in its unit: simulated time (``time_fs``, the
    stored ``md_time_fs``), kinetic temperature (``temperature_K``); for periodic frames with
    stress (every periodic run) the volume (``volume_A3``) and the pressure (``pressure_bar``,
    :func:`pressure_bar`); for ensembles the energy standard deviation of the structure
    (``energy_uncertainty_eV``) and per atom (``energy_uncertainty_eV_per_atom``, what the
    energy check compares by default) and the largest per-atom norm of the force standard
    deviation (``max_forces_uncertainty_eV_per_A``, what the forces check compares)."""
    rows = []
    for atoms in frames:
        res = atoms.calc.results if atoms.calc is not None else {}
        # The engine's kinetic temperature counts the degrees of freedom of its dynamics
        # (3N - 3 where momentum is conserved); ASE's get_temperature always counts 3N.
        temperature = atoms.info.get("temperature", atoms.get_temperature())
        row = {"time_fs": atoms.info["md_time_fs"], "temperature_K": temperature}
        if atoms.pbc.all() and "stress" in res:
            row.update(volume_A3=atoms.get_volume(), pressure_bar=pressure_bar(atoms))
        if "energy_uncertainty" in res:
            sigma = float(res["energy_uncertainty"])
            row.update(
                energy_uncertainty_eV=sigma, energy_uncertainty_eV_per_atom=sigma / len(atoms)
            )
        if "forces_uncertainty" in res:
            norms = np.linalg.norm(res["forces_uncertainty"], axis=-1)
            row["max_forces_uncertainty_eV_per_A"] = float(np.max(norms))
        rows.append({k: float(v) for k, v in row.items()})
    return rows
