"""Labelling on many workers: serial against a 2-worker process pool and a 2-worker dask
LocalCluster, with EMT (a cheap labeller: overhead-bound) and GFN2-xTB (a real one).

    python bench/scaleout.py [--n 200] [--xtb-molecule C60]

EMT labels rattled 107-atom fcc Cu cells; xTB labels rattled copies of a molecule. Each
executor runs the same structures from an empty result store, so every task is computed;
the cluster start (pool spawn, LocalCluster) is timed separately from the labelling. What a
2-core machine can show: at most 2x, and less where the task is cheap against the per-task
cost of pickling, scheduling and storing a result.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from ase.build import bulk, molecule
from common import table, write_result
from pydantic import TypeAdapter

from apax_core.config import Executor
from apax_core.tasks import TaskStore, run_tasks
from apax_nodes.label import EMTLabeller, XTBLabeller, label_task, task_key

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
    jobs = [(labeller, a) for a in frames]
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200, help="structures per labeller")
    p.add_argument("--xtb-molecule", default="C60", help="an ase.build.molecule name")
    p.add_argument("--out", default="scaleout")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
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
    print(table(rows, list(rows[0])))
    print("overhead: wall time beyond a perfect 2-way split of the serial time, per task")
    print(f"wrote {write_result(args.out, {'labelling': results})}")


if __name__ == "__main__":
    main()
