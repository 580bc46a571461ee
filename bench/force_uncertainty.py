"""Cost of a shallow ensemble's force uncertainty against a single model's energy + forces.

    python bench/force_uncertainty.py [--sizes 108,864] [--calls 10] [--repeats 3] [--cpu-time]

fcc Cu (3x3x3 and 6x6x6 conventional cells, rattled 0.05 A), the reference-size GMNN (n_basis
7, n_radial 5, r_max 5.0, hidden [128, 128], fp32, randomly initialised: cost does not depend
on training) and its shallow ensemble with the default number of members (8). Variants, each a
jitted batched call on one structure, stress off:

- ``single_energy`` / ``shallow_energy``: mode ``energy`` (the forward pass only);
- ``single_forces`` (a): one model's energy + forces (mode ``forces``);
- ``shallow_forces`` (b): the ensemble's mean energy + forces (mode ``forces``);
- ``shallow_unc`` (c): every member's forces, their mean and spread (mode ``uncertainty``);
- ``shallow_unc_vmap``: the same through the generic path (``vmap`` of the whole model's VJP
  over the members, ``transforms.member_gradients``), which (c) used before
  ``transforms/shallow.py``.

The variants alternate within one process (``--repeats`` rounds of ``--calls`` calls each); a
variant's time is its fastest call over all rounds, so background load inflates no ratio. The
columns ``c/a`` and ``b/a`` are the issue's ratios; ``fwd`` is the share of a variant's time
spent in its forward pass (its energy-mode time over its own time). ``--cpu-time`` times
calls by the process's CPU time instead of the wall clock: steadier on a shared machine, and
equal to it under ``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1" taskset -c 1`` (one thread).
"""

from __future__ import annotations

import argparse
import os
import time

import jax
from ase.build import bulk
from common import table, write_result
from md_speed import reference_model
from uq import _single_params

from apax_core.config import PadToMax
from apax_core.data import Dataset, from_atoms
from apax_core.model_dir import Model
from apax_core.precision import x64
from apax_core.predictor import compiled
from apax_core.transforms import batched, member_predictions

REPEATS = {108: 3, 864: 6}
VARIANTS = (
    ("single_energy", "single", "energy"),
    ("single_forces", "single", "forces"),
    ("shallow_energy", "shallow", "energy"),
    ("shallow_forces", "shallow", "forces"),
    ("shallow_unc", "shallow", "uncertainty"),
)


def models() -> dict[str, Model]:
    """The shallow ensemble (8 members) and the same network cut to its first output."""
    shallow = reference_model({"kind": "shallow"})
    single = Model(
        shallow.config.model_copy(update={"ensemble": None}),
        shallow.stats,
        _single_params(shallow.params),
    )
    return {"single": single, "shallow": shallow}


def batch_of(n_atoms: int, r_max: float):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(REPEATS[n_atoms])
    atoms.rattle(0.05, seed=0)
    dataset = Dataset([from_atoms(atoms)], r_max)
    return jax.device_put(next(dataset.batches(1, PadToMax(), shuffle=False, seed=0)))


def measure(n_atoms: int, calls: int, repeats: int, clock=time.perf_counter) -> dict[str, float]:
    """Fastest call (s) of every variant, the variants alternating ``repeats`` times."""
    ms = models()
    fns = {
        label: (compiled(ms[kind], mode, stress=False), ms[kind].variables)
        for label, kind, mode in VARIANTS
    }
    shallow = ms["shallow"]
    generic = jax.jit(
        batched(lambda params, s: member_predictions(shallow.apply, params, s)),
    )
    fns["shallow_unc_vmap"] = (lambda v, b: generic(v.params, b), shallow.variables)
    with x64():
        batch = batch_of(n_atoms, ms["single"].config.r_max)
        for fn, variables in fns.values():
            jax.block_until_ready(fn(variables, batch))  # compile
        best = dict.fromkeys(fns, float("inf"))
        for _ in range(repeats):
            for label, (fn, variables) in fns.items():
                for _ in range(calls):
                    start = clock()
                    jax.block_until_ready(fn(variables, batch))
                    best[label] = min(best[label], clock() - start)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="108,864")
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cpu-time", action="store_true", help="time by process CPU time")
    args = p.parse_args()
    clock = time.process_time if args.cpu_time else time.perf_counter
    load_before = os.getloadavg()[0]
    out, rows = {}, []
    for n in (int(x) for x in args.sizes.split(",")):
        t = measure(n, args.calls, args.repeats, clock)
        a, b, c = t["single_forces"], t["shallow_forces"], t["shallow_unc"]
        ratios = {
            "c/a": c / a,
            "vmap/a": t["shallow_unc_vmap"] / a,
            "b/a": b / a,
            "fwd a": t["single_energy"] / a,
            "fwd c": t["shallow_energy"] / c,
        }
        out[str(n)] = {"seconds": t, "ratios": ratios}
        rows.append({"atoms": n, **{f"{k} ms": 1e3 * v for k, v in t.items()}, **ratios})
    out["load_average"] = {"before": load_before, "after": os.getloadavg()[0]}
    out["clock"] = "process CPU time" if args.cpu_time else "wall"
    out["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    print(table(rows, list(rows[0])))
    print(f"load average (1 min): {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"wrote {write_result('force_uncertainty', out)}")


if __name__ == "__main__":
    main()
