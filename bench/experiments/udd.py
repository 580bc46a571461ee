"""Does uncertainty-driven dynamics explore more (paper 4.5)? Unbiased against UDD-biased MD of
butane's C-C-C-C torsion, with a model trained on GFN2-xTB data of the trans well only.

    python bench/experiments/udd.py [--quick] [--ps 20]

Training data: xTB (tblite) Langevin MD of trans-butane at 300 K (every 20th of 4000 steps,
0.5 fs), where the dihedral stays near 180 degrees. A shallow GMNN ensemble (4 members, CRPS)
learns it. Then the JAX engine runs Langevin MD at 300 K for ``--ps`` picoseconds, once
without bias and once with UDD (height A = 0.5 eV; width B set so that the bias is half-way
deep at 3x the median energy uncertainty of the training frames). Reported per run: the
explored dihedral range (the share of 10-degree bins visited), the histogram entropy, the
largest energy uncertainty reached, and the histograms.

Writes bench/results/experiments/udd.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.build import molecule
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from matplotlib.figure import Figure
from selection_efficacy import OUT, sampled

from apax_core.config import MDConfig, TrainConfig
from apax_core.data import from_atoms
from apax_core.md import read_trajectory, run_md
from apax_core.model_dir import load_model
from apax_core.predict import predict
from apax_core.train.trainer import train
from apax_nodes.label import XTBLabeller

CARBONS = (0, 1, 2, 3)
MODEL = {
    "r_max": 5.0,
    "n_basis": 7,
    "n_radial": 5,
    "hidden": [64, 64],
    "ensemble": {"kind": "shallow", "n_members": 4},
}
LOSS = [{"quantity": "energy", "kind": "crps", "atoms_exponent": 1.0}, {"quantity": "forces"}]
HEIGHT = 0.5


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


def run_pair(model_dir: Path, width: float, ps: float) -> dict:
    model, out = load_model(model_dir), {}
    base = {
        "dynamics": {"kind": "langevin", "friction": 0.01},
        "dt": 0.5,
        "duration": 1000.0 * ps,
        "n_inner": 1000,
        "sampling_rate": 20,
        "temperature": {"kind": "constant", "T": 300.0},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, udd in (("unbiased", None), ("udd", {"height": HEIGHT, "width": width})):
            frames, status = md(
                model, MDConfig.model_validate({**base, "udd": udd}), Path(tmp) / name
            )
            sigma = [a.calc.results["energy_uncertainty"] for a in frames]
            out[name] = {
                "status": status,
                "max_energy_uncertainty": float(np.max(sigma)),
                "dihedrals": dihedrals(frames).tolist(),
                **exploration(dihedrals(frames)),
            }
    return out


def width_for(model_dir: Path, frames: list) -> tuple[float, float]:
    """B such that exp(-s^2 / (M N B^2)) = 1/2 at s = 3x the median training uncertainty."""
    model = load_model(model_dir)
    preds = predict(model, [from_atoms(a) for a in frames], mode="energy")
    s = 3.0 * float(np.median([p["energy_uncertainty"] for p in preds]))
    m, n = model.config.n_members, len(frames[0])
    return s / math.sqrt(m * n * math.log(2.0)), s / 3.0


def plot(result: dict, path: Path) -> None:
    fig = Figure(figsize=(10, 3.8))
    a, b = fig.subplots(1, 2)
    edges = np.linspace(0, 360, 37)
    for name in ("unbiased", "udd"):
        r = result[name]
        a.stairs(r["histogram"], edges, label=f"{name}: {r['bins_visited']}/36 bins")
        b.plot(
            np.arange(len(r["dihedrals"])) * result["frame_fs"] / 1000.0,
            r["dihedrals"],
            ".",
            ms=2,
            label=name,
        )
    a.set(xlabel="C-C-C-C dihedral (degrees)", ylabel="frames")
    b.set(xlabel="time (ps)", ylabel="C-C-C-C dihedral (degrees)", ylim=(0, 360))
    a.legend(frameon=False)
    b.legend(frameon=False, markerscale=4)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="less data, 20 epochs, 2 ps")
    p.add_argument("--ps", type=float, default=20.0, help="length of each MD run")
    p.add_argument("--epochs", type=int, default=200)
    args = p.parse_args()
    steps, epochs, ps = (800, 20, 2.0) if args.quick else (4000, args.epochs, args.ps)
    start = time.perf_counter()
    frames = xtb_frames(steps, 20)
    spec = TrainConfig.model_validate(
        {"n_epochs": epochs, "model": MODEL, "loss": LOSS, "data": {"batch_size": 4}}
    )
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = train(
            spec, Path(tmp) / "model", [from_atoms(a) for a in frames], progress_bar=False
        )
        width, sigma = width_for(model_dir, frames)
        result = run_pair(model_dir, width, ps)
    result |= {
        "settings": {
            "ps": ps,
            "epochs": epochs,
            "train_frames": len(frames),
            "height": HEIGHT,
            "width": width,
            "median_train_sigma": sigma,
        },
        "training_dihedrals": exploration(dihedrals(frames)),
        "frame_fs": 10.0,
        "range_ratio": result["udd"]["bins_visited"] / result["unbiased"]["bins_visited"],
        "wall_s": time.perf_counter() - start,
    }
    name = "udd" + ("_quick" if args.quick else "")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(result, indent=2))
    plot(result, OUT / f"{name}.png")
    for run in ("unbiased", "udd"):
        r = result[run]
        print(
            f"{run:>9}: {r['bins_visited']}/36 bins, entropy {r['entropy']:.2f}, "
            f"max sigma_E {r['max_energy_uncertainty']:.3f} eV, stopped {r['status']['stopped']}"
        )
    print(f"range ratio {result['range_ratio']:.2f}; wrote {OUT / name}.json and .png")


if __name__ == "__main__":
    main()
