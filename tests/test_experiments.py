"""The published experiments stay runnable: their --quick set, end to end, and its report."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("selection_efficacy", "selection_diagnostics", "continuous_learning", "udd")


def test_quick_experiments_write_their_results_and_the_report(tmp_path):
    script = ROOT / "bench" / "experiments" / "run_all.py"
    subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path)], check=True)
    results = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in SCRIPTS}
    assert all((tmp_path / f"{name}.png").stat().st_size > 10_000 for name in SCRIPTS)

    efficacy = results["selection_efficacy"]["summary"]
    assert set(efficacy) == {"max_distance", "max_uncertainty", "random"}
    assert all(m["n_labelled"] == [8, 12] for m in efficacy.values())  # 1 round of 4 picks
    diagnostics = results["selection_diagnostics"]
    assert len(set(diagnostics["picks"])) == diagnostics["settings"]["n"]
    assert diagnostics["curve"] == sorted(diagnostics["curve"], reverse=True)
    variants = results["continuous_learning"]["variants"]
    assert [r["epochs"] for r in variants["scratch"]] == [6, 6]
    assert [r["epochs"] for r in variants["warm30"]] == [2, 2]
    assert all(math.isfinite(r["forces_mae"]) for rows in variants.values() for r in rows)
    udd = results["udd"]
    assert set(udd["summary"]) == {"unbiased", "A=1"}
    assert all(len(runs) == 2 for runs in udd["runs"].values())  # 2 seeds per condition
    assert all(r["bins_visited"] >= 1 for runs in udd["runs"].values() for r in runs)

    report = (tmp_path / "results.md").read_text()
    assert "Not run yet" not in report and "Wall time of the set" in report
    assert f"{variants['warm30'][-1]['forces_mae']:.1f}" in report  # numbers come from the JSON
    assert "](udd.png)" in report
