"""EquivMP against GMNN with the same wall-clock training budget: test errors in and out of
distribution, epoch time, MD cost at 864 atoms, parameter count, learning curves.

    python bench/equivmp.py [--budget 240] [--epochs N] [--train-frames 400]

Data: ../shared/data/cu_bulk_{train,val}.extxyz for training, cu_bulk_test (in distribution)
and cu_bulk_extra_test (di-vacancy, hotter, strained: out of distribution) for testing.
Models: GMNN of the reference size (n_basis 7, n_radial 5, r_max 5.0, hidden [128, 128]) and
EquivMP with the paper's benchmark settings (r_max 6.0, 7 Bessel functions, l_max 2, 32
channels, 2 layers, readout [32]). Both use the default loss and optimiser, batch size 8.

Equal budget: each model first trains 2 epochs to measure its steady epoch time; it is then
trained from scratch for floor(budget / epoch time) epochs (``--epochs`` fixes the count for
both instead). MD: the JAX engine, NVT Nose-Hoover at 300 K on fcc Cu 6x6x6 (864 atoms), a
single model in fp32, compilation excluded.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import tempfile
from pathlib import Path

import jax
from common import DATA, table, write_result
from md_speed import cu, jax_engine
from train_speed import epoch_times, train_config

from apax_core.data import from_atoms, read_frames, write_frames
from apax_core.evaluate import evaluate
from apax_core.model_dir import load_model

MODELS = {
    "gmnn": {"n_basis": 7, "n_radial": 5, "r_max": 5.0, "hidden": [128, 128]},
    "equivmp": {
        "kind": "equivmp",
        "r_max": 6.0,
        "n_basis": 7,
        "l_max": 2,
        "n_channels": 32,
        "n_layers": 2,
        "hidden": [32],
    },
}
TESTS = ("cu_bulk_test", "cu_bulk_extra_test")


def n_params(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))


def trained(kind: str, epochs: int, train_file: Path, directory: Path) -> Path:
    """Train model ``kind`` for ``epochs`` epochs from scratch; its model directory."""
    return train_config(
        directory, train_file, DATA / "cu_bulk_val.extxyz", epochs, model=MODELS[kind]
    ).train()


def steady_epoch_s(kind: str, train_file: Path, root: Path) -> float:
    """Seconds per epoch after compilation: the second of two probe epochs."""
    return epoch_times(trained(kind, 2, train_file, root / f"probe_{kind}"))[-1]


def learning_curve(directory: Path) -> list[dict]:
    """(cumulative training seconds, validation force MAE) per epoch."""
    with open(directory / "log.csv") as fh:
        rows, t = [], 0.0
        for r in csv.DictReader(fh):
            t += float(r["epoch_s"])
            rows.append({"train_s": t, "val_forces_mae": float(r["val_forces_mae"])})
    return rows


def train_and_measure(kind: str, epochs: int, train_file: Path, root: Path) -> dict:
    directory = trained(kind, epochs, train_file, root / kind)
    model = load_model(directory)
    times = epoch_times(directory)
    out = {
        "n_epochs": epochs,
        "epoch_s": sorted(times)[len(times) // 2],
        "train_s": sum(times),
        "n_params": n_params(model.params),
        "curve": learning_curve(directory),
    }
    for name in TESTS:
        m = evaluate(model, [from_atoms(a) for a in read_frames(DATA / f"{name}.extxyz")])
        out[name] = {
            "test_energy_mae_meV_atom": m["energy_mae"],
            "test_forces_mae_meV_A": m["forces_mae"],
        }
    out["md_us_per_atom_step"], out["md_compile_s"] = jax_engine(
        model, cu(864), 100, udd=False, force_uncertainty=False
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=240.0, help="training seconds per model")
    p.add_argument("--epochs", type=int, default=None, help="fixed epochs for both models")
    p.add_argument("--train-frames", type=int, default=400, help="first N training frames")
    p.add_argument("--out", default="equivmp", help="result name under bench/results")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        train_file = root / "train.extxyz"
        frames = read_frames(DATA / "cu_bulk_train.extxyz")[: args.train_frames]
        write_frames(train_file, frames)
        for kind in MODELS:
            epochs = args.epochs
            if epochs is None:
                epochs = max(1, math.floor(args.budget / steady_epoch_s(kind, train_file, root)))
            results[kind] = train_and_measure(kind, epochs, train_file, root)
    rows = [
        {
            "model": kind,
            "epochs": r["n_epochs"],
            "epoch_s": r["epoch_s"],
            "train_s": r["train_s"],
            "params": r["n_params"],
            **{f"{t[8:]} E": r[t]["test_energy_mae_meV_atom"] for t in TESTS},
            **{f"{t[8:]} F": r[t]["test_forces_mae_meV_A"] for t in TESTS},
            "MD us/atom/step": r["md_us_per_atom_step"],
        }
        for kind, r in results.items()
    ]
    print(table(rows, list(rows[0])))
    print("(E: meV/atom, F: meV/A; test = cu_bulk_test, extra_test = out of distribution)")
    ratio = results["equivmp"]["md_us_per_atom_step"] / results["gmnn"]["md_us_per_atom_step"]
    print(f"EquivMP / GMNN MD cost: {ratio:.2f}x")
    payload = {"budget_s": args.budget, "train_frames": len(frames), **results}
    print(f"wrote {write_result(args.out, {**payload, 'md_cost_ratio': ratio})}")


if __name__ == "__main__":
    main()
