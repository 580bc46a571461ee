"""Engines: us/atom/step of our JAX engine, LAMMPS through the bridge, and ASE, one model.

    python bench/engines.py [--model DIR] [--sizes 108,864] [--steps N] [--ase-steps N]
                            [--repeats 3] [--trained DIR --structure FILE --ps 2]

Speed: fcc Cu 3x3x3 and 6x6x6 conventional cells (108, 864 atoms), NVE at dt 1 fs from 300 K,
skin 0.4 A, mean forces only (an ensemble in its cheap mode). Our engine runs chunks of
``steps`` steps (the first is the warm-up); LAMMPS (``fix nve`` + ``apax_core.lammps``) and
ASE (VelocityVerlet + ApaxCalculator) are timed after a warm-up of 30 steps. The overhead of
the bridge is LAMMPS's time over our engine's. Each size takes the fastest of ``--repeats``
interleaved rounds per engine. Without --model, the random reference GMNN of
bench/md_speed.py (n_basis 7, n_radial 5, r_max 5, hidden [128, 128], fp32).

With --trained (a trained model directory) and --structure (its test set; runs start from its
first frame, e.g. the 107-atom cu_bulk_test.extxyz): NVE energy drift (eV/atom/ps, slope of a
linear fit of the total energy) of our engine and of LAMMPS at dt 1 fs from 600 K over --ps ps;
LAMMPS's own fix nvt (600 K) and fix npt (600 K, 0 bar) holding their targets (means over the
second half; the calibrated largest force sigma recorded every 10 steps); fix halt on that
sigma (threshold 1.5 x its median over the frames of --structure) in NVT runs of the first
frame and of the first frame compressed by 6 % per axis.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.io import read
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from common import table, write_result
from md_speed import cu, reference_model

from apax_core.calculator import ApaxCalculator
from apax_core.config.md import MDConfig
from apax_core.lammps import attach, create_system, open_lammps
from apax_core.md import read_trajectory, run_md
from apax_core.model_dir import Model, load_model

SKIN = 0.4
WARMUP = 30
"""Untimed steps of LAMMPS and ASE first: compilation, and a recompilation when thermal motion
moves the neighbour count into the next padding bin."""
STEPS = {108: 300, 864: 60}
ASE_STEPS = {108: 100, 864: 20}


def nve_config(steps: int, chunks: int, T: float, dt: float = 1.0, rate: int = 50) -> MDConfig:
    return MDConfig(
        dynamics={"kind": "nve"},
        temperature={"kind": "constant", "T": T},
        dt=dt,
        duration=chunks * steps * dt,
        n_inner=steps,
        sampling_rate=rate,
        skin=SKIN,
        force_uncertainty=False,
    )


def jax_speed(model: Model, atoms, steps: int) -> float:
    """us/atom/step of our engine over two steady chunks (the first chunk compiles)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = run_md(model, atoms, nve_config(steps, 3, 300.0), Path(tmp), progress_bar=False)
    return result.timing["us_per_atom_step"]


def lammps_with(model: Model, atoms, T: float, every: int = 1_000_000):
    """A LAMMPS instance with ``atoms``, the model attached and velocities at ``T`` K."""
    lmp = open_lammps()
    create_system(lmp, atoms, ["Cu"])
    attach(lmp, model, ["Cu"], uncertainty_every=every, skin=SKIN)
    lmp.commands_string(f"velocity all create {T} 11 dist gaussian\ntimestep 0.001\nthermo 0")
    return lmp


def lammps_speed(model: Model, atoms, steps: int) -> float:
    """us/atom/step of LAMMPS's fix nve with the bridge, after :data:`WARMUP` steps."""
    lmp = lammps_with(model, atoms, 300.0)
    lmp.commands_string(f"fix nve all nve\nrun {WARMUP}")
    t0 = time.perf_counter()
    lmp.command(f"run {steps} pre no post no")
    seconds = time.perf_counter() - t0
    lmp.close()
    return 1e6 * seconds / steps / len(atoms)


