"""EquivMP's energy + forces cost per atom against GMNN's, A/B in one process (fast: no MD, no
training).

    python bench/equivmp_speed.py [--sizes 108,864] [--repeats 3] [--calls N]

Models, randomly initialised (speed does not depend on training), fp32, Cu statistics:
``gmnn`` the reference GMNN (n_basis 7, n_radial 5, r_max 5.0, hidden [128, 128]),
``equivmp`` EquivMP at its config defaults, and ``alike`` EquivMP at apax's equiv-mp settings
(1 layer, 32 channels, l_max 2, r_max 5). Systems: fcc Cu 3x3x3 (108 atoms) and 6x6x6 (864),
one structure per call, the predictor's jitted energy + forces (no stress), neighbour slots at
the model's r_max (no skin). The models take turns within each of ``--repeats`` rounds and
each keeps its fastest round; ratios are to GMNN on the same system.

``--md``: also the JAX engine's MD cost (us/atom/step, NVT 300 K, skin 0.4 A, chunks of 50
steps, the first one the warm-up) at 864 atoms, the models taking turns, fastest of
``--repeats``. The predictor evaluates a batch (vmapped over structures), MD a single system:
the batched gathers and their scatter-adds cost EquivMP several times more than the
unbatched ones, so its MD ratio is the smaller one.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
from common import table, write_result
from md_speed import cu, jax_engine

from apax_core.config import EquivMPConfig, GMNNConfig, PadToMax
from apax_core.data import Dataset, from_atoms
from apax_core.model import ModelStatistics, build_model, init_params
from apax_core.model_dir import Model
from apax_core.precision import x64
from apax_core.predictor import compiled

CONFIGS = {
    "gmnn": lambda: GMNNConfig(n_basis=7, n_radial=5, r_max=5.0, hidden=[128, 128]),
    "equivmp": lambda: EquivMPConfig(),
    "alike": lambda: EquivMPConfig(n_layers=1, n_channels=32, l_max=2, r_max=5.0),
}
CALLS = {108: 20, 864: 4}


def random_model(config) -> Model:
    stats = ModelStatistics((29,), (-3.5,), (0.5,))
    config = config.model_copy(update={"precision": "fp32"})
    with x64():
        params = init_params(build_model(config, stats), jax.random.PRNGKey(0))
    return Model(config, stats, params)


def timer(model: Model, atoms):
    """A function timing ``calls`` energy + forces evaluations of ``atoms``: seconds per call."""
    fn = compiled(model, stress=False)
    with x64():
        batch = next(
            Dataset([from_atoms(atoms)], model.config.r_max).batches(
                1, PadToMax(), shuffle=False, seed=0
            )
        )
        batch = jax.device_put(batch)
        jax.block_until_ready(fn(model.variables, batch))  # compile

    def run(calls: int) -> float:
        with x64():
            start = time.perf_counter()
            for _ in range(calls):
                jax.block_until_ready(fn(model.variables, batch))
            return (time.perf_counter() - start) / calls

    return run, batch.idx_j.shape[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="108,864")
    p.add_argument("--models", default=",".join(CONFIGS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--calls", type=int, default=None, help="calls per round (default by size)")
    p.add_argument("--md", action="store_true", help="also MD us/atom/step at 864 atoms")
    p.add_argument("--out", default="equivmp_speed", help="result name under bench/results")
    args = p.parse_args()
    names = args.models.split(",")
    models = {name: random_model(CONFIGS[name]()) for name in names}
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        atoms = cu(n)
        timers = {name: timer(m, atoms) for name, m in models.items()}
        calls = args.calls or CALLS.get(n, max(1, 2000 // n))
        best = {name: float("inf") for name in names}
        for _ in range(args.repeats):
            for name, (run, _) in timers.items():
                best[name] = min(best[name], run(calls))
        for name in names:
            us = 1e6 * best[name] / n
            row = {"atoms": n, "model": name, "slots": timers[name][1], "us_per_atom": us}
            if "gmnn" in best:
                row["x_gmnn"] = best[name] / best["gmnn"]
            rows.append(row)
    print(table(rows, list(rows[0])))
    if args.md:
        md = {name: float("inf") for name in names}
        for _ in range(args.repeats):
            for name, m in models.items():
                us = jax_engine(m, cu(864), 50, udd=False, force_uncertainty=False)[0]
                md[name] = min(md[name], us)
        md_rows = [
            {"model": name, "md_us_per_atom_step": us, **_ratio(us, md.get("gmnn"))}
            for name, us in md.items()
        ]
        print(table(md_rows, list(md_rows[0])))
        rows += [{"atoms": 864, "kind": "md", **r} for r in md_rows]
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"wrote {write_result(args.out, {'rows': rows, 'load_average': load})}")


def _ratio(us: float, gmnn: float | None) -> dict:
    return {} if gmnn is None else {"x_gmnn": us / gmnn}


if __name__ == "__main__":
    main()
