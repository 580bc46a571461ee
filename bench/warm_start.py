"""Continuous learning: warm start on grown data vs training the same data from scratch.

    python bench/warm_start.py [--epochs 40] [--fraction 0.25]

1. base: train ``--epochs`` on cu_bulk_train (validated on cu_bulk_val);
2. warm: continue from base on cu_bulk_train + cu_bulk_extra_train for ``fraction`` of the epochs;
3. scratch: train cu_bulk_train + cu_bulk_extra_train from scratch for all epochs.
Reports test MAEs on cu_bulk_test and cu_bulk_extra_test and wall times (warm / scratch).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from common import DATA, table, write_result
from train_speed import run, train_config

from apax_core.data import read_frames, write_frames


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--fraction", type=float, default=0.25)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tests = [DATA / "cu_bulk_test.extxyz", DATA / "cu_bulk_extra_test.extxyz"]
    val = DATA / "cu_bulk_val.extxyz"
    warm_epochs = max(1, round(args.fraction * args.epochs))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        grown = tmp / "train_grown.extxyz"
        write_frames(grown, read_frames(DATA / "cu_bulk_train.extxyz")
                     + read_frames(DATA / "cu_bulk_extra_train.extxyz"))  # fmt: skip
        results = {}
        base = train_config(tmp / "base", DATA / "cu_bulk_train.extxyz", val, args.epochs,
                            progress_bar=False)  # fmt: skip
        results["base"] = run(base, tests)
        warm = train_config(tmp / "warm", grown, val, warm_epochs, progress_bar=False,
                            warm_start={"model": str(tmp / "base")})  # fmt: skip
        results["warm"] = run(warm, tests)
        scratch = train_config(tmp / "scratch", grown, val, args.epochs, progress_bar=False)
        results["scratch"] = run(scratch, tests)
    rows = []
    for name, r in results.items():
        row = {"run": name, "n_epochs": r["n_epochs"], "wall_s": r["wall_s"]}
        for f in tests:
            row[f"{f.stem}_E"] = r[f.stem]["energy_mae_meV_atom"]
            row[f"{f.stem}_F"] = r[f.stem]["forces_mae_meV_A"]
        rows.append(row)
    ratio = results["warm"]["wall_s"] / results["scratch"]["wall_s"]
    print(table(rows, list(rows[0])))
    extra = "cu_bulk_extra_test"
    verdict = {
        "wall_ratio_warm_over_scratch": ratio,
        "warm_at_least_as_accurate_on_extra": (
            results["warm"][extra]["forces_mae_meV_A"]
            <= results["scratch"][extra]["forces_mae_meV_A"]
            and results["warm"][extra]["energy_mae_meV_atom"]
            <= results["scratch"][extra]["energy_mae_meV_atom"]
        ),
    }
    print(f"warm / scratch wall time: {ratio:.2f}; {verdict}")
    path = write_result("warm_start", {"runs": results, **verdict, "epochs": args.epochs,
                                       "warm_epochs": warm_epochs})  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
