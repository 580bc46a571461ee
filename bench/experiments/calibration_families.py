"""Calibration families through the default loop, read from its repository: per iteration every
family fitted on the set that iteration's Train calibrated on (its ``calibration_data``, else
its validation data) and judged on the loop's test set (the Evaluate data), with the raw
spreads and auto's choice (``families.py``). Writes ``calibration_families.json`` for
``report.py``.

    git clone -q . /tmp/defloop && cd /tmp/defloop && dvc repro
    python bench/experiments/calibration_families.py /tmp/defloop   # then report.py
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import yaml
from families import model_family_table
from water import RESULTS, stage_times

from apax_core.data import from_atoms
from apax_core.files import atomic_write


def iterations(repo: Path) -> list[int]:
    """The iterations with a Train stage in ``repo``'s dvc.yaml (the unnamed loop)."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    return sorted(int(n[4:-6]) for n in stages if n.startswith("iter") and n.endswith("_Train"))


def iteration_table(i: int) -> dict:
    """The family table of iteration ``i`` (the working directory is the repository)."""
    import zntrack

    train = zntrack.from_rev(f"iter{i}_Train")
    evaluate = zntrack.from_rev(f"iter{i}_Evaluate")
    frames = train.calibration_data or train.validation_data
    cal_s, test_s = [from_atoms(a) for a in frames], [from_atoms(a) for a in evaluate.data]
    table = model_family_table(train.get_model(), cal_s, test_s)
    stored = evaluate.metrics.get("mean_z2_forces")  # the loop's own z^2: a cross-check
    return {"iteration": i, "calibration_set": train.metrics.get("calibration_set"), **table} | {
        "evaluate_z2": stored
    }


def collect(repo: Path) -> dict:
    cwd, start = Path.cwd(), time.perf_counter()
    os.chdir(repo)
    try:
        rows = [iteration_table(i) for i in iterations(repo)]
    finally:
        os.chdir(cwd)
    return {"rows": rows, "stage_s": stage_times(repo), "analysis_s": time.perf_counter() - start}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("repo", type=Path, help="the default loop's repository, after dvc repro")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    data = collect(args.repo.resolve())
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "calibration_families.json", json.dumps(data, indent=2, default=float))
    for r in data["rows"]:
        cells = ", ".join(f"{f} {v['z2']:.2f}/{v['area']:.3f}" for f, v in r["rows"].items())
        print(f"iter{r['iteration']}: auto {r['auto']}, meets {r['any_meets']}; {cells}")


if __name__ == "__main__":
    main()
