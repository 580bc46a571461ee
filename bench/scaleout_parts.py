"""The MD-walker and training parts of bench/scaleout.py.

    python bench/scaleout_parts.py train N_DEVICES EPOCHS   (one training run; prints JSON)

MD walkers run the default loop's model and cell (random weights, Cu statistics) at 300 K, so
no walker stops early and every way of running them does the same work.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from ase.build import bulk
from common import DATA

from apax_core.config import GMNNConfig, MDConfig, TrainConfig, TrainRun
from apax_core.data import read_frames, write_frames
from apax_core.md.build import build_engine
from apax_core.md.neighbours import list_kind, quiet
from apax_core.md.walkers import run_walkers
from apax_core.model import ModelStatistics, build_model, init_params
from apax_core.model_dir import Model, save_config, save_params, save_stats
from apax_core.precision import x64

N_WALKERS, N_INNER = 4, 250
EXECUTORS = {
    "serial": {"kind": "serial"},
    "processes2": {"kind": "processes", "n_workers": 2},
    "dask2": {"kind": "dask", "n_workers": 2},
}


def loop_model() -> Model:
    """The default loop's shallow GMNN (example_project/main.py), random weights."""
    config = GMNNConfig(
        r_max=4.5,
        n_basis=6,
        n_radial=4,
        hidden=[32, 32],
        ensemble={"kind": "shallow", "n_members": 4},
    )
    stats = ModelStatistics((29,), (-3.5,), (0.5,))
    with x64():
        params = init_params(build_model(config, stats), jax.random.PRNGKey(0))
    return Model(config, stats, params)


def cell():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 3))
    del atoms[0]
    return atoms


def md_config(steps: int) -> MDConfig:
    return MDConfig(
        dynamics={"kind": "langevin", "friction": 0.01},
        temperature={"kind": "constant", "T": 300.0},
        dt=2.0,
        duration=2.0 * steps,
        n_inner=N_INNER,
        sampling_rate=25,
        skin=0.4,
        extra_capacity=24,  # room for the random model's disorder: no walker regrows its list
    )


def walkers_timed(steps: int) -> dict:
    """Per way of running 4 walkers: wall seconds (start-up and compilation included) and the
    steady cost per atom and step of one walker."""
    model, config, out = loop_model(), md_config(steps), {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        model_dir.mkdir()
        save_config(model_dir, TrainConfig(n_epochs=1, model=model.config))
        save_stats(model_dir, model.stats)
        save_params(model_dir, model.params)
        for name, executor in EXECUTORS.items():
            start = time.perf_counter()
            walkers = run_walkers(
                model_dir, [cell()], config, Path(tmp) / name, executor, n_walkers=N_WALKERS
            )
            costs = [s["us_per_atom_step"] for _, s in walkers]
            out[name] = {"s": time.perf_counter() - start, "us_per_atom_step": np.median(costs)}
    out["vmap4"] = vmapped(model, config, steps)
    return out


def vmapped(model: Model, config: MDConfig, steps: int) -> dict:
    """4 replicas (own random keys) in one program: the engine's chunk under jax.vmap. The cost
    per atom and step counts each replica's atoms (comparable to one walker's)."""
    atoms, start = cell(), time.perf_counter()
    with x64(), quiet():
        kind = list_kind(atoms, model.config.r_max + config.skin)
        engine = build_engine(model, atoms, config, kind)
        params = jax.device_put(model.variables)
        R = jnp.asarray(engine.pairs.fractional(atoms.positions))
        nbrs = engine.pairs.allocate(R, config.extra_capacity)
        keys = jax.random.split(jax.random.PRNGKey(config.seed), N_WALKERS)
        states = jax.vmap(lambda k: engine.init(params, k, R, None, nbrs))(keys)
        lists = jax.tree.map(lambda x: jnp.stack([x] * N_WALKERS), nbrs)
        chunk = jax.jit(jax.vmap(engine.chunk, in_axes=(None, 0, 0, None, None)))
        chunk_s = []
        for step in range(0, steps, N_INNER):
            t0 = time.perf_counter()
            out = chunk(params, states, lists, jnp.asarray(step), jnp.asarray(step + N_INNER))
            jax.block_until_ready(out)
            chunk_s.append(time.perf_counter() - t0)
            if any(
                engine.pairs.error(jax.tree.map(lambda x, k=k: x[k], out.nbrs))
                for k in range(N_WALKERS)
            ):
                raise RuntimeError("a replica's neighbour list overflowed; raise extra_capacity")
            states, lists = out.state, out.nbrs
    steady = statistics.median(chunk_s[1:])
    return {
        "s": time.perf_counter() - start,
        "us_per_atom_step": 1e6 * steady / N_INNER / len(atoms),
    }


def train_once(n_devices: int, epochs: int) -> dict:
    """The reference GMNN (bench/train_speed.py) on 128 + 32 cu_bulk structures, batch 8."""
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name, n in (("train", 128), ("val", 32)):
            files[name] = Path(tmp) / f"{name}.extxyz"
            write_frames(files[name], read_frames(DATA / f"cu_bulk_{name}.extxyz")[:n])
        model = {"n_basis": 7, "n_radial": 5, "r_max": 5.0, "hidden": [128, 128]}
        spec = TrainConfig.model_validate(
            {"n_epochs": epochs, "n_devices": n_devices, "data": {"batch_size": 8}, "model": model}
        )
        run = TrainRun(
            directory=Path(tmp) / "model",
            train_file=files["train"],
            val_file=files["val"],
            progress_bar=False,
        )
        from apax_core.train.trainer import train_run

        train_run(spec, run)
        rows = (Path(tmp) / "model" / "log.csv").read_text().splitlines()
    header = rows[0].split(",")
    log = [dict(zip(header, r.split(","), strict=True)) for r in rows[1:]]
    times = [float(r["epoch_s"]) for r in log]
    return {
        "epoch_s": statistics.median(times[1:]),
        "first_epoch_s": times[0],
        "final_val_loss": float(log[-1]["val_loss"]),
        "devices_seen": jax.device_count(),
    }


if __name__ == "__main__" and sys.argv[1:2] == ["train"]:
    print(json.dumps(train_once(int(sys.argv[2]), int(sys.argv[3]))))