def ase_speed(model: Model, atoms, steps: int) -> float:
    """us/atom/step of ASE's VelocityVerlet with ApaxCalculator, after :data:`WARMUP` steps."""
    atoms = atoms.copy()
    atoms.calc = ApaxCalculator(model, skin=SKIN, force_uncertainty=False)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    dyn.run(WARMUP)
    t0 = time.perf_counter()
    dyn.run(steps)
    return 1e6 * (time.perf_counter() - t0) / steps / len(atoms)


def speed(model: Model, sizes, steps, ase_steps, repeats: int) -> tuple[list[dict], dict]:
    """Per size, the fastest of ``repeats`` interleaved rounds of each engine (on a shared
    machine the minimum is the least disturbed)."""
    rows, raw = [], {}
    for n in sizes:
        atoms, k, k_ase = cu(n), steps or STEPS[n], ase_steps or ASE_STEPS[n]
        rounds = [
            (
                jax_speed(model, atoms, k),
                lammps_speed(model, atoms, k),
                ase_speed(model, atoms, k_ase),
            )
            for _ in range(repeats)
        ]
        row = dict(zip(("jax", "lammps", "ase"), np.min(rounds, axis=0).tolist(), strict=True))
        row = {"atoms": n, **row, "lammps/jax": row["lammps"] / row["jax"]}
        rows.append(row)
        raw[str(n)] = {**row, "rounds": rounds}
        print(", ".join(f"{key} {v:.3g}" for key, v in row.items()), flush=True)
    return rows, raw


def drift(times_ps: np.ndarray, energy_per_atom: np.ndarray) -> float:
    """Energy drift in eV/atom/ps: the slope of a linear fit."""
    return float(np.polyfit(times_ps, energy_per_atom, 1)[0])


def jax_drift(model: Model, atoms, ps: float) -> dict:
    steps = int(round(ps * 1000))
    with tempfile.TemporaryDirectory() as tmp:
        config = nve_config(steps, 1, 600.0, rate=10)
        frames = read_trajectory(run_md(model, atoms, config, Path(tmp)).trajectory)
    e = np.array([f.get_potential_energy() + f.get_kinetic_energy() for f in frames]) / len(atoms)
    t = np.array([f.info["md_step"] for f in frames]) * 1e-3
    return {"drift_eV_per_atom_per_ps": drift(t, e), "ptp_eV_per_atom": float(np.ptp(e))}


