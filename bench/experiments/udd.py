"""Does uncertainty-driven dynamics explore more (paper 4.5)? Unbiased against UDD-biased MD of
butane's C-C-C-C torsion, with a model trained on GFN2-xTB data of the trans well only.

    python bench/experiments/udd.py [--quick] [--ps 20] [--seeds 4] [--heights 0.5,1,2]

Training data: xTB (tblite) Langevin MD of trans-butane at 300 K (every 20th of 4000 steps,
0.5 fs), where the dihedral stays near 180 degrees. A shallow GMNN ensemble (4 members, CRPS)
learns it. Then the JAX engine runs Langevin MD at 300 K for ``--ps`` picoseconds from
``--seeds`` initial velocities, without bias and with UDD at each height A (width B set so
that the bias is half-way deep at 3x the median energy uncertainty of the training frames).
A single trajectory crosses the 0.15 eV barrier or not by chance, so every measure is a mean
over seeds: the explored dihedral range (10-degree bins visited), the histogram entropy,
the trans <-> gauche transitions, the largest energy uncertainty and the longest C-C bond
reached (a bias that tears bonds explores nothing useful).

Writes bench/results/experiments/udd.{json,png}.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.build import molecule
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from experiment import parser, settings, write_json
from matplotlib.figure import Figure
from selection_efficacy import sampled

from apax_core.config import MDConfig, TrainConfig
from apax_core.data import from_atoms
from apax_core.frame_predictions import predict
from apax_core.labelling import XTBLabeller
from apax_core.md import read_trajectory, run_md
from apax_core.model_dir import load_model
from apax_core.train.trainer import train

CARBONS = (0, 1, 2, 3)
MODEL = {
    "r_max": 5.0,
    "n_basis": 7,
    "n_radial": 5,
    "hidden": [64, 64],
    "ensemble": {"kind": "shallow", "n_members": 4},
}
LOSS = [{"quantity": "energy", "kind": "crps", "atoms_exponent": 1.0}, {"quantity": "forces"}]


def xtb_frames(steps: int, every: int, seed: int = 0) -> list:
    atoms = molecule("trans-butane")
    atoms.calc = XTBLabeller().get_calculator()
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=rng)
    dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=300, friction=0.02, rng=rng)
    return sampled(dyn, steps // every, every)


def dihedrals(frames) -> np.ndarray:
    return np.array([a.get_dihedral(*CARBONS) for a in frames])


def exploration(angles: np.ndarray) -> dict:
    counts, _ = np.histogram(angles, bins=36, range=(0.0, 360.0))
    p = counts[counts > 0] / counts.sum()
    return {
        "bins_visited": int(np.sum(counts > 0)),
        "range_share": float(np.mean(counts > 0)),
        "entropy": float(-np.sum(p * np.log(p))),
        "histogram": counts.tolist(),
    }


def md(model, config: MDConfig, directory: Path) -> tuple[list, dict]:
    result = run_md(model, molecule("trans-butane"), config, directory, progress_bar=False)
    return read_trajectory(result.trajectory), result.status


def transitions(angles: np.ndarray) -> int:
    """Moves between the trans (180 +- 40 degrees) and gauche (60, 300 +- 40) cores: the
    last core visited changes (crossing the barrier, not rattling on its top)."""
    centre = np.array([60.0, 180.0, 300.0])
    gap = np.abs((angles[:, None] - centre + 180.0) % 360.0 - 180.0)
    core = np.where(gap.min(axis=1) < 40.0, gap.argmin(axis=1), -1)
    visited = core[core >= 0]
    return int(np.sum(visited[1:] != visited[:-1]))


def one_run(model, base: dict, udd: dict | None, seed: int, directory: Path) -> dict:
    config = MDConfig.model_validate({**base, "udd": udd, "seed": seed})
    frames, status = md(model, config, directory)
    angles = dihedrals(frames)
    bonds = [a.get_distance(k, k + 1) for a in frames for k in range(3)]
    return {
        "seed": seed,
        "stopped": status["stopped"],
        "max_energy_uncertainty": float(max(a.calc.results["energy_uncertainty"] for a in frames)),
        "max_cc_bond": float(max(bonds)),
        "transitions": transitions(angles),
        "dihedrals": angles.tolist(),
        **exploration(angles),
    }


def run_conditions(model_dir: Path, width: float, args) -> dict[str, list[dict]]:
    """Per condition ("unbiased", "A=0.5", ...): one run per seed."""
    model = load_model(model_dir)
    base = {
        "dynamics": {"kind": "langevin", "friction": 0.01},
        "dt": 0.5,
        "duration": 1000.0 * args.ps,
        "n_inner": 1000,
        "sampling_rate": 20,
        "temperature": {"kind": "constant", "T": 300.0},
    }
    conditions = {"unbiased": None} | {
        f"A={h:g}": {"height": h, "width": width} for h in args.heights
    }
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, udd in conditions.items():
            out[name] = [
                one_run(model, base, udd, seed, Path(tmp) / f"{name}_{seed}")
                for seed in range(args.seeds)
            ]
            m = summarise(out[name])
            print(
                f"{name}: {m['bins_visited']['mean']:.1f} bins, {m['transitions']['mean']:.1f} hops"
            )
    return out


def summarise(runs: list[dict]) -> dict:
    """Mean and spread over seeds of each measure, and the pooled histogram."""
    keys = ("bins_visited", "entropy", "transitions", "max_energy_uncertainty", "max_cc_bond")
    out = {}
    for k in keys:
        v = np.array([r[k] for r in runs], dtype=float)
        out[k] = {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min())}
    out["histogram"] = np.sum([r["histogram"] for r in runs], axis=0).tolist()
    return out


def width_for(model_dir: Path, frames: list) -> tuple[float, float]:
    """B such that exp(-s^2 / (M N B^2)) = 1/2 at s = 3x the median training uncertainty."""
    model = load_model(model_dir)
    preds = predict(model, [from_atoms(a) for a in frames], mode="energy")
    s = 3.0 * float(np.median([p["energy_uncertainty"] for p in preds]))
    m, n = model.config.n_members, len(frames[0])
    return s / math.sqrt(m * n * math.log(2.0)), s / 3.0


def plot(result: dict, path: Path) -> None:
    fig = Figure(figsize=(11, 3.8))
    a, b, c = fig.subplots(1, 3)
    edges = np.linspace(0, 360, 37)
    names = list(result["summary"])
    for name in names:
        m = result["summary"][name]
        label = f"{name}: {m['bins_visited']['mean']:.1f} bins, {m['transitions']['mean']:.1f} hops"
        a.stairs(m["histogram"], edges, label=label)
    a.set(xlabel="C-C-C-C dihedral (degrees)", ylabel="frames (all seeds)", yscale="log")
    a.legend(frameon=False, fontsize=7)
    for name in (names[0], names[-1]):
        angles = result["runs"][name][0]["dihedrals"]
        t = np.arange(len(angles)) * result["frame_fs"] / 1000.0
        b.plot(t, angles, ".", ms=2, label=f"{name}, seed 0")
    b.set(xlabel="time (ps)", ylabel="C-C-C-C dihedral (degrees)", ylim=(0, 360))
    b.legend(frameon=False, markerscale=4)
    x = np.arange(len(names))
    for k, (key, label) in enumerate((("bins_visited", "bins visited"), ("transitions", "hops"))):
        mean = [result["summary"][n][key]["mean"] for n in names]
        std = [result["summary"][n][key]["std"] for n in names]
        c.bar(x + 0.4 * k, mean, 0.4, yerr=std, label=f"{label} (mean +- std over seeds)")
    top = max(
        m["bins_visited"]["mean"] + m["bins_visited"]["std"] for m in result["summary"].values()
    )
    c.set(xticks=x + 0.2, xticklabels=names, ylabel=f"per {result['settings']['ps']:g} ps run")
    c.set_ylim(0, 1.4 * top)
    c.legend(frameon=False, fontsize=7, loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = parser(__doc__, "10 training frames, 5 epochs, 2 seeds of 0.2 ps, A = 1 eV")
    p.add_argument("--ps", type=float, default=20.0, help="length of each MD run")
    p.add_argument("--seeds", type=int, default=4, help="MD runs per condition")
    p.add_argument("--heights", default="0.5,1,2", help="UDD heights A (eV), comma-separated")
    p.add_argument("--epochs", type=int, default=200)
    args = p.parse_args()
    steps = 200 if args.quick else 4000
    if args.quick:
        args.epochs, args.ps, args.seeds, args.heights = 5, 0.2, 2, "1"
    args.heights = [float(h) for h in args.heights.split(",")]
    start = time.perf_counter()
    frames = xtb_frames(steps, 20)
    spec = TrainConfig.model_validate(
        {"n_epochs": args.epochs, "model": MODEL, "loss": LOSS, "data": {"batch_size": 4}}
    )
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = train(
            spec, Path(tmp) / "model", [from_atoms(a) for a in frames], progress_bar=False
        )
        width, sigma = width_for(model_dir, frames)
        runs = run_conditions(model_dir, width, args)
    summary = {name: summarise(r) for name, r in runs.items()}
    bins = {name: m["bins_visited"]["mean"] for name, m in summary.items()}
    result = {
        "settings": {
            **settings(args),
            "train_frames": len(frames),
            "width": width,
            "median_train_sigma": sigma,
        },
        "training_dihedrals": exploration(dihedrals(frames)),
        "frame_fs": 10.0,
        "range_ratio": {n: b / bins["unbiased"] for n, b in bins.items() if n != "unbiased"},
        "summary": summary,
        "runs": runs,
        "wall_s": time.perf_counter() - start,
    }
    stem = write_json(args, "udd", result)
    plot(result, stem.with_suffix(".png"))
    print(f"range ratio {result['range_ratio']}; wrote {stem}.json and .png")


if __name__ == "__main__":
    main()
