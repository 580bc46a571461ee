"""The water example's results (``example_project/water.py``), read from its repository: per
iteration the test errors, calibrated and uncalibrated force z^2, the per-atom Spearman rho and
the calibration set; the final NPT run's density and O-O g(r) first peak; every stage's run
time. Writes ``water.json`` and ``water.png`` (the g(r)) for ``report.py``.

    mkdir water && cd water && git init && dvc init
    python ../example_project/water.py && dvc repro
    python ../bench/experiments/water.py .          # then: python bench/experiments/report.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np
import yaml
from scipy.stats import sem

from apax_core.files import atomic_write

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "experiments"
EXPERIMENTAL_DENSITY = 0.997
"""g/cm^3, water at 298 K and 1 bar."""


def stage_times(repo: Path) -> dict[str, float]:
    """Seconds each stage's run took (ZnTrack's node-meta.json, an output of every stage), in
    dvc.yaml order."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    times = {}
    for name, spec in stages.items():
        for entry in spec.get("outs", []):
            path = repo / (str(next(iter(entry))) if isinstance(entry, dict) else str(entry))
            if path.name == "node-meta.json" and path.is_file():
                times[name] = json.loads(path.read_text())["run_time"]
    return times


def collect(repo: Path) -> dict:
    """Everything the report shows, read through zntrack in ``repo``."""
    import zntrack

    cwd = Path.cwd()
    os.chdir(repo)
    try:
        rows = zntrack.from_rev("Report").rows
        for i, row in enumerate(rows):
            test = zntrack.from_rev(f"iter{i}_Evaluate").metrics
            row["uncal_forces_z2"] = test.get("uncal_mean_z2_forces")
            row["stress_mae"] = test.get("stress_mae")
        liquid = zntrack.from_rev("final_LiquidStructure").metrics
        liquid["md_status"] = zntrack.from_rev("final_MD").status
        verdict = zntrack.from_rev("Report").verdict()
        pressures = [pressure_bar(a) for a in zntrack.from_rev("data_ReferenceMD").frames]
    finally:
        os.chdir(cwd)
    rows = [{k: _plain(v) for k, v in row.items()} for row in rows]
    xtb = {"mean": float(np.mean(pressures)), "sem": float(sem(pressures))}
    return {
        "rows": rows,
        "liquid": liquid,
        "verdict": verdict,
        "stage_s": stage_times(repo),
        "xtb_test_pressure_bar": xtb,
    }


def pressure_bar(atoms) -> float:
    """-trace(stress)/3 of a labelled frame in bar (1 eV/A^3 = 1.602e6 bar)."""
    return float(-np.mean(atoms.get_stress()[:3]) * 1.602176634e6)


def _plain(value):
    """JSON-safe: NaN -> None, numpy numbers -> Python numbers."""
    if hasattr(value, "item"):
        value = value.item()
    return None if isinstance(value, float) and value != value else value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("repo", type=Path, help="the water example's repository, after dvc repro")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    data = collect(args.repo.resolve())
    data["experimental_density"] = EXPERIMENTAL_DENSITY
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "water.json", json.dumps(data, indent=2))
    shutil.copy(args.repo / "nodes/final/LiquidStructure/plots/rdf.png", args.out / "water.png")
    print(json.dumps({k: data[k] for k in ("liquid", "verdict")}, indent=2))


if __name__ == "__main__":
    main()