def lammps_series(lmp, steps: int, every: int, names) -> np.ndarray:
    """(steps / every, len(names) + 1) thermo values and the largest force sigma (f_apax[2])
    after each block of ``every`` steps."""
    rows = []
    for _ in range(steps // every):
        lmp.command(f"run {every} pre no post no")
        rows.append([lmp.get_thermo(n) for n in names] + [lmp.extract_fix("apax", 0, 1, 1)])
    return np.array(rows)


def lammps_drift(model: Model, atoms, ps: float) -> dict:
    lmp = lammps_with(model, atoms, 600.0)
    lmp.commands_string("fix nve all nve\nrun 0")
    e = lammps_series(lmp, int(round(ps * 1000)), 10, ["etotal"])[:, 0] / len(atoms)
    lmp.close()
    t = 1e-2 * np.arange(1, len(e) + 1)
    return {"drift_eV_per_atom_per_ps": drift(t, e), "ptp_eV_per_atom": float(np.ptp(e))}


def lammps_ensembles(model: Model, atoms, ps: float) -> dict:
    """Mean temperature (fix nvt) and pressure (fix npt) over the second half, and the largest
    calibrated force sigma seen (eV/A)."""
    out, steps = {}, int(round(ps * 1000))
    fixes = {
        "nvt": "fix md all nvt temp 600 600 0.1",
        "npt": "fix md all npt temp 600 600 0.1 iso 0 0 1.0",
    }
    for name, fix in fixes.items():
        lmp = lammps_with(model, atoms, 600.0, every=10)
        lmp.commands_string(f"{fix}\nrun 0")
        series = lammps_series(lmp, steps, 10, ["temp", "press", "vol"])
        lmp.close()
        half = series[len(series) // 2 :]
        out[name] = {
            "mean_T_K": float(half[:, 0].mean()),
            "mean_P_bar": float(half[:, 1].mean()),
            "sem_P_bar": float(half[:, 1].std() / np.sqrt(len(half) / 10)),
            "volume_change": float(half[:, 2].mean() / series[0, 2] - 1),
            "max_force_sigma_eV_per_A": float(series[:, 3].max()),
        }
        print(name, out[name], flush=True)
    return out


def lammps_halt(model: Model, atoms, threshold: float, ps: float) -> dict:
    """The step at which ``fix halt`` on f_apax[2] > ``threshold`` (eV/A, checked every 10
    steps) stopped an NVT run at 600 K of ``ps`` ps, and f_apax[2] at the end."""
    steps = int(round(ps * 1000))
    lmp = lammps_with(model, atoms, 600.0, every=10)
    lmp.commands_string(
        "fix md all nvt temp 600 600 0.1\nvariable sigma equal f_apax[2]\n"
        f"fix stop all halt 10 v_sigma > {threshold} error soft\nrun {steps}"
    )
    out = {"stopped_at_step": int(lmp.extract_global("ntimestep")), "steps": steps}
    out["final_force_sigma"] = float(lmp.extract_fix("apax", 0, 1, 1))
    lmp.close()
    return out


def halting(model: Model, frames, ps: float) -> dict:
    """fix halt with threshold 1.5 x the median over ``frames`` (the test set) of each frame's
    largest calibrated force sigma: an in-distribution start (the first frame) and the same
    frame compressed by 6 % per axis (out of distribution)."""
    evaluated = ApaxCalculator(model).batch_eval(frames, progress_bar=False)
    per_frame = [
        np.linalg.norm(a.calc.results["forces_uncertainty"], axis=1).max() for a in evaluated
    ]
    threshold = 1.5 * float(np.median(per_frame))
    compressed = frames[0].copy()
    compressed.set_cell(compressed.cell * 0.94, scale_atoms=True)
    out = {"threshold_eV_per_A": threshold, "test_set_median_sigma": float(np.median(per_frame))}
    for name, atoms in (("in_distribution", frames[0]), ("compressed_6pct", compressed)):
        out[name] = lammps_halt(model, atoms, threshold, ps)
        print("halt", name, out[name], flush=True)
    return out


def conservation(trained: Path, structure: Path, ps: float) -> dict:
    model, frames = load_model(trained), read(structure, index=":")
    atoms = frames[0]
    out = {"model": str(trained), "structure": str(structure), "n_atoms": len(atoms), "dt_fs": 1}
    out["nve"] = {"jax": jax_drift(model, atoms, ps), "lammps": lammps_drift(model, atoms, ps)}
    print("nve", out["nve"], flush=True)
    out.update(lammps_ensembles(model, atoms, ps))
    out["halt"] = halting(model, frames, ps / 2)
    return out


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="model directory (default: random reference GMNN)")
    p.add_argument("--out", default="engines", help="result name under bench/results")
    p.add_argument("--sizes", default="108,864")
    p.add_argument("--steps", type=int, help="timed steps of our engine and LAMMPS")
    p.add_argument("--ase-steps", type=int, help="timed ASE steps")
    p.add_argument("--repeats", type=int, default=3, help="rounds per size (the fastest counts)")
    p.add_argument("--trained", type=Path, help="trained model for the NVE/NVT/NPT checks")
    p.add_argument("--structure", type=Path, help="its start structure (first frame)")
    p.add_argument("--ps", type=float, default=2.0, help="length of those runs in ps")
    return p.parse_args()


def main() -> None:
    args = arguments()
    logging.basicConfig(level=logging.WARNING)
    model = load_model(args.model) if args.model else reference_model()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows, raw = speed(model, sizes, args.steps, args.ase_steps, args.repeats)
    print("\nus/atom/step (lower is better); lammps/jax = the bridge's overhead")
    print(table(rows, ["atoms", "jax", "lammps", "ase", "lammps/jax"]))
    payload = {
        "load_average_at_end": None,
        "us_per_atom_step": raw,
        "skin": SKIN,
        "model": str(args.model) if args.model else "random reference GMNN (fp32)",
    }
    if args.trained:
        payload["conservation"] = conservation(args.trained, args.structure, args.ps)
    payload["load_average_at_end"] = os.getloadavg()
    print(f"wrote {write_result(args.out, payload)}")


if __name__ == "__main__":
    main()
