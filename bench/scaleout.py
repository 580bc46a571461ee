"""Scale-out on this machine: labelling, MD walkers and data-parallel training.

    python bench/scaleout.py [--parts labelling,xtb_reuse,md,training] [--n 200]
                             [--xtb-molecule C60] [--reuse-n 8]

- labelling: serial against a 2-worker process pool and a 2-worker dask LocalCluster, with
  EMT (rattled 107-atom fcc Cu cells; a cheap labeller, overhead-bound) and GFN2-xTB (rattled
  copies of a molecule; a real one). Every executor starts from an empty result store.
- xtb_reuse: GFN2-xTB labels of 16 H2O boxes (1 g/cm^3, 48 atoms, with stress), one after
  another in this process: the worker's reused calculator (``label_task``) against a new
  calculator per structure (as before calculators were reused), seconds per label and their
  ratio, and the largest label difference between the two ways. Threads: this process's
  (OMP_NUM_THREADS; the table says which).
- md: 4 walkers of the default loop's 107-atom cell (the default loop's shallow GMNN, random
  weights, Langevin at 300 K): serial, on 2 processes, on a 2-worker dask cluster, and as 4
  replicas vmapped into one jitted program. Wall time includes start-up and compilation.
- training: epoch time of the reference GMNN on 128 cu_bulk structures, on 1 and on 2
  simulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=2, fresh processes).

What a 2-core machine can show: at most 2x from two workers, less where a task is cheap
against the per-task cost of starting, pickling, scheduling and storing. Two simulated devices
share the same two cores, so their epoch time shows the overhead of sharding, not a speed-up.
Results of the parts run are merged into bench/results/scaleout.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ase
import numpy as np
from ase.build import bulk, molecule
from common import RESULTS, table, write_result
from pydantic import TypeAdapter
from scipy.spatial.transform import Rotation

from apax_core.config import Executor
from apax_core.labelling import EMTLabeller, XTBLabeller, label, label_task, task_key
from apax_core.tasks import TaskStore, run_tasks

EXECUTORS = {
    "serial": {"kind": "serial"},
    "processes2": {"kind": "processes", "n_workers": 2},
    "dask2": {"kind": "dask", "n_workers": 2},
}


def structures(system: str, n: int):
    if system == "emt":
        base = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 3))
        del base[0]
    else:
        base = molecule(system)
    out = []
    for k in range(n):
        atoms = base.copy()
        atoms.rattle(0.05, seed=k)
        out.append(atoms)
    return out


def timed(labeller, frames, executor: dict, root: Path) -> float:
    """Seconds to label ``frames`` (executor start included) from an empty store."""
    jobs = [(labeller, a, True) for a in frames]
    keys = [task_key(labeller, a) for a in frames]
    store = TaskStore(root / f"{type(labeller).__name__}_{executor['kind']}")
    config = TypeAdapter(Executor).validate_python(executor)
    start = time.perf_counter()
    results = run_tasks(label_task, jobs, keys, config, store, desc=executor["kind"])
    elapsed = time.perf_counter() - start
    failed = [r for r in results if isinstance(r, dict)]
    if failed:
        raise SystemExit(f"{len(failed)} labels failed: {failed[0]}")
    return elapsed


def labelling(args) -> tuple[list[dict], dict]:
    cases = {
        "emt": (EMTLabeller(), structures("emt", args.n)),
        "xtb": (XTBLabeller(), structures(args.xtb_molecule, args.n)),
    }
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (labeller, frames) in cases.items():
            times = {k: timed(labeller, frames, e, Path(tmp)) for k, e in EXECUTORS.items()}
            serial_task = times["serial"] / len(frames)
            for k, t in times.items():
                overhead = (t - times["serial"] / 2) / len(frames) if k != "serial" else 0.0
                row = {
                    "labeller": name,
                    "executor": k,
                    "s": t,
                    "speed-up": times["serial"] / t,
                    "ms/task serial": 1e3 * serial_task,
                    "overhead ms/task": 1e3 * overhead,
                }
                rows.append(row)
            results[name] = {"n": len(frames), "seconds": times, "serial_s_per_task": serial_task}
    return rows, results


def water_box(seed: int, density: float = 1.0) -> ase.Atoms:
    """16 H2O at ``density`` g/cm^3: oxygens on a bcc lattice of 2x2x2 cubic cells (O-O
    3.4 A at 1 g/cm^3), each molecule turned by a random rotation about its oxygen."""
    rng, water = np.random.default_rng(seed), molecule("H2O")
    volume = 16 * water.get_masses().sum() * 1.66054 / density  # amu/A^3 -> g/cm^3
    a = volume ** (1 / 3) / 2
    sites = [a * np.array([i, j, k]) for i in range(2) for j in range(2) for k in range(2)]
    sites += [x + a / 2 for x in sites]
    shape = water.positions - water.positions[0]
    positions = [x + Rotation.random(random_state=rng).apply(shape) for x in sites]
    return ase.Atoms("OH2" * 16, np.concatenate(positions), cell=[2 * a] * 3, pbc=True)


def xtb_reuse(args) -> tuple[list[dict], dict]:
    """Seconds per xTB label of 16 H2O: the reused calculator against a new one each,
    interleaved structure by structure so that a change of load hits both alike."""
    labeller, frames = XTBLabeller(), [water_box(seed) for seed in range(args.reuse_n)]
    label(water_box(len(frames)), labeller.get_calculator())  # loads tblite; not timed
    seconds, labels = {"new": 0.0, "reused": 0.0}, {"new": [], "reused": []}
    ways = {
        "new": lambda atoms: label(atoms, labeller.get_calculator()),
        "reused": lambda atoms: label_task((labeller, atoms, True)),
    }
    for atoms in frames:
        for way, run in ways.items():
            start = time.perf_counter()
            labels[way].append(run(atoms))
            seconds[way] += time.perf_counter() - start
    pairs = list(zip(labels["new"], labels["reused"], strict=True))
    result = {
        "n": len(frames),
        "atoms": len(frames[0]),
        "omp_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "s_per_label_new": seconds["new"] / len(frames),
        "s_per_label_reused": seconds["reused"] / len(frames),
        "new_over_reused": seconds["new"] / seconds["reused"],
        "max_abs_energy_difference_eV": max(
            abs(a.get_potential_energy() - b.get_potential_energy()) for a, b in pairs
        ),
        "max_abs_force_difference_eV_per_A": max(
            np.abs(a.get_forces() - b.get_forces()).max() for a, b in pairs
        ),
    }
    return [result], result


def md_walkers(args) -> tuple[list[dict], dict]:
    from scaleout_parts import N_WALKERS, walkers_timed

    times = walkers_timed(args.md_steps)
    rows = [
        {
            "walkers": N_WALKERS,
            "how": k,
            "s": v["s"],
            "speed-up": times["serial"]["s"] / v["s"],
            "us/atom/step": v["us_per_atom_step"],
        }
        for k, v in times.items()
    ]
    return rows, {"n_walkers": N_WALKERS, "steps": args.md_steps, "runs": times}


def training(args) -> tuple[list[dict], dict]:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    results = {}
    for n in (1, 2):
        command = [
            sys.executable,
            str(Path(__file__).parent / "scaleout_parts.py"),
            "train",
            str(n),
            str(args.epochs),
        ]
        out = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
        results[f"{n}_device"] = json.loads(out.stdout.strip().splitlines()[-1])
    one = results["1_device"]["epoch_s"]
    rows = [{"devices": k, **v, "ratio": v["epoch_s"] / one} for k, v in results.items()]
    return rows, results


PARTS = {"labelling": labelling, "xtb_reuse": xtb_reuse, "md": md_walkers, "training": training}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default=",".join(PARTS), help="comma-separated: " + ",".join(PARTS))
    p.add_argument("--n", type=int, default=200, help="structures per labeller")
    p.add_argument("--xtb-molecule", default="C60", help="an ase.build.molecule name")
    p.add_argument("--reuse-n", type=int, default=8, help="16 H2O labels each way (xtb_reuse)")
    p.add_argument("--md-steps", type=int, default=2000, help="MD steps per walker")
    p.add_argument("--epochs", type=int, default=4, help="training epochs per device count")
    p.add_argument("--out", default="scaleout")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    path = RESULTS / f"{args.out}.json"
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged.pop("machine", None)
    for part in args.parts.split(","):
        rows, merged[part] = PARTS[part](args)
        print(f"{part}:\n{table(rows, list(rows[0]))}\n")
    print(f"wrote {write_result(args.out, merged)}")


if __name__ == "__main__":
    main()
