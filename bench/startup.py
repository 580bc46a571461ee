"""Start-up of a stage process: what every ``zntrack run`` pays before its node does any work.

    python bench/startup.py [--before REV] [--repeats 5]

Times, in fresh interpreters, ``import apax_nodes`` (what ``zntrack run`` imports for any of
our nodes) and the import of the MD engine, for this tree and for the git revision ``REV``
(checked out into a temporary worktree; default: the commit before the start-up work),
alternating the two so that load on the machine hits both alike. Prints the median seconds
and the ratio after/before, and writes bench/results/startup.json.
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
}


def seconds(tree: Path, code: str) -> float:
    """Wall time of a fresh interpreter that runs ``code`` with ``tree``'s packages first."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=tree, check=True, env=_env(tree))
    return time.perf_counter() - start


def _env(tree: Path) -> dict:
    import os

    return {**os.environ, "PYTHONPATH": str(tree)}


def measure(trees: dict[str, Path], repeats: int) -> list[dict]:
    rows = []
    for name, code in PROGRAMS.items():
        runs: dict[str, list[float]] = {t: [] for t in trees}
        for _ in range(repeats):
            for label, tree in trees.items():
                runs[label].append(seconds(tree, code))
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
            rows = measure({"before": before, "after": TREE}, args.repeats)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=TREE)
    print(table(rows, ["what", "before s", "after s", "after/before"]))
    path = write_result("startup", {"before": args.before, "rows": rows, "machine": machine()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
