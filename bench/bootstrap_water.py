"""Bootstrap frames of a molecular liquid against thermal frames, under GFN2-xTB.

    python bench/bootstrap_water.py [--copies 8] [--md-steps 100] [--max-force 5]

16 H2O at 1 g/cm^3 (``neighbour_rebuild.water_box``, 7.82 A cubic cell, periodic), relaxed
with xTB (LBFGS, --relax-steps at most): the seed. Then, each labelled with GFN2-xTB:

- plain: ``bootstrap`` copies with rattle 0.08 A and strain 0.02 (the water trial of issue 24);
- bounded: ``bounded_bootstrap`` copies of the same draws, max_force --max-force eV/A;
- bounded_per_element: ``bounded_bootstrap`` with a per-element rattle (--per-element, A);
- md_300K: Langevin MD of the seed at 300 K (as ``reference_md``: dt 1 fs, friction 0.02/fs;
  velocities drawn at 600 K so that equipartition from the seed lands near 300 K quickly),
  a frame every 2 fs after --md-equilibrate fs; their mean temperature is reported.

Per set: largest atomic force norm (eV/A; median and maximum over frames), the RMS force
component (eV/A), the energy above the seed (eV/atom; mean and maximum), the reference calls,
and for bounded sets the share of copies shrunk and the mean scale kept. The MD set also gives
the RMS displacement per element from the seed (A, per Cartesian component). Results go to
bench/results/bootstrap_water.json.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import ase
import numpy as np
from ase import units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.optimize import LBFGS
from common import table, write_result
from neighbour_rebuild import water_box

from apax_core.data.sampling import (
    bootstrap,
    bootstrap_metrics,
    bounded_bootstrap,
    largest_force,
)
from apax_core.labelling import XTBLabeller, label


def relaxed_seed(calc, steps: int) -> ase.Atoms:
    """The labelled water box after at most ``steps`` LBFGS steps."""
    atoms = water_box(48)
    atoms.calc = calc
    LBFGS(atoms, logfile=None).run(fmax=0.1, steps=steps)
    return label(atoms, calc)


def stats(name: str, frames: list[ase.Atoms], seed: ase.Atoms, calls: int) -> dict:
    """Force and energy statistics of labelled ``frames`` against the labelled ``seed``."""
    e0 = seed.get_potential_energy() / len(seed)
    fmax = np.array([largest_force(a) for a in frames])
    forces = np.concatenate([a.get_forces().ravel() for a in frames])
    de = np.array([a.get_potential_energy() / len(a) - e0 for a in frames])
    return {
        "set": name,
        "frames": len(frames),
        "calls": calls,
        "fmax_median": float(np.median(fmax)),
        "fmax_max": float(fmax.max()),
        "f_rms": float(np.sqrt(np.mean(forces**2))),
        "dE_mean": float(de.mean()),
        "dE_max": float(de.max()),
    }


def bounded(name, seed, rattle, args) -> dict:
    frames, records = bounded_bootstrap(
        [seed], args.copies, rattle, 0.02, 0, labeller=XTBLabeller(), max_force=args.max_force
    )
    metrics = bootstrap_metrics(records)
    row = stats(name, frames, seed, metrics["reference_calls"])
    scales = [r["scale"] for r in records if "error" not in r]
    row |= {"shrunk": metrics["shrunk_share"], "mean_scale": float(np.mean(scales))}
    return row | {"failed": metrics["n_failed"], "rattle": rattle}


def thermal(seed, args, calc) -> tuple[dict, dict]:
    """Langevin MD of the seed at 300 K: statistics of the frames after equilibration, with
    their mean temperature (K) and the RMS displacement per element (A, per component)."""
    atoms = seed.copy()
    atoms.calc = calc
    rng = np.random.default_rng(0)
    # velocities at twice the target: equipartition from the seed halves the kinetic energy
    MaxwellBoltzmannDistribution(atoms, temperature_K=600.0, rng=rng)
    Stationary(atoms)
    dyn = Langevin(
        atoms, units.fs, temperature_K=300.0, friction=0.02 / units.fs, fixcm=False, rng=rng
    )
    dyn.run(args.md_equilibrate)
    frames, temperatures = [], []
    for _ in range(args.md_steps // 2):
        dyn.run(2)
        frame = atoms.copy()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces)
        frames.append(frame)
        temperatures.append(atoms.get_temperature())
    row = stats("md_300K", frames, seed, args.md_equilibrate + args.md_steps + 1)
    row["temperature_K"] = float(np.mean(temperatures))
    symbols = np.array(seed.get_chemical_symbols())
    d = np.stack([a.positions - seed.positions for a in frames])
    rms = {s: float(np.sqrt(np.mean(d[:, symbols == s] ** 2))) for s in ("H", "O")}
    return row, rms


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--copies", type=int, default=8)
    p.add_argument("--max-force", type=float, default=5.0, help="eV/A")
    p.add_argument("--per-element", default="H=0.04,O=0.02", help="rattle per element, A")
    p.add_argument("--relax-steps", type=int, default=30)
    p.add_argument("--md-equilibrate", type=int, default=50, help="1 fs steps, unsampled")
    p.add_argument("--md-steps", type=int, default=100, help="1 fs steps, a frame every 2")
    p.add_argument("--out", default="bootstrap_water", help="result name under bench/results")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    per_element = {k: float(v) for k, v in (kv.split("=") for kv in args.per_element.split(","))}
    calc = XTBLabeller().get_calculator()
    t0 = time.perf_counter()
    seed = relaxed_seed(calc, args.relax_steps)
    print(f"seed: largest force {largest_force(seed):.3g} eV/A", flush=True)
    plain = [label(a, calc) for a in bootstrap([seed], args.copies, 0.08, 0.02, 0)]
    rows = [stats("plain_0.08", plain, seed, args.copies) | {"rattle": 0.08}]
    rows.append(bounded("bounded_0.08", seed, 0.08, args))
    rows.append(bounded("bounded_per_element", seed, per_element, args))
    md_row, rms = thermal(seed, args, calc)
    rows.append(md_row)
    wall = time.perf_counter() - t0
    print(
        "\nlargest force norm per frame (eV/A), RMS force component (eV/A), E above seed (eV/atom)"
    )
    columns = ["set", "frames", "calls", "fmax_median", "fmax_max", "f_rms", "dE_mean", "dE_max"]
    print(table(rows, [*columns, "shrunk", "mean_scale", "failed", "temperature_K"]))
    print(f"MD RMS displacement from the seed per component (A): {rms}; wall {wall:.0f} s")
    payload = {
        "rows": rows,
        "md_rms_displacement_A": rms,
        "seed_largest_force_eV_A": largest_force(seed),
        "max_force_eV_A": args.max_force,
        "wall_s": wall,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_at_end": os.getloadavg(),
    }
    print(f"wrote {write_result(args.out, payload)}")


if __name__ == "__main__":
    main()
