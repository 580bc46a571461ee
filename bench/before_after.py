"""Old code against new code in one command: md_speed, train_speed and (optionally) the test
suite, each revision run from a clean checkout of its own, back to back.

    python bench/before_after.py --base REV [--head HEAD] [--rounds 1] [--tests]

Each revision runs its own ``bench/md_speed.py --sizes 108,864`` and
``bench/train_speed.py --epochs 5`` with its own packages first on the import path (the
interpreter and its installed dependencies are shared). Rounds alternate base, head, base, head
so that drifting machine load hits both. Prints a table of the medians with head/base ratios and
writes bench/results/before_after.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, table, write_result

REPO = ROOT.parent
BENCHES = {
    "md_speed": ["bench/md_speed.py", "--sizes", "108,864"],
    "train_speed": ["bench/train_speed.py", "--epochs", "5"],
}


def checkout(rev: str, where: Path) -> Path:
    """A detached worktree of ``rev``. Revisions before apax_core had an ``__init__.py`` get an
    empty one: a namespace package on PYTHONPATH would otherwise lose to the installed regular
    package, and the old revision would run the new code."""
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(where), rev],
        check=True,
        capture_output=True,
    )
    for package in ("apax_core", "apax_core/train"):
        (where / package / "__init__.py").touch()
    return where


def run(tree: Path, args: list[str], check: bool = True) -> tuple[float, int]:
    """Wall seconds and exit code of ``python args`` in ``tree``, with that tree's packages
    imported (also by the subprocesses it starts: dvc, zntrack)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *args], cwd=tree, env=env, check=check, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - start, done.returncode


def measure(tree: Path, tests: bool) -> dict[str, float]:
    """One round of every benchmark (and the suite) in ``tree``: the numbers compared."""
    out = {}
    run(tree, BENCHES["md_speed"])
    md = json.loads((tree / "bench/results/md_speed.json").read_text())["us_per_atom_step"]
    for variant, sizes in md.items():
        for n, us in sizes.items():
            out[f"md {variant} {n} atoms (us/atom/step)"] = us
    run(tree, BENCHES["train_speed"])
    train = json.loads((tree / "bench/results/train_speed.json").read_text())
    out["train epoch (s)"] = train["epoch_s"]
    out["train compile (s)"] = train["compile_s"]
    out["train test F MAE (meV/A)"] = train["test_forces_mae_meV_A"]
    if tests:
        suite = ["-m", "pytest", "-q", "-p", "no:cacheprovider"]
        out["test suite (s)"], out["test suite exit code"] = run(tree, suite, check=False)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="the old revision")
    p.add_argument("--head", default="HEAD", help="the new revision (default HEAD)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--tests", action="store_true", help="also time the whole test suite")
    args = p.parse_args()
    rounds: dict[str, list[dict]] = {"base": [], "head": []}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "shared").symlink_to(REPO.parent / "shared")  # the benchmarks' data
        trees = {k: checkout(getattr(args, k), Path(tmp) / k) for k in rounds}
        try:
            for r in range(args.rounds):
                for k in rounds:
                    print(f"round {r + 1}: {k} ({getattr(args, k)})", flush=True)
                    rounds[k].append(measure(trees[k], args.tests))
        finally:
            for tree in trees.values():
                subprocess.run(
                    ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                    check=False,
                )
    rows = []
    for key in rounds["base"][0]:
        base = statistics.median(m[key] for m in rounds["base"])
        head = statistics.median(m[key] for m in rounds["head"])
        rows.append(
            {
                "quantity": key,
                "base": base,
                "head": head,
                "head/base": head / base if base else None,
            }
        )
    print(table(rows, ["quantity", "base", "head", "head/base"]))
    result = {
        "base": args.base,
        "head": args.head,
        "rounds": rounds,
        "medians": rows,
        "load_average_at_end": os.getloadavg(),
    }
    print(f"wrote {write_result('before_after', result)}")


if __name__ == "__main__":
    main()
