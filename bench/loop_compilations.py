"""XLA compilations per stage of a small active-learning loop, from a cold compilation cache.

    python bench/loop_compilations.py [--iterations 3] [--tree PATH]

Builds a 107-atom Cu loop (tiny shallow ensemble, UDD MD, 2 walkers) in a fresh DVC repository
and runs its stages one by one with ``dvc repro -s``, all sharing one empty persistent
compilation cache that keeps every program (no minimum compile time). A stage's count is the
number of cache entries it added: programs it had to compile because no earlier stage had
compiled the same one. What stays the same between iterations (model architecture, MD
settings, cell) should compile once, in iteration 0; what changes (parameters, calibration,
data) must be an input, not a constant. ``--tree`` runs another checkout's packages (for
before/after). Prints a table per stage and per iteration and writes
bench/results/loop_compilations.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import yaml
from common import ROOT, machine, table, write_result

GRAPH = """
import zntrack
import apax_nodes as an
from apax_nodes.loop import LoopSettings, build_loop
from apax_nodes.project import build

MODEL = dict(r_max=4.0, n_basis=4, n_radial=3, hidden=[16],
             ensemble={"kind": "shallow", "n_members": 3})
TRAIN = {"n_epochs": 4, "model": MODEL, "data": {"batch_size": 4, "val_batch_size": 4},
         "loss": [{"quantity": "energy", "kind": "crps", "atoms_exponent": 1.0},
                  {"quantity": "forces"}]}
MD = {"dynamics": {"kind": "langevin"}, "dt": 2.0, "duration": 400.0, "n_inner": 50,
      "sampling_rate": 10, "skin": 0.4, "udd": {"height": 0.2, "width": 1.0},
      "temperature": {"kind": "oscillating", "T_low": 300.0, "T_high": 600.0, "period": 200.0}}
project = zntrack.Project()
with project.group("data"):
    crystal = an.BuildBulk(element="Cu", repeat=[3, 3, 3], vacancies=1)
    boot = an.Bootstrap(data=crystal.frames, n=8, rattle=0.08, seed=0)
    seed = an.Label(data=boot.frames, labeller=an.EMTLabeller())
    split = an.Split(data=seed.frames, fractions=[0.5, 0.25, 0.25])
settings = LoopSettings(n_iterations=N_ITERATIONS, train=TRAIN, warm_train=TRAIN, md=MD,
                        n_walkers=2, n_select=3)
build_loop(project, settings, initial_data=split, test_data=split, start_structures=crystal,
           labeller=an.EMTLabeller())
build(project)
"""


def sh(cmd: list[str], cwd: Path, env: dict) -> str:
    return subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def stages(root: Path) -> list[str]:
    """Stage names in an order ``dvc repro`` could run them (each after its dependencies)."""
    spec = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]

    def paths(entries) -> set[str]:
        return {next(iter(e)) if isinstance(e, dict) else e for e in entries or []}

    producer = {out: name for name, st in spec.items() for out in paths(st.get("outs"))}
    needs = {
        name: {producer[d] for d in paths(st.get("deps")) if d in producer}
        for name, st in spec.items()
    }
    order: list[str] = []
    while len(order) < len(needs):
        order += [n for n, deps in needs.items() if n not in order and deps <= set(order)]
    return order


def count(cache: Path) -> int:
    return sum(1 for p in cache.iterdir() if not p.name.endswith("-atime")) if cache.is_dir() else 0


def measure(tree: Path, n_iterations: int, work: Path) -> list[dict]:
    """Per stage: new compilations and wall time."""
    cache, root = work / "xla", work / "project"
    root.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "APAX_COMPILATION_CACHE": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        sh(cmd, root, env)
    (root / "graph.py").write_text(GRAPH.replace("N_ITERATIONS", str(n_iterations)))
    sh(["python", "graph.py"], root, env)
    rows = []
    for stage in stages(root):
        before, t0 = count(cache), time.perf_counter()
        sh(["dvc", "repro", "-s", stage], root, env)
        rows.append(
            {
                "stage": stage,
                "compilations": count(cache) - before,
                "wall_s": round(time.perf_counter() - t0, 1),
            }
        )
        print(f"{stage:24s} {rows[-1]['compilations']:4d} {rows[-1]['wall_s']:7.1f} s", flush=True)
    return rows


def per_iteration(rows: list[dict]) -> list[dict]:
    groups: dict[str, dict] = {}
    for r in rows:
        key = r["stage"].split("_")[0] if r["stage"].startswith("iter") else "data/report"
        g = groups.setdefault(key, {"group": key, "compilations": 0, "wall_s": 0.0})
        g["compilations"] += r["compilations"]
        g["wall_s"] = round(g["wall_s"] + r["wall_s"], 1)
    return list(groups.values())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--tree", type=Path, default=ROOT.parent, help="checkout whose code runs")
    p.add_argument("--name", default="loop_compilations", help="result file name")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(args.tree.resolve(), args.iterations, Path(tmp))
    groups = per_iteration(rows)
    print(table(rows, ["stage", "compilations", "wall_s"]))
    print(table(groups, ["group", "compilations", "wall_s"]))
    sha = sh(["git", "rev-parse", "--short", "HEAD"], args.tree, dict(os.environ)).strip()
    result = {"tree": sha, "stages": rows, "groups": groups, "machine": machine()}
    print(f"wrote {write_result(args.name, result)}")


if __name__ == "__main__":
    main()
