"""Time batch selection: last-layer-gradient features of training set and pool, then greedy
max-distance selection of n structures.

    python bench/select_speed.py [--model DIR] [--train F] [--pool F ...] [-n 20] [--pool-size 1000]

Defaults: training set ../shared/data/cu_bulk_val.extxyz (100 frames, 107 atoms); pool = all five
../shared/data/cu_bulk_*.extxyz files concatenated (850 frames, cu_bulk_val included, so the pool
holds exact duplicates of the training set), filled up to --pool-size with rattled copies
(0.05 A, seeded) of the first pool frames. Without --model: a randomly initialised GMNN of the
reference size (n_basis 7, n_radial 5, r_max 5.0, hidden [128, 128], fp32) with Cu statistics
(energy shift, force scale, descriptor group scales) from the training set.

feature_s (features of training set and pool, including neighbour lists and padding, which
run in a background thread) and select_s are warm (second run); compile_s is the first run's
extra time; host_s is the neighbour-list and padding work alone (serial), for reference.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time

import jax
import numpy as np
from common import DATA, table, write_result

from apax_core.batching import padded_batches
from apax_core.config import GMNNConfig
from apax_core.data import Structure, from_atoms, read_frames
from apax_core.model import build_model, init_params
from apax_core.model_dir import Model, load_model
from apax_core.precision import x64
from apax_core.select import compute_features, max_distance_selection
from apax_core.train.data import data_statistics

POOL_FILES = [
    "cu_bulk_train",
    "cu_bulk_extra_train",
    "cu_bulk_test",
    "cu_bulk_val",
    "cu_bulk_extra_test",
]


def reference_model(train: list[Structure]) -> Model:
    """Random reference-size GMNN (fp32) with Cu statistics from ``train``."""
    config = GMNNConfig(n_basis=7, n_radial=5, r_max=5.0, hidden=[128, 128], precision="fp32")
    stats = data_statistics(train, (29,))
    with x64():
        params = init_params(build_model(config, stats), jax.random.PRNGKey(0))
    return Model(config, stats, params)


def read(paths) -> list[Structure]:
    return [from_atoms(a) for p in paths for a in read_frames(p)]


def fill_pool(pool: list[Structure], size: int, seed: int = 0) -> list[Structure]:
    """``pool`` cut or filled to ``size`` with rattled copies of its first structures."""
    rng = np.random.default_rng(seed)
    extra = [
        dataclasses.replace(
            s, positions=s.positions + rng.normal(scale=0.05, size=s.positions.shape)
        )
        for s in pool[: max(0, size - len(pool))]
    ]
    return (pool + extra)[:size]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def cpu_timed(fn):
    """Wall time and process CPU time (all threads): on a busy machine the CPU time, divided
    by the cores, bounds what the wall time would be on an idle one."""
    start = time.process_time()
    out, wall = timed(fn)
    return out, wall, time.process_time() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="model directory (default: random reference-size GMNN)")
    p.add_argument("--train", default=str(DATA / "cu_bulk_val.extxyz"))
    p.add_argument("--pool", nargs="+", default=[str(DATA / f"{f}.extxyz") for f in POOL_FILES])
    p.add_argument("--pool-size", type=int, default=1000)
    p.add_argument("-n", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=4)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    train = read([args.train])
    pool = fill_pool(read(args.pool), args.pool_size)
    model = load_model(args.model) if args.model else reference_model(train)

    def features():
        kw = dict(batch_size=args.batch_size)
        return compute_features(model, train, **kw), compute_features(model, pool, **kw)

    _, cold = timed(features)
    (train_f, pool_f), feature_s, feature_cpu_s = cpu_timed(features)
    _, host_s = timed(
        lambda: [
            list(padded_batches(d, model.config.r_max, args.batch_size)) for d in (train, pool)
        ]
    )
    (picks, dists), select_s = timed(lambda: max_distance_selection(train_f, pool_f, args.n))
    _, rank_all_s = timed(lambda: max_distance_selection(train_f, pool_f, len(pool_f)))

    n_files = len(read(args.pool))
    row = {
        "n_train": len(train),
        "n_pool": len(pool),
        "n_pool_from_files": n_files,
        "n": args.n,
        "feature_dim": int(pool_f.shape[1]),
        "feature_s": feature_s,
        "feature_cpu_s": feature_cpu_s,
        "host_s": host_s,
        "select_s": select_s,
        "total_s": feature_s + select_s,
        "compile_s": max(cold - feature_s, 0.0),
        "rank_all_s": rank_all_s,
        "first_distance": float(dists[0]),
        "last_distance": float(dists[-1]),
    }
    row["load_avg_1min"] = round(os.getloadavg()[0], 2)
    print(table([row], list(row)))
    out = write_result(
        "select_speed",
        {
            **row,
            "model": args.model or "random reference-size GMNN (fp32)",
            "train_file": args.train,
            "pool_files": args.pool,
            "picks": picks.tolist(),
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
