"""Continuous learning: warm start on grown data vs training the same data from scratch.

    python bench/warm_start.py [--epochs 40] [--fractions 0.25 0.5] [--lr-factor 0.3]
                               [--batch-size 2] [--scratch-batch-size 8] [--extra-frames N]
                               [--seed 0]

1. base: train ``--epochs`` on cu_bulk_train (validated on cu_bulk_val), template defaults
   except the batch size ``--scratch-batch-size``;
2. warm: continue from base on cu_bulk_train + cu_bulk_extra_train (all of it, or
   ``--extra-frames`` evenly spaced frames of it: a smaller increment) for each fraction of the
   epochs, with the peak learning rates times ``--lr-factor`` and batch size ``--batch-size``
   (at the scratch rates the first epochs undo much of the base; on the CPU an epoch at batch
   2 costs no more than at 8); plus one warm run at the template defaults for reference;
3. scratch: train the same grown data from scratch for all epochs, batched as the base.
Reports test MAEs on cu_bulk_test and cu_bulk_extra_test and wall times (warm / scratch);
writes bench/results/warm_start[_<N>ep][_scratch_b<B>][_extra<K>][_seed<S>].json (a suffix
for each option that differs from its default).
"""

from __future__ import annotations

import argparse
import functools
import logging
import tempfile
from pathlib import Path

import numpy as np
from common import DATA, table, write_result
from train_speed import run, train_config

from apax_core.config import LearningRates
from apax_core.data import read_frames, write_frames

EXTRA = "cu_bulk_extra_test"


def scaled_rates(factor: float) -> dict:
    return {k: v * factor for k, v in LearningRates().model_dump().items()}


def at_least_as_accurate(run: dict, reference: dict) -> bool:
    mine, ref = run[EXTRA], reference[EXTRA]
    return (
        mine["forces_mae_meV_A"] <= ref["forces_mae_meV_A"]
        and mine["energy_mae_meV_atom"] <= ref["energy_mae_meV_atom"]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5])
    p.add_argument("--lr-factor", type=float, default=0.3)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--scratch-batch-size", type=int, default=8)
    p.add_argument("--extra-frames", type=int, default=None, help="default: all 200")
    p.add_argument("--seed", type=int, default=0, help="parameter initialisation of every run")
    args = p.parse_args()
    config = functools.partial(train_config, seed=args.seed)
    logging.basicConfig(level=logging.WARNING)
    tests = [DATA / "cu_bulk_test.extxyz", DATA / f"{EXTRA}.extxyz"]
    val = DATA / "cu_bulk_val.extxyz"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        grown = tmp / "train_grown.extxyz"
        extra = read_frames(DATA / "cu_bulk_extra_train.extxyz")
        if args.extra_frames is not None:
            keep = np.linspace(0, len(extra) - 1, args.extra_frames).round().astype(int)
            extra = [extra[k] for k in keep]
        write_frames(grown, read_frames(DATA / "cu_bulk_train.extxyz") + extra)
        base = config(
            tmp / "base",
            DATA / "cu_bulk_train.extxyz",
            val,
            args.epochs,
            batch_size=args.scratch_batch_size,
        )
        results = {"base": run(base, tests)}
        base_dir = tmp / "base"
        first = max(1, round(args.fractions[0] * args.epochs))
        plain = config(tmp / "warm_defaults", grown, val, first, base_model=base_dir)
        results[f"warm_defaults_{first}ep"] = run(plain, tests)
        for fraction in args.fractions:
            epochs = max(1, round(fraction * args.epochs))
            name = f"warm_{epochs}ep"
            warm = config(
                tmp / name,
                grown,
                val,
                epochs,
                batch_size=args.batch_size,
                base_model=base_dir,
                optimizer={"learning_rates": scaled_rates(args.lr_factor)},
            )
            results[name] = run(warm, tests)
        scratch = config(
            tmp / "scratch",
            grown,
            val,
            args.epochs,
            batch_size=args.scratch_batch_size,
        )
        results["scratch"] = run(scratch, tests)
    wall = results["scratch"]["wall_s"]
    verdict = {
        name: {
            "wall_ratio_warm_over_scratch": r["wall_s"] / wall,
            "warm_at_least_as_accurate_on_extra": at_least_as_accurate(r, results["scratch"]),
        }
        for name, r in results.items()
        if name.startswith("warm")
    }
    rows = []
    for name, r in results.items():
        row = {"run": name, "n_epochs": r["n_epochs"], "wall_s": r["wall_s"]}
        if name in verdict:
            row["wall/scratch"] = verdict[name]["wall_ratio_warm_over_scratch"]
            row["as_accurate"] = verdict[name]["warm_at_least_as_accurate_on_extra"]
        for f in tests:
            row[f"{f.stem}_E"] = r[f.stem]["energy_mae_meV_atom"]
            row[f"{f.stem}_F"] = r[f.stem]["forces_mae_meV_A"]
        rows.append(row)
    print(table(rows, list(dict.fromkeys(k for r in rows for k in r))))
    name = "warm_start" + (f"_{args.epochs}ep" if args.epochs != 40 else "")
    name += f"_scratch_b{args.scratch_batch_size}" if args.scratch_batch_size != 8 else ""
    name += f"_extra{args.extra_frames}" if args.extra_frames is not None else ""
    name += f"_seed{args.seed}" if args.seed else ""
    path = write_result(name, {"runs": results, "verdict": verdict, **vars(args)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
