"""Train the reference-size GMNN and report epoch time, compile time and test errors.

    python bench/train_speed.py [--epochs 40] [--train F --val F --test F]

Defaults: ../shared/data/cu_bulk_{train,val,test}.extxyz (EMT labels, 107-atom Cu cells),
n_basis 7, n_radial 5, r_max 5.0, hidden [128, 128], batch size 8; every other setting is
the default of `apax-core template train`.
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import DATA, table, write_result

from apax_core.config import TrainConfig, TrainRun
from apax_core.data import from_atoms, read_frames
from apax_core.evaluate import evaluate
from apax_core.model_dir import load_model
from apax_core.train.trainer import train_run


@dataclass(frozen=True)
class Job:
    """A training spec with its run arguments."""

    spec: TrainConfig
    run_args: TrainRun

    @property
    def directory(self) -> Path:
        return self.run_args.directory

    def train(self) -> Path:
        return train_run(self.spec, self.run_args)


def train_config(
    directory: Path,
    train_file,
    val_file,
    epochs: int,
    batch_size: int = 8,
    base_model=None,
    **overrides,
) -> Job:
    model = {"n_basis": 7, "n_radial": 5, "r_max": 5.0, "hidden": [128, 128]}
    spec = TrainConfig.model_validate(
        {"n_epochs": epochs, "data": {"batch_size": batch_size}, "model": model, **overrides}
    )
    run = TrainRun(
        directory=directory,
        train_file=train_file,
        val_file=val_file,
        base_model=base_model,
        progress_bar=False,
    )
    return Job(spec, run)


def epoch_times(directory: Path) -> list[float]:
    with open(directory / "log.csv") as fh:
        return [float(r["epoch_s"]) for r in csv.DictReader(fh)]


def run(job: Job, test_files: list[Path]) -> dict:
    start = time.perf_counter()
    job.train()
    wall = time.perf_counter() - start
    times = epoch_times(job.directory)
    steady = statistics.median(times[1:]) if len(times) > 1 else times[0]
    model = load_model(job.directory)
    out = {
        "n_epochs": len(times),
        "epoch_s": steady,
        "first_epoch_s": times[0],
        "compile_s": max(times[0] - steady, 0.0),
        "wall_s": wall,
    }
    for f in test_files:
        m = evaluate(model, [from_atoms(a) for a in read_frames(f)])
        out[f.stem] = {"energy_mae_meV_atom": m["energy_mae"], "forces_mae_meV_A": m["forces_mae"]}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--train", type=Path, default=DATA / "cu_bulk_train.extxyz")
    p.add_argument("--val", type=Path, default=DATA / "cu_bulk_val.extxyz")
    p.add_argument("--test", type=Path, default=DATA / "cu_bulk_test.extxyz")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        config = train_config(Path(tmp) / "model", args.train, args.val, args.epochs)
        res = run(config, [args.test])
    test = res.pop(args.test.stem)
    result = {
        **res,
        "test_energy_mae_meV_atom": test["energy_mae_meV_atom"],
        "test_forces_mae_meV_A": test["forces_mae_meV_A"],
        "test_file": str(args.test),
    }
    cols = ["n_epochs", "epoch_s", "compile_s", "test_energy_mae_meV_atom", "test_forces_mae_meV_A"]
    print(table([result], cols))
    print(f"wrote {write_result('train_speed', result)}")


if __name__ == "__main__":
    main()
