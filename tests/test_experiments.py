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
    for r in [results["continuous_learning"]["iteration0"], *variants["scratch"]]:
        table = r["families"]  # every family fitted on the validation set, judged on the test
        assert set(table["rows"]) == {"uncalibrated", "global", "per_element", "power", "isotonic"}
        assert table["auto"] in table["held_out_nll"]
        # the model calibrated itself by the default, auto: the same fit as the table's row
        assert math.isclose(table["rows"][table["auto"]]["z2"], r["mean_z2_forces"], rel_tol=1e-6)
    udd = results["udd"]
    assert set(udd["summary"]) == {"unbiased", "paper"}  # --quick: plain MD, eq. 9 as printed
    assert all(len(runs) == 2 for runs in udd["runs"].values())  # 2 seeds per condition
    assert all(r["bins_visited"] >= 1 for runs in udd["runs"].values() for r in runs)
    arms = json.loads((tmp_path / "active_vs_passive.json").read_text())
    assert set(arms["summary"]) == {"active", "passive"}  # --quick: the two pure arms
    assert all(len(m["rare_mean"]) == 2 and m["stable"] for m in arms["summary"].values())

    report = (tmp_path / "results.md").read_text()
    assert "Not run yet" not in report and "Wall time of the set" in report
    assert f"{variants['warm30'][-1]['forces_mae']:.1f}" in report  # numbers come from the JSON
    assert "](udd.png)" in report and "- Regime mapping: the paper's A" in report
    assert "Calibration acceptance met: some family at" in report
