"""Does uncertainty-driven dynamics explore more (paper 4.5)? Unbiased against UDD-biased MD of
butane's C-C-C-C torsion, with a model trained on GFN2-xTB data of the trans well only, in both
regimes of eq. 9.

    python bench/experiments/udd.py [--quick] [--ps 20] [--seeds 3]

Training data: xTB (tblite) Langevin MD of trans-butane at 300 K (every 20th of 4000 steps,
0.5 fs), where the dihedral stays near 180 degrees. A shallow GMNN ensemble (M = 4 members,
CRPS) learns it. Then the JAX engine runs Langevin MD at 300 K for ``--ps`` picoseconds from
``--seeds`` initial velocities per condition (equal length for all conditions).

Eq. 9, E_b = A [exp(-sigma^2 / (M N B^2)) - 1], has two regimes. With x = sigma^2 / (M N B^2):
x >~ 1 where the dynamics go ("saturating": the bias is a well of depth A, B sets the sigma at
which it is half deep), or x << 1 everywhere reachable ("quadratic": E_b ~ -k sigma^2 with
k = A / (M N B^2), unbounded in practice; only k matters, not A and B apart). The paper's
alanine tetrapeptide run (A = 1 eV/atom, B = 1.2 eV) is in the second. Conditions, with
sigma_ref = 3x the median energy uncertainty of the training frames:

- unbiased;
- paper: A = 1 eV/atom x N = 14 eV total (our ``height`` is the total depth), B = 1.2 eV;
- sat A=1, sat A=2: the saturating regime, B = B_sat (bias half deep at sigma_ref);
- mid A=2: B = 3 B_sat (x(sigma_ref) = ln2 / 9, saturating only at 3x larger sigma);
- quad D (D = 0.15, 0.5, 1.5): B = 1.2 eV as the paper, A chosen so that E_b(sigma_ref) = -D eV.

A single trajectory crosses the 0.15 eV barrier or not by chance, so every measure is a mean
over seeds: the explored dihedral range (10-degree bins visited), the histogram entropy,
the trans <-> gauche transitions, the largest energy uncertainty and the longest C-C bond
reached (a bias that tears bonds explores nothing useful: 1.9 A is the limit). Rigid scans of
the torsion and of the central and terminal C-C bonds (xTB energy against the model's sigma)
measure which motion buys the bias more uncertainty per eV.

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
HALF = (2, 3, 5, 8, 9, 12, 13)
"""C3, C4 and their hydrogens in ASE's trans-butane: rotated about / moved along C2-C3."""
METHYL = (0, 4, 6, 7)
"""C1 and its hydrogens: moved along C1-C2."""
BOND_LIMIT = 1.9
"""A C-C bond longer than this (A) counts as broken."""
PAPER_WIDTH = 1.2
PAPER_HEIGHT_PER_ATOM = 1.0
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


def _corr(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")


def one_run(model, base: dict, udd: dict | None, seed: int, directory: Path) -> dict:
    config = MDConfig.model_validate({**base, "udd": udd, "seed": seed})
    frames, status = md(model, config, directory)
    angles = dihedrals(frames)
    bonds = np.array([[a.get_distance(k, k + 1) for k in range(3)] for a in frames])
    sigma = np.array([a.calc.results["energy_uncertainty"] for a in frames], dtype=float)
    twist = np.abs((angles - 180.0 + 180.0) % 360.0 - 180.0)  # distance from trans (degrees)
    return {
        "seed": seed,
        "stopped": status["stopped"],
        "max_energy_uncertainty": float(sigma.max()),
        "max_cc_bond": float(bonds.max()),
        "max_cc_by_bond": bonds.max(axis=0).tolist(),
        "sigma_vs_stretch": _corr(sigma, bonds.max(axis=1)),
        "sigma_vs_twist": _corr(sigma, twist),
        "transitions": transitions(angles),
        "dihedrals": angles.tolist(),
        **exploration(angles),
    }


def bias_depth(udd: dict | None, sigma: float, m: int, n: int) -> float:
    """E_b(sigma) of eq. 9 (eV, <= 0) for a condition's height and width."""
    if udd is None:
        return 0.0
    return udd["height"] * math.expm1(-(sigma**2) / (m * n * udd["width"] ** 2))


def conditions(width_sat: float, sigma_ref: float, m: int, n: int, quick: bool) -> dict:
    """name -> {"regime", "udd" (height, width or None), "x_ref"}: see the module docstring."""
    x_paper = sigma_ref**2 / (m * n * PAPER_WIDTH**2)

    def quad(depth: float) -> dict:
        return {"height": depth / -math.expm1(-x_paper), "width": PAPER_WIDTH}

    paper = {"height": PAPER_HEIGHT_PER_ATOM * n, "width": PAPER_WIDTH}
    table = {
        "unbiased": ("none", None),
        "paper": ("quadratic", paper),
        "sat A=1": ("saturating", {"height": 1.0, "width": width_sat}),
        "sat A=2": ("saturating", {"height": 2.0, "width": width_sat}),
        "mid A=2": ("intermediate", {"height": 2.0, "width": 3.0 * width_sat}),
        "quad 0.15": ("quadratic", quad(0.15)),
        "quad 0.5": ("quadratic", quad(0.5)),
        "quad 1.5": ("quadratic", quad(1.5)),
    }
    if quick:
        table = {k: table[k] for k in ("unbiased", "paper")}
    return {
        name: {
            "regime": regime,
            "udd": udd,
            "x_ref": 0.0 if udd is None else sigma_ref**2 / (m * n * udd["width"] ** 2),
            "bias_at_ref": bias_depth(udd, sigma_ref, m, n),
        }
        for name, (regime, udd) in table.items()
    }


def run_conditions(model_dir: Path, plan: dict, args) -> dict[str, list[dict]]:
    """Per condition: one run per seed."""
    model = load_model(model_dir)
    base = {
        "dynamics": {"kind": "langevin", "friction": 0.01},
        "dt": 0.5,
        "duration": 1000.0 * args.ps,
        "n_inner": 1000,
        "sampling_rate": 20,
        "temperature": {"kind": "constant", "T": 300.0},
    }
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, c) in enumerate(plan.items()):
            out[name] = [
                one_run(model, base, c["udd"], seed, Path(tmp) / f"c{k}_{seed}")
                for seed in range(args.seeds)
            ]
            m = summarise(out[name])
            print(
                f"{name}: {m['bins_visited']['mean']:.1f} bins, {m['transitions']['mean']:.1f} "
                f"hops, C-C {m['max_cc_bond']['max']:.2f} A, "
                f"sigma {m['max_energy_uncertainty']['max']:.3f} eV",
                flush=True,
            )
    return out


