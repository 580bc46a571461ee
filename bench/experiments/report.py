"""docs/results.md from the experiments' JSON (numbers are never typed by hand).

python bench/experiments/report.py [--results DIR] [--doc FILE]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from apax_core.files import atomic_write

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "experiments"
DOC = ROOT / "docs" / "results.md"

HEADER = """# Results

Experiments on the finished loop, run on 2 CPU cores. Each section names the command that
produced it; the numbers below are read from its JSON by `python bench/experiments/report.py`.
"""


def _fmt(value, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def selection_efficacy(data: dict, image: str) -> str:
    s = data["settings"]
    lines = [
        "## Selection efficacy",
        "",
        "`python bench/experiments/selection_efficacy.py` "
        f"({s['seeds']} seeds, {s['rounds']} rounds of {s['per_round']}, {s['epochs']} epochs "
        f"from scratch per round, pool {4 * s['pool_per_T']} frames; "
        f"{data['wall_s'] / 60:.0f} min).",
        "",
        "Test force MAE (meV/A, mean +- std over seeds) against labelled structures:",
        "",
    ]
    summary = data["summary"]
    counts = next(iter(summary.values()))["n_labelled"]
    lines.append(
        "| method | " + " | ".join(str(n) for n in counts) + " | labels to random's final |"
    )
    lines.append("|---" * (len(counts) + 2) + "|")
    for method, m in summary.items():
        cells = [
            f"{mu:.0f} +- {sd:.0f}"
            for mu, sd in zip(m["forces_mae_mean"], m["forces_mae_std"], strict=True)
        ]
        ratio = m["label_ratio_vs_random"]
        reach = f"{_fmt(m['labels_to_random_final'], 1)} ({_fmt(ratio, 2)}x)"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {reach} |")
    reached = [
        (m["label_ratio_vs_random"], name)
        for name, m in summary.items()
        if name != "random" and m["label_ratio_vs_random"] is not None
    ]
    ratio, name = min(reached, default=(None, None))
    found = f"{name} reaches it with {ratio:.2f}x" if name else "no selection method reaches it"
    lines += ["", f"- Random selection's final error: {found} the labels (aim: at most 0.50x)."]
    lines += ["", f"![selection efficacy]({image})", ""]
    return "\n".join(lines)


def selection_diagnostics(data: dict, image: str) -> str:
    s = data["settings"]
    steps = ", ".join(str(k) for k in data["picked_optimisation_steps"])
    return "\n".join(
        [
            "## Selection diagnostics",
            "",
            "`python bench/experiments/selection_diagnostics.py`: a pool of "
            f"{s['n_md']} MD frames (900 K) and {s['n_optimisation']} BFGS steps; "
            f"{s['n']} picks by max distance in last-layer-gradient space.",
            "",
            f"- Picked {data['picked_from_md']} MD frames and "
            f"{data['picked_from_optimisation']} optimisation steps (steps {steps}).",
            f"- Distance of the first pick {data['curve'][0]:.3g}, of the last pick "
            f"{data['curve'][s['n'] - 1]:.3g}, of the last of the ranked pool "
            f"{data['curve'][-1]:.3g} (feature units).",
            "",
            f"![selection diagnostics]({image})",
            "",
        ]
    )


def continuous_learning(data: dict, image: str) -> str:
    s, variants = data["settings"], data["variants"]
    scratch_s = sum(r["train_s"] for r in variants["scratch"])
    lines = [
        "## Continuous learning and uncertainty through the loop",
        "",
        "`python bench/experiments/continuous_learning.py` "
        f"({s['iterations']} iterations, {s['epochs']} epochs from scratch, {s['walkers']} UDD "
        f"walkers of {s['md_steps']} steps; {data['wall_s'] / 60:.0f} min).",
        "",
        "| variant | final F MAE (meV/A) | final E MAE (meV/atom) | epochs | training s "
        "| time vs scratch |",
        "|---|---|---|---|---|---|",
    ]
    for name, rows in variants.items():
        seconds = sum(r["train_s"] for r in rows)
        lines.append(
            f"| {name} | {rows[-1]['forces_mae']:.1f} | {rows[-1]['energy_mae']:.2f} "
            f"| {sum(r['epochs'] for r in rows)} | {seconds:.0f} | {seconds / scratch_s:.2f} |"
        )
    lines += ["", *continuous_learning_findings(variants), ""]
    lines += ["Per iteration (test set; calibrated, then uncalibrated in brackets):", ""]
    lines += ["| variant | it | F MAE | F z^2 | miscal. area | Spearman | walkers stopped |"]
    lines += ["|---|---|---|---|---|---|---|"]
    for name, rows in variants.items():
        for r in rows:
            lines.append(
                f"| {name} | {r['iteration']} | {r['forces_mae']:.1f} "
                f"| {r['mean_z2_forces']:.2f} ({r['uncal_mean_z2_forces']:.2f}) "
                f"| {r['miscal_area_forces']:.3f} ({r['uncal_miscal_area_forces']:.3f}) "
                f"| {r['spearman_forces']:.2f} | {r['n_stopped']}/{r['n_walkers']} |"
            )
    lines += [
        "",
        f"![continuous learning]({image})",
        "",
    ]
    return "\n".join(lines)


def continuous_learning_findings(variants: dict) -> list[str]:
    """The issue's aims, checked against the JSON: warm30 against scratch after the last
    iteration, and the calibrated force z^2 in [0.5, 2] at every iteration."""
    scratch, out = variants["scratch"], []
    if "warm30" in variants:
        warm = variants["warm30"]
        f = warm[-1]["forces_mae"] / scratch[-1]["forces_mae"]
        t = sum(r["train_s"] for r in warm) / sum(r["train_s"] for r in scratch)
        out.append(
            f"- warm30 after the last iteration: {f:.2f}x scratch's test force MAE at {t:.2f}x "
            f"its cumulative training time (aim: at most 1x at at most 0.40x)."
        )
    outside = [
        f"{name} {r['iteration']} ({r['mean_z2_forces']:.2f})"
        for name, rows in variants.items()
        for r in rows
        if not 0.5 <= r["mean_z2_forces"] <= 2.0
    ]
    n = sum(len(rows) for rows in variants.values())
    out.append(
        f"- Calibrated force mean z^2 within [0.5, 2] at {n - len(outside)} of {n} iterations"
        + (f"; outside: {', '.join(outside)}." if outside else ".")
    )
    return out


def udd(data: dict, image: str) -> str:
    s = data["settings"]
    lines = [
        "## Uncertainty-driven dynamics",
        "",
        f"`python bench/experiments/udd.py`: butane, a model of {s['train_frames']} xTB frames "
        f"of the trans well; per condition {s['seeds']} runs (seeds) of {s['ps']:g} ps of "
        f"Langevin MD at 300 K; UDD width {s['width']:.4f} eV (half depth at 3x the median "
        "training uncertainty). Mean +- std over seeds:",
        "",
        "| condition | dihedral bins visited (of 36) | entropy | trans-gauche hops "
        "| runs that crossed | max sigma_E (eV) | longest C-C (A) | bins vs unbiased |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in data["summary"].items():
        cells = [
            f"{m[k]['mean']:.{d}f} +- {m[k]['std']:.{d}f}"
            for k, d in (("bins_visited", 1), ("entropy", 2), ("transitions", 1))
        ]
        ratio, runs = data["range_ratio"].get(name), data["runs"][name]
        crossed = f"{sum(r['transitions'] > 0 for r in runs)}/{len(runs)}"
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {crossed} "
            f"| {m['max_energy_uncertainty']['mean']:.3f} "
            f"| {m['max_cc_bond']['mean']:.2f} | {_fmt(ratio, 2)} |"
        )
    lines += ["", f"![udd]({image})", ""]
    return "\n".join(lines)


def water(data: dict, image: str) -> str:
    """The molecular-liquid example: one row per iteration, the final NPT run, stage times."""
    times = data["stage_s"]
    reference = sum(t for n, t in times.items() if n.startswith("data_ReferenceMD"))
    lines = [
        "## Water from scratch (GFN2-xTB, NPT at 1 bar)",
        "",
        "`python example_project/water.py && dvc repro`, then "
        "`python bench/experiments/water.py REPO`: 16 H2O, seed data from a relaxed bounded "
        "bootstrap and 330 K xTB MD, test data from xTB MD of another box that the loop never "
        f"sees. Sum of the stage run times {sum(times.values()) / 60:.1f} min on 2 cores, of "
        f"which xTB reference MD {reference / 60:.1f} min.",
        "",
        "| iter | n_train | calibrated on | test F MAE (meV/A) | F z^2 calibrated "
        "| F z^2 uncalibrated | F Spearman per atom | stress MAE (meV/A^3) | MD |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        cells = [
            r["iteration"],
            r["n_train"],
            r.get("calibration") or "-",
            _fmt(r["test_forces_mae"]),
            _fmt(r["forces_z2"], 2),
            _fmt(r.get("uncal_forces_z2"), 2),
            _fmt(r.get("forces_spearman"), 2),
            _fmt(r.get("stress_mae"), 2),
            r.get("md") or "-",
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    liquid, xtb = data["liquid"], data["xtb_test_pressure_bar"]
    status = liquid["md_status"]
    ran = f"{status['time_fs'] / 1000:.1f} ps" + (
        f", stopped: {status['first_stop']}" if status.get("stopped") else ""
    )
    if status.get("reason") == "volume":
        ran += "; the box was still changing: not an equilibrium density"
    lines += [
        "",
        f"- Loop: {data['verdict']}.",
        f"- Final model, NPT at 300 K and 1 bar ({ran}; the second half of its frames): density "
        f"{liquid['density_g_cm3']:.3f} +- {liquid['density_std']:.3f} g/cm^3, O-O g(r) first "
        f"peak at {liquid['OO_first_peak_A']:.2f} A (height {liquid['OO_first_peak_g']:.2f}). "
        f"Experiment: {data['experimental_density']} g/cm^3. No GFN2-xTB NPT reference was "
        "affordable here; what xTB says instead: its pressure on the test frames (0.997 "
        f"g/cm^3, 330 K) is {xtb['mean']:.0f} +- {xtb['sem']:.0f} bar, so xTB water at 1 bar "
        f"is {_density_reading(xtb)} the experiment's.",
        "",
        f"![water g(r)]({image})",
        "",
    ]
    return "\n".join(lines)


def _density_reading(pressure: dict) -> str:
    """What a pressure at the experimental density (mean +- standard error, bar) says about the
    density at 1 bar: positive -> the liquid would expand."""
    if pressure["mean"] - 2 * pressure["sem"] > 0:
        return "less dense than"
    if pressure["mean"] + 2 * pressure["sem"] < 0:
        return "denser than"
    return "within this test's resolution of"


SECTIONS = {
    "selection_efficacy": selection_efficacy,
    "selection_diagnostics": selection_diagnostics,
    "continuous_learning": continuous_learning,
    "udd": udd,
}
EXAMPLES = {"water": water}
"""Sections of the example projects (not run by run_all.py): shown when their JSON exists."""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=RESULTS, help="folder of the JSON and PNG")
    p.add_argument("--doc", type=Path, default=DOC, help="the Markdown file to write")
    args = p.parse_args()
    write_report(args.results, args.doc)


def write_report(results: Path, doc: Path) -> None:
    parts = [HEADER]
    data = {
        n: json.loads((results / f"{n}.json").read_text())
        for n in (*SECTIONS, *EXAMPLES)
        if (results / f"{n}.json").is_file()
    }
    minutes = {n: d["wall_s"] / 60 for n, d in data.items() if n in SECTIONS and "wall_s" in d}
    if minutes:
        each = ", ".join(f"{n} {m:.0f}" for n, m in minutes.items())
        parts.append(
            f"Wall time of the set on 2 CPU cores: {sum(minutes.values()):.0f} min ({each}).\n"
        )
    for name, render in SECTIONS.items():
        if name in data:
            image = os.path.relpath(results / f"{name}.png", doc.parent)
            parts.append(render(data[name], image))
        else:
            parts.append(f"## {name}\n\nNot run yet (`bench/experiments/{name}.py`).\n")
    for name, render in EXAMPLES.items():
        if name in data:
            parts.append(render(data[name], os.path.relpath(results / f"{name}.png", doc.parent)))
    atomic_write(doc, "\n".join(parts))
    print(f"wrote {doc}")


if __name__ == "__main__":
    main()
