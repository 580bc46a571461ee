"""Start-up of a stage process: what every ``zntrack run`` pays before its node does any work.

    python bench/startup.py [--before REV] [--repeats 5]

Times, in fresh interpreters, ``import apax_nodes`` (what ``zntrack run`` imports for any of
our nodes), the import of the MD engine, and an MD stage's path to the end of its first chunk
with a warm compilation cache (imports, model load, neighbour list, the cached program, 10
steps of 108 Cu atoms with a reference-size GMNN, the frame written), for this tree and for
the git revision ``REV`` (checked out into a temporary worktree; default: the commit before
the start-up work), alternating the two so that load on the machine hits both alike. Each
tree has its own compilation cache, warmed by one untimed run. Prints the median seconds and
the ratio after/before, and writes bench/results/startup.json.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine, table, write_result

TREE = ROOT.parent
PROGRAMS = {
    "import apax_nodes": "import apax_nodes",
    "import the MD engine": "import apax_nodes, apax_core.md.run",
    "MD stage to its first chunk, warm cache": (
        "import ase.build, apax_nodes\n"
        "from apax_core.md import run_md\n"
        "from apax_core.config.md import MDConfig\n"
        "from apax_core.model_dir import load_model\n"
        "atoms = ase.build.bulk('Cu', 'fcc', a=3.61, cubic=True).repeat(3)\n"
        "config = MDConfig(temperature={'kind': 'constant', 'T': 300.0}, dt=1.0, duration=10.0,"
        " n_inner=10, sampling_rate=10, force_uncertainty=False)\n"
        "run_md(load_model('{model}'), atoms, config, '{out}', restart=False,"
        " progress_bar=False)\n"
    ),
}


def seconds(tree: Path, code: str, work: Path) -> float:
    """Wall time of a fresh interpreter that runs ``code`` with ``tree``'s packages first and
    its own compilation cache under ``work``."""
    code = code.replace("{model}", str(work / "model")).replace("{out}", str(work / "md"))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=tree, check=True, env=_env(tree, work))
    return time.perf_counter() - start


def _env(tree: Path, work: Path) -> dict:
    import os

    cache = work / f"xla_cache_{tree.name}"
    return {**os.environ, "PYTHONPATH": str(tree), "APAX_COMPILATION_CACHE": str(cache)}


def write_model(directory: Path) -> None:
    """A randomly initialised reference-size GMNN (speed does not depend on training)."""
    from md_speed import reference_model

    from apax_core.config import TrainConfig
    from apax_core.model_dir import save_config, save_params, save_stats

    model = reference_model()
    directory.mkdir(parents=True)
    save_config(directory, TrainConfig(n_epochs=1, model=model.config))
    save_stats(directory, model.stats)
    save_params(directory, model.params)


def measure(trees: dict[str, Path], repeats: int, work: Path) -> list[dict]:
    rows = []
    for name, code in PROGRAMS.items():
        runs: dict[str, list[float]] = {t: [] for t in trees}
        for tree in trees.values():  # warms the tree's compilation cache
            seconds(tree, code, work)
        for _ in range(repeats):
            for label, tree in trees.items():
                runs[label].append(seconds(tree, code, work))
        row = {"what": name, **{f"{t} s": statistics.median(v) for t, v in runs.items()}}
        row["after/before"] = row["after s"] / row["before s"]
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", default="a551943", help="git revision to compare with")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(
            ["git", "worktree", "add", "-q", "--detach", str(before), args.before],
            cwd=TREE,
            check=True,
        )
        try:
            write_model(Path(tmp) / "model")
            rows = measure({"before": before, "after": TREE}, args.repeats, Path(tmp))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=TREE)
    print(table(rows, ["what", "before s", "after s", "after/before"]))
    path = write_result("startup", {"before": args.before, "rows": rows, "machine": machine()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
