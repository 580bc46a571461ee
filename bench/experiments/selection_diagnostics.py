"""Selection diagnostics (paper 4.1, fig. 3): which frames max-distance selection takes from a
pool made of an MD trajectory and a geometry optimisation.

    python bench/experiments/selection_diagnostics.py [--quick] [--n 12]

A shallow GMNN ensemble is trained on 8 EMT frames of the Cu/Ag alloy at 300 K (the setup of
selection_efficacy.py). The pool: 60 frames of EMT Langevin MD at 900 K and every step of a
BFGS relaxation of a strongly rattled cell. The whole pool is ranked greedily in the
last-layer-gradient feature space (eq. 11-12); the first ``n`` are the selection.

Writes bench/results/experiments/selection_diagnostics.{json,png}: the sorted-distance
curve with the picks, the picks along the pool (MD time, optimisation step) and the PCA map.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from ase.calculators.emt import EMT
from ase.optimize import BFGS
from experiment import parser, write_json
from matplotlib.figure import Figure
from selection_efficacy import alloy, emt_md, labelled_copy, trained_model

from apax_core.config import MaxDistance
from apax_core.data import from_atoms
from apax_core.select import select
from apax_core.select.diagnostics import COLOURS, pca_2d


def relaxation(seed: int, rattle: float = 0.25) -> list:
    """Every step of a BFGS relaxation (EMT) of a rattled alloy cell, with its labels."""
    atoms = alloy(seed)
    atoms.rattle(rattle, seed=seed)
    atoms.calc = EMT()
    frames = []
    optimiser = BFGS(atoms, logfile=None)
    optimiser.attach(lambda: frames.append(labelled_copy(atoms)))
    optimiser.run(fmax=0.05, steps=200)
    return frames


def figure(result: dict, train_f, pool_f, origin: np.ndarray, path: Path) -> None:
    picks, curve = np.array(result["picks"]), np.array(result["curve"])
    fig = Figure(figsize=(13, 3.8))
    a, b, c = fig.subplots(1, 3)
    rank = np.arange(1, len(curve) + 1)
    a.plot(rank, curve, color=COLOURS["pool"], lw=1.2, label="greedy ranking of the pool")
    a.scatter(
        rank[: len(picks)],
        curve[: len(picks)],
        color=COLOURS["selected"],
        s=14,
        zorder=3,
        label="selected",
    )
    a.set(xlabel="pick", ylabel="distance to nearest known (feature units)", yscale="log")
    a.legend(frameon=False)
    for name, colour in (("md", "tab:blue"), ("optimisation", "tab:green")):
        idx = np.flatnonzero(origin == name)
        b.plot(
            idx,
            np.zeros_like(idx) + (0 if name == "md" else 1),
            "|",
            color=colour,
            ms=14,
            label=f"{name} frames",
        )
    chosen = np.isin(np.arange(len(origin)), picks)
    b.plot(
        np.flatnonzero(chosen),
        (origin[chosen] != "md").astype(float),
        "v",
        color=COLOURS["selected"],
        ms=8,
        label="selected",
    )
    b.set(
        xlabel="pool index (MD time, then optimisation step)",
        yticks=[0, 1],
        yticklabels=["MD 900 K", "BFGS"],
        ylim=(-0.6, 1.8),
    )
    b.legend(frameon=False, fontsize=8, loc="upper left")
    t_xy, p_xy = pca_2d(train_f, pool_f)
    c.scatter(*t_xy.T, s=14, color=COLOURS["train"], label="training")
    for name, colour in (("md", "tab:blue"), ("optimisation", "tab:green")):
        c.scatter(*p_xy[origin == name].T, s=8, color=colour, label=f"pool: {name}")
    c.scatter(
        *p_xy[picks].T, s=30, facecolor="none", edgecolor=COLOURS["selected"], label="selected"
    )
    c.set(xlabel="PC 1 (feature units)", ylabel="PC 2 (feature units)")
    c.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = parser(__doc__, "10 MD frames, 5 epochs")
    p.add_argument("--n", type=int, default=12, help="structures selected")
    p.add_argument("--epochs", type=int, default=100)
    args = p.parse_args()
    n_md, epochs = (10, 5) if args.quick else (60, args.epochs)
    start, every = time.perf_counter(), 2 if args.quick else 20
    initial, val = emt_md(300.0, 8, every, seed=1000), emt_md(600.0, 4, every, seed=2000)
    md, opt = emt_md(900.0, n_md, every, seed=7), relaxation(seed=8)
    pool = md + opt
    origin = np.array(["md"] * len(md) + ["optimisation"] * len(opt))
    with tempfile.TemporaryDirectory() as tmp:
        model = trained_model(initial, val, epochs, 0, Path(tmp) / "model")
    train_s, pool_s = [from_atoms(a) for a in initial], [from_atoms(a) for a in pool]
    sel = select(model, train_s, pool_s, args.n, MaxDistance(), rank_all=True)
    picks = sel.indices.tolist()
    result = {
        "settings": {"n": args.n, "epochs": epochs, "n_md": len(md), "n_optimisation": len(opt)},
        "picks": picks,
        "picked_from_md": int(sum(origin[picks] == "md")),
        "picked_from_optimisation": int(sum(origin[picks] == "optimisation")),
        "picked_optimisation_steps": sorted(int(i) - len(md) for i in picks if i >= len(md)),
        "curve": sel.curve.tolist(),
        "wall_s": time.perf_counter() - start,
    }
    stem = write_json(args, "selection_diagnostics", result)
    figure(result, sel.train_features, sel.pool_features, origin, stem.with_suffix(".png"))
    print(
        f"picked {result['picked_from_md']} MD frames and {result['picked_from_optimisation']} "
        f"optimisation steps {result['picked_optimisation_steps']} of {len(opt)}"
    )
    print(f"wrote {stem}.json and .png")


if __name__ == "__main__":
    main()
