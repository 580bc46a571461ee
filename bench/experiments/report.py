"""docs/results.md from the experiments' JSON (numbers are never typed by hand).

python bench/experiments/report.py
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "experiments"
DOC = ROOT / "docs" / "results.md"

HEADER = """# Results

Experiments on the finished loop, run on 2 CPU cores. Each section names the command that
produced it; the numbers below are read from its JSON by `python bench/experiments/report.py`.
"""


def _fmt(value, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def selection_efficacy(data: dict) -> str:
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
    lines += ["", "![selection efficacy](../bench/results/experiments/selection_efficacy.png)", ""]
    return "\n".join(lines)


def selection_diagnostics(data: dict) -> str:
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
            "![selection diagnostics](../bench/results/experiments/selection_diagnostics.png)",
            "",
        ]
    )


def continuous_learning(data: dict) -> str:
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
    lines += ["", "Per iteration (test set; calibrated, then uncalibrated in brackets):", ""]
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
        "![continuous learning](../bench/results/experiments/continuous_learning.png)",
        "",
    ]
    return "\n".join(lines)


def udd(data: dict) -> str:
    s = data["settings"]
    lines = [
        "## Uncertainty-driven dynamics",
        "",
        f"`python bench/experiments/udd.py`: butane, a model of {s['train_frames']} xTB frames "
        f"of the trans well; {s['ps']:.0f} ps of Langevin MD at 300 K each, UDD height "
        f"{s['height']} eV, width {s['width']:.4f} eV.",
        "",
        "| run | dihedral bins visited (of 36) | histogram entropy | max energy uncertainty (eV) |",
        "|---|---|---|---|",
    ]
    for name in ("unbiased", "udd"):
        r = data[name]
        lines.append(
            f"| {name} | {r['bins_visited']} | {r['entropy']:.2f} "
            f"| {r['max_energy_uncertainty']:.3f} |"
        )
    lines += [
        "",
        f"Explored range, UDD / unbiased: {data['range_ratio']:.2f}x.",
        "",
        "![udd](../bench/results/experiments/udd.png)",
        "",
    ]
    return "\n".join(lines)


SECTIONS = {
    "selection_efficacy": selection_efficacy,
    "selection_diagnostics": selection_diagnostics,
    "continuous_learning": continuous_learning,
    "udd": udd,
}


def main() -> None:
    parts = [HEADER]
    for name, render in SECTIONS.items():
        path = RESULTS / f"{name}.json"
        if path.is_file():
            parts.append(render(json.loads(path.read_text())))
        else:
            parts.append(f"## {name}\n\nNot run yet (`bench/experiments/{name}.py`).\n")
    DOC.write_text("\n".join(parts))
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