def summarise(runs: list[dict]) -> dict:
    """Mean, spread, min and max over seeds of each measure, and the pooled histogram."""
    keys = (
        "bins_visited",
        "entropy",
        "transitions",
        "max_energy_uncertainty",
        "max_cc_bond",
        "sigma_vs_stretch",
        "sigma_vs_twist",
    )
    out = {}
    for k in keys:
        v = np.array([r[k] for r in runs], dtype=float)
        out[k] = {
            "mean": float(np.nanmean(v)) if np.isfinite(v).any() else float("nan"),
            "std": float(np.nanstd(v)) if np.isfinite(v).any() else float("nan"),
            "min": float(np.nanmin(v)) if np.isfinite(v).any() else float("nan"),
            "max": float(np.nanmax(v)) if np.isfinite(v).any() else float("nan"),
        }
    out["histogram"] = np.sum([r["histogram"] for r in runs], axis=0).tolist()
    out["broken_runs"] = int(sum(r["max_cc_bond"] > BOND_LIMIT for r in runs))
    out["stretched_bond"] = ["C1-C2", "C2-C3", "C3-C4"][
        int(np.argmax(np.max([r["max_cc_by_bond"] for r in runs], axis=0)))
    ]
    return out


def width_for(model_dir: Path, frames: list) -> tuple[float, float]:
    """B such that exp(-s^2 / (M N B^2)) = 1/2 at s = 3x the median training uncertainty."""
    model = load_model(model_dir)
    preds = predict(model, [from_atoms(a) for a in frames], mode="energy")
    s = 3.0 * float(np.median([p["energy_uncertainty"] for p in preds]))
    m, n = model.config.n_members, len(frames[0])
    return s / math.sqrt(m * n * math.log(2.0)), s / 3.0


def scans(model_dir: Path, quick: bool) -> dict:
    """Rigid scans from ASE's trans-butane: the torsion (degrees), the central and a terminal
    C-C bond (A); per point the xTB energy and the model's sigma_E. Which motion buys the
    bias more uncertainty per eV it costs."""
    base = molecule("trans-butane")
    grid = {
        "torsion": np.arange(180.0, 361.0, 60.0 if quick else 15.0),
        "central C-C": np.linspace(1.53, 2.0, 3 if quick else 11),
        "terminal C-C": np.linspace(1.53, 2.0, 3 if quick else 11),
    }
    calc = XTBLabeller().get_calculator()
    model = load_model(model_dir)
    out = {}
    for mode, xs in grid.items():
        frames = []
        for x in xs:
            a = base.copy()
            if mode == "torsion":
                a.set_dihedral(*CARBONS, float(x), indices=list(HALF))
            elif mode == "central C-C":
                a.set_distance(1, 2, float(x), fix=0, indices=list(HALF))
            else:
                a.set_distance(1, 0, float(x), fix=0, indices=list(METHYL))
            frames.append(a)
        energies = []
        for a in frames:
            a.calc = calc
            energies.append(float(a.get_potential_energy()))
            a.calc = None
        preds = predict(model, [from_atoms(a) for a in frames], mode="energy")
        sigma = [float(p["energy_uncertainty"]) for p in preds]
        e0 = energies[0]
        out[mode] = {
            "x": xs.tolist(),
            "xtb_cost": [e - e0 for e in energies],
            "model_cost": [float(p["energy"]) - float(preds[0]["energy"]) for p in preds],
            "sigma": sigma,
        }
    return out


