"""Continuous learning (paper 4.2) and uncertainty through the loop: retraining from scratch
every iteration against warm starts with 15, 30 and 50 % of the epochs.

    python bench/experiments/continuous_learning.py [--quick] [--iterations 8] [--epochs 200]

The loop of the default project, in process, on the Cu/Ag alloy of selection_efficacy.py:
train (a shallow GMNN ensemble, CRPS, calibrated on the validation set) -> UDD MD with
``--walkers`` walkers of the 107-atom cell at 300-1200 K, stopped on energy uncertainty ->
max-distance selection of 8 frames -> EMT labels -> 6 join the training set, 2 the
validation set. Iteration 0 is one scratch model shared by every variant; from then on each
variant runs its own loop. Per iteration: test force/energy MAE, calibrated and
uncalibrated force z^2, miscalibration area and Spearman rho, the training epochs and
seconds, how many walkers stopped on uncertainty, and every calibration family fitted on the
validation set (what the training calibrates on) judged on the test set (families.py).

Writes bench/results/experiments/continuous_learning.{json,png}.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from experiment import parser, settings, write_json
from families import model_family_table
from matplotlib.figure import Figure
from selection_efficacy import LOSS, MODEL, alloy, datasets

from apax_core.config import MDConfig, TrainConfig
from apax_core.data import from_atoms
from apax_core.evaluate import error_metrics
from apax_core.frame_predictions import predict
from apax_core.md import read_trajectory
from apax_core.md.walkers import run_walkers
from apax_core.model_dir import load_model
from apax_core.select import select
from apax_core.train.trainer import train
from apax_core.uq import uncalibrated, uncertainty_metrics

VARIANTS = {"scratch": 1.0, "warm15": 0.15, "warm30": 0.30, "warm50": 0.50}
MD = {
    "dynamics": {"kind": "langevin", "friction": 0.01},
    "temperature": {"kind": "oscillating", "T_low": 300.0, "T_high": 1200.0, "period": 1000.0},
    "dt": 2.0,
    "n_inner": 100,
    "sampling_rate": 20,
    "skin": 0.4,
    "extra_capacity": 8,
    "udd": {"height": 0.5, "width": 1.0},
    "checks": [{"kind": "energy_uncertainty", "threshold": 0.05, "per_atom": True}],
}


def fit(frames, val, epochs: int, directory: Path, base: Path | None) -> tuple[Path, float]:
    spec = TrainConfig.model_validate(
        {"n_epochs": epochs, "model": MODEL, "loss": LOSS, "data": {"batch_size": 4}}
    )
    start = time.perf_counter()
    structures = [from_atoms(a) for a in frames], [from_atoms(a) for a in val]
    train(spec, directory, *structures, base_model=base, progress_bar=False)
    return directory, time.perf_counter() - start


def test_metrics(model_dir: Path, test_s: list, cal_s: list) -> dict:
    """Test errors and uncertainty metrics, calibrated and not, and every calibration family
    fitted on ``cal_s`` (the set the training calibrated on) judged on the test set."""
    model = load_model(model_dir)
    preds = predict(model, test_s, mode="uncertainty")
    raw_preds = uncalibrated(preds, model.calibration, test_s)
    raw = uncertainty_metrics(raw_preds, test_s)
    return (
        error_metrics(preds, test_s)
        | uncertainty_metrics(preds, test_s)
        | {f"uncal_{k}": v for k, v in raw.items()}
        | {"families": model_family_table(model, cal_s, test_s, raw_preds)}
    )


def sample(model_dir: Path, args, directory: Path, seed: int) -> tuple[list, dict]:
    """UDD MD walkers from fresh alloy cells; their frames and how many stopped and why."""
    config = MDConfig.model_validate({**MD, "duration": 2.0 * args.md_steps, "seed": seed})
    starts = [alloy(100 + k, repeat=3) for k in range(args.walkers)]  # the engine needs 9.8 A
    walkers = run_walkers(model_dir, starts, config, directory, indices="all")
    frames = [
        a
        for w, _ in walkers
        if (directory / w.name / "md.h5").is_file()
        for a in read_trajectory(directory / w.name / "md.h5")
    ]
    stopped = [s["reason"] for _, s in walkers if s["stopped"]]
    return frames, {"n_walkers": len(walkers), "n_stopped": len(stopped), "reasons": stopped}


def emt_labels(frames: list) -> list:
    out = []
    for atoms in frames:
        a = atoms.copy()
        a.calc = EMT()
        results = {"energy": a.get_potential_energy(), "forces": a.get_forces()}
        a.calc = SinglePointCalculator(a, **results)
        out.append(a)
    return out


def loop(variant: str, base: tuple, sets: dict, args, root: Path) -> list[dict]:
    """Iterations 1.. of one variant, continuing from the shared iteration-0 model."""
    model_dir, train_set, val_set = base
    test_s = [from_atoms(a) for a in sets["test"]]
    rows = []
    for i in range(1, args.iterations + 1):
        pool, md = sample(model_dir, args, root / f"{variant}_md{i}", seed=i)
        known = [from_atoms(a) for a in train_set]
        pool_s = [from_atoms(a) for a in pool]
        picked = select(load_model(model_dir), known, pool_s, 8).indices if pool else []
        new = emt_labels([pool[k] for k in picked])
        train_set, val_set = train_set + new[:6], val_set + new[6:]
        epochs = max(1, round(VARIANTS[variant] * args.epochs))
        warm = None if variant == "scratch" else model_dir
        model_dir, seconds = fit(train_set, val_set, epochs, root / f"{variant}_{i}", warm)
        row = {
            "iteration": i,
            "n_train": len(train_set),
            "epochs": epochs,
            "train_s": seconds,
            **md,
            **test_metrics(model_dir, test_s, [from_atoms(a) for a in val_set]),
        }
        logging.info(
            "%s %d: F MAE %.1f, z2 %.2f, %d/%d stopped",
            variant,
            i,
            row["forces_mae"],
            row["mean_z2_forces"],
            md["n_stopped"],
            md["n_walkers"],
        )
        rows.append(row)
    return rows


def plot(result: dict, path: Path) -> None:
    fig = Figure(figsize=(11, 3.8))
    a, b, c = fig.subplots(1, 3)
    for variant, rows in result["variants"].items():
        it = [r["iteration"] for r in rows]
        a.plot(it, [r["forces_mae"] for r in rows], marker="o", label=variant)
        b.plot(
            np.cumsum([r["train_s"] for r in rows]),
            [r["forces_mae"] for r in rows],
            marker="o",
            label=variant,
        )
        c.plot(it, [r["mean_z2_forces"] for r in rows], marker="o", label=variant)
    a.set(xlabel="iteration", ylabel="test force MAE (meV/A)")
    b.set(xlabel="cumulative training time (s)", ylabel="test force MAE (meV/A)")
    c.axhspan(0.5, 2.0, color="0.9", label="aim [0.5, 2]")
    c.set(xlabel="iteration", ylabel="calibrated force mean z^2 (test)", yscale="log")
    for ax in (a, b, c):
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = parser(__doc__, "2 iterations of scratch and warm30, 6 epochs, one walker of 40 steps")
    p.add_argument("--iterations", type=int, default=8)
    p.add_argument("--epochs", type=int, default=200, help="E, the scratch runs' epochs")
    p.add_argument("--walkers", type=int, default=2)
    p.add_argument("--md-steps", type=int, default=1000)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    p.add_argument("--test-per-T", type=int, default=25)
    args = p.parse_args()
    if args.quick:
        args.iterations, args.epochs, args.walkers, args.md_steps = 2, 6, 1, 40
        args.variants, args.test_per_T = "scratch,warm30", 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("apax_core").setLevel(logging.ERROR)
    start = time.perf_counter()
    sets = datasets(1, args.test_per_T, every=2 if args.quick else 20)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model0, _ = fit(sets["initial"], sets["val"], args.epochs, root / "iter0", None)
        base = (model0, list(sets["initial"]), list(sets["val"]))
        variants = {v: loop(v, base, sets, args, root) for v in args.variants.split(",")}
        test_s, val_s = ([from_atoms(a) for a in sets[k]] for k in ("test", "val"))
        first = {"iteration": 0, **test_metrics(model0, test_s, val_s)}
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "settings": settings(args),
        "wall_s": time.perf_counter() - start,
        "iteration0": first,
        "variants": variants,
    }
    stem = write_json(args, "continuous_learning", result)
    plot(result, stem.with_suffix(".png"))
    for v, rows in variants.items():
        last, seconds = rows[-1], sum(r["train_s"] for r in rows)
        print(
            f"{v:>8}: final F MAE {last['forces_mae']:.1f} meV/A, E MAE {last['energy_mae']:.2f}"
            f" meV/atom, {sum(r['epochs'] for r in rows)} epochs, {seconds:.0f} s training"
        )
    print(f"wrote {stem}.json and .png")


if __name__ == "__main__":
    main()
