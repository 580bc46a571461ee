"""Energy + force evaluations per second of the reference-size GMNN (compile time apart).

    python bench/model_speed.py [--data FILE] [--repeats N]

Systems: the 107-atom Cu cells of ``--data`` and a 2x2x2 supercell (856 atoms) of the first;
batch sizes 1 and 8. The model is randomly initialised (speed does not depend on training):
n_basis 7, n_radial 5, r_max 5.0, hidden [128, 128], fp32.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
from common import DATA, table, write_result

from apax_core.config import GMNNConfig, PadToMax
from apax_core.data import Dataset, from_atoms, read_frames
from apax_core.model import build_model, init_params
from apax_core.model_dir import Model
from apax_core.precision import x64
from apax_core.predictor import compiled
from apax_core.train.data import data_statistics


def reference_model(structures) -> Model:
    config = GMNNConfig(n_basis=7, n_radial=5, r_max=5.0, hidden=[128, 128])
    stats = data_statistics(structures, (29,))
    with x64():
        params = init_params(build_model(config, stats), jax.random.PRNGKey(0))
    return Model(config, stats, params)


def measure(model: Model, structures, batch_size: int, repeats: int) -> dict:
    fn = compiled(model, stress=False)
    with x64():
        batch = next(
            Dataset(structures[:batch_size], model.config.r_max).batches(
                batch_size, PadToMax(), shuffle=False, seed=0
            )
        )
        batch = jax.device_put(batch)
        start = time.perf_counter()
        jax.block_until_ready(fn(model.variables, batch))
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(repeats):
            jax.block_until_ready(fn(model.variables, batch))
        per_call = (time.perf_counter() - start) / repeats
    n_atoms = int(batch.n_atoms.sum())
    return {
        "batch_size": batch_size,
        "n_atoms": n_atoms // batch_size,
        "evals_per_s": batch_size / per_call,
        "ms_per_call": 1000 * per_call,
        "us_per_atom": 1e6 * per_call / n_atoms,
        "compile_s": compile_s,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA / "cu_bulk_train.extxyz")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    frames = read_frames(args.data)[:8]
    cells = [from_atoms(a) for a in frames]
    supercells = [from_atoms(a.repeat((2, 2, 2))) for a in frames]
    model = reference_model(cells)
    rows = []
    for name, structures in (("cell", cells), ("supercell_2x2x2", supercells)):
        for bs in (1, 8):
            rows.append({"system": name, **measure(model, structures, bs, args.repeats)})
    cols = [
        "system",
        "n_atoms",
        "batch_size",
        "evals_per_s",
        "ms_per_call",
        "us_per_atom",
        "compile_s",
    ]
    print(table(rows, cols))
    print(f"wrote {write_result('model_speed', {'rows': rows, 'data': str(args.data)})}")


if __name__ == "__main__":
    main()