def plot(result: dict, path: Path) -> None:
    fig = Figure(figsize=(12, 8))
    (a, b), (c, d) = fig.subplots(2, 2)
    edges = np.linspace(0, 360, 37)
    names = list(result["summary"])
    for name in names:
        m = result["summary"][name]
        label = f"{name}: {m['bins_visited']['mean']:.1f} bins, {m['transitions']['mean']:.1f} hops"
        a.stairs(m["histogram"], edges, label=label)
    a.set(xlabel="C-C-C-C dihedral (degrees)", ylabel="frames (all seeds)", yscale="log")
    a.legend(frameon=False, fontsize=7)
    best = max(names[1:], key=lambda n: result["summary"][n]["bins_visited"]["mean"])
    narrow = min(names[1:], key=lambda n: result["summary"][n]["entropy"]["mean"])
    for name in dict.fromkeys((names[0], best, narrow)):
        run = max(result["runs"][name], key=lambda r: r["bins_visited"])
        t = np.arange(len(run["dihedrals"])) * result["frame_fs"] / 1000.0
        b.plot(t, run["dihedrals"], ".", ms=2, label=f"{name}, seed {run['seed']}")
    b.set(xlabel="time (ps)", ylabel="C-C-C-C dihedral (degrees)", ylim=(0, 360))
    b.legend(frameon=False, markerscale=4, fontsize=7, loc="center right")
    x = np.arange(len(names))
    bins = [result["summary"][n]["bins_visited"] for n in names]
    c.bar(x, [v["mean"] for v in bins], 0.6, yerr=[v["std"] for v in bins], color="C0")
    c.axhline(2 * bins[0]["mean"], color="k", ls="--", lw=1, label="2x unbiased")
    c.set(xticks=x, ylabel=f"bins visited per {result['settings']['ps']:g} ps run (of 36)")
    c.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    c.set_ylim(0, 40)
    c2 = c.twinx()
    cc = [result["summary"][n]["max_cc_bond"]["max"] for n in names]
    c2.plot(x, cc, "o", color="C3", label="longest C-C over seeds (A)")
    c2.axhline(BOND_LIMIT, color="C3", ls=":", lw=1)
    c2.set_yscale("log")
    c2.set_ylabel("longest C-C (A, log; dotted: 1.9 A)", color="C3")
    c.legend(frameon=False, fontsize=7, loc="upper left")
    c2.legend(frameon=False, fontsize=7, loc="upper right")
    for mode, s in result["scans"].items():
        d.plot(s["xtb_cost"], s["sigma"], "o-", ms=3, label=mode)
    d.set(xlabel="xTB energy cost of the rigid scan (eV)", ylabel="model sigma_E (eV)")
    d.set_xlim(-0.05, 2.0)
    d.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = parser(__doc__, "10 training frames, 5 epochs, 2 conditions x 2 seeds of 0.2 ps")
    p.add_argument("--ps", type=float, default=20.0, help="length of each MD run")
    p.add_argument("--seeds", type=int, default=3, help="MD runs per condition")
    p.add_argument("--epochs", type=int, default=200)
    args = p.parse_args()
    steps = 200 if args.quick else 4000
    if args.quick:
        args.epochs, args.ps, args.seeds = 5, 0.2, 2
    start = time.perf_counter()
    frames = xtb_frames(steps, 20)
    spec = TrainConfig.model_validate(
        {"n_epochs": args.epochs, "model": MODEL, "loss": LOSS, "data": {"batch_size": 4}}
    )
    m, n = MODEL["ensemble"]["n_members"], len(frames[0])
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = train(
            spec, Path(tmp) / "model", [from_atoms(a) for a in frames], progress_bar=False
        )
        width, sigma = width_for(model_dir, frames)
        plan = conditions(width, 3.0 * sigma, m, n, args.quick)
        scan = scans(model_dir, args.quick)
        runs = run_conditions(model_dir, plan, args)
    summary = {name: summarise(r) for name, r in runs.items()}
    for name, s in summary.items():
        s["bias_at_max_sigma"] = bias_depth(
            plan[name]["udd"], s["max_energy_uncertainty"]["max"], m, n
        )
    bins = {name: s["bins_visited"]["mean"] for name, s in summary.items()}
    result = {
        "settings": {
            **settings(args),
            "train_frames": len(frames),
            "n_members": m,
            "n_atoms": n,
            "width": width,
            "median_train_sigma": sigma,
            "sigma_ref": 3.0 * sigma,
            "bond_limit": BOND_LIMIT,
        },
        "conditions": plan,
        "training_dihedrals": exploration(dihedrals(frames)),
        "frame_fs": 10.0,
        "range_ratio": {k: b / bins["unbiased"] for k, b in bins.items() if k != "unbiased"},
        "scans": scan,
        "summary": summary,
        "runs": runs,
        "wall_s": time.perf_counter() - start,
    }
    stem = write_json(args, "udd", result)
    plot(result, stem.with_suffix(".png"))
    print(f"range ratio {result['range_ratio']}; wrote {stem}.json and .png")


if __name__ == "__main__":
    main()
