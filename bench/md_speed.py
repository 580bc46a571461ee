"""MD speed: microseconds per atom per step of the JAX engine and of ASE driving the calculator.

    python bench/md_speed.py [--model DIR] [--sizes 48,96,108,864,6912] [--steps N]

fcc Cu supercells (2x2x3, 2x3x4, 3x3x3, 6x6x6, 12x12x12 conventional cells for 48, 96, 108,
864, 6912 atoms), NVT Nose-Hoover at 300 K, dt 1 fs, skin 0.4 A, a frame kept every 50 steps.
The 48- and 96-atom cells are 7.22 A high, below 2 (r_max + skin) = 10.8 A (small QM cells);
the 108-atom cell is 10.83 A high, just above. The ``list`` column is the engine's neighbour
list for the size (``md.neighbours.list_kind``: image shifts below 6000 atoms, jax-md's
minimum image above). Variants: a single model; a shallow ensemble of
8 members (the dynamics use the mean force; member forces only on kept frames); the shallow
ensemble with UDD; and ASE's VelocityVerlet driving ApaxCalculator with the single model.
Compilation is excluded from the per-step cost (the first chunk is the warm-up) and reported
separately. Without --model, a randomly initialised GMNN of the reference size (n_basis 7,
n_radial 5, r_max 5.0, hidden [128, 128], fp32) with Cu statistics is used: speed does not
depend on training.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from ase import units
from ase.build import bulk
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from common import table, write_result

from apax_core.calculator import ApaxCalculator
from apax_core.config import GMNNConfig
from apax_core.config.md import MDConfig
from apax_core.md import run_md
from apax_core.md.neighbours import list_kind
from apax_core.model import ModelStatistics, build_model, init_params
from apax_core.model_dir import Model, load_model
from apax_core.precision import x64

REPEATS = {48: (2, 2, 3), 96: (2, 3, 4), 108: 3, 256: 4, 864: 6, 6912: 12}
STEPS = {48: 1000, 96: 500, 108: 500, 864: 200, 6912: 100}
"""Steps per chunk: a multiple of the sampling rate, so every chunk keeps frames."""
ASE_STEPS = {48: 100, 96: 50, 108: 50, 864: 20, 6912: 5}
SAMPLING_RATE = 50
SKIN = 0.4


def random_model(config) -> Model:
    """A randomly initialised model of ``config`` with Cu statistics (shift ~ -3.5 eV, scale
    0.5 eV): speed does not depend on training."""
    stats = ModelStatistics((29,), (-3.5,), (0.5,))
    with x64():
        params = init_params(build_model(config, stats), jax.random.PRNGKey(0))
    return Model(config, stats, params)


def reference_model(ensemble: dict | None = None) -> Model:
    """Random GMNN of the reference size (:func:`random_model`)."""
    return random_model(
        GMNNConfig(
            n_basis=7, n_radial=5, r_max=5.0, hidden=[128, 128], precision="fp32", ensemble=ensemble
        )
    )


def cu(n_atoms: int):
    if n_atoms not in REPEATS:
        raise SystemExit(f"size {n_atoms} not supported; choose from {sorted(REPEATS)}")
    return bulk("Cu", "fcc", a=3.61, cubic=True).repeat(REPEATS[n_atoms])


def jax_engine(
    model: Model, atoms, steps: int, udd: bool, force_uncertainty: bool = True
) -> tuple[float, float]:
    """(us/atom/step, compile s): three chunks of ``steps`` steps, the first one the warm-up."""
    config = MDConfig(
        force_uncertainty=force_uncertainty,
        dt=1.0,
        duration=3 * steps,
        n_inner=steps,
        sampling_rate=SAMPLING_RATE,
        skin=SKIN,
        temperature={"kind": "constant", "T": 300.0},
        udd={"height": 1.0, "width": 1.2} if udd else None,
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = run_md(model, atoms, config, Path(tmp), progress_bar=False)
    return result.timing["us_per_atom_step"], result.timing["compile_s"]


def ase_engine(model: Model, atoms, steps: int) -> tuple[float, float]:
    """(us/atom/step, first-call s) of ASE's VelocityVerlet with the calculator (an ensemble in
    cheap mode: mean forces only, the cost of a single model)."""
    atoms = atoms.copy()
    atoms.calc = ApaxCalculator(model, skin=SKIN, force_uncertainty=False)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    t0 = time.perf_counter()
    atoms.get_forces()
    first = time.perf_counter() - t0
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    dyn.run(2)  # a second shape compile happens only if the neighbour bin changes
    t0 = time.perf_counter()
    dyn.run(steps)
    per_step = (time.perf_counter() - t0) / steps
    return 1e6 * per_step / len(atoms), first


def measure(variant: str, single: Model, shallow: Model, atoms, steps: int, ase_steps: int):
    """(us/atom/step, compile s) of one variant on ``atoms``."""
    if variant == "ase_single":
        return ase_engine(single, atoms, ase_steps)
    model = single if variant == "single" else shallow
    cheap = variant == "single" and model.config.n_members > 1
    return jax_engine(model, atoms, steps, udd=(variant == "udd"), force_uncertainty=not cheap)


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model",
        type=Path,
        help="model directory (default: random reference GMNN); an ensemble model serves all "
        "variants, 'single' being its cheap mode (mean forces, no member forces)",
    )
    p.add_argument("--out", default="md_speed", help="result name under bench/results")
    p.add_argument("--sizes", default="48,96,108,864,6912")
    p.add_argument("--steps", type=int, default=None, help="steps per chunk (default by size)")
    p.add_argument("--ase-steps", type=int, default=None, help="timed ASE steps (default by size)")
    p.add_argument("--variants", default="single,shallow8,udd,ase_single")
    return p.parse_args()


def main() -> None:
    args = arguments()
    logging.basicConfig(level=logging.WARNING)
    sizes = [int(s) for s in args.sizes.split(",")]
    variants = args.variants.split(",")

    if args.model:
        single = shallow = load_model(args.model)
        if single.config.n_members < 2:
            variants = [v for v in variants if v in ("single", "ase_single")]
    else:
        single = reference_model()
        shallow = reference_model({"kind": "shallow", "n_members": 8})

    us: dict[str, dict[str, float]] = {v: {} for v in variants}
    compile_s: dict[str, dict[str, float]] = {v: {} for v in variants}
    kinds: dict[str, str] = {}
    rows = []
    for n in sizes:
        atoms = cu(n)
        steps = args.steps or STEPS[n]
        kinds[str(n)] = list_kind(atoms, single.config.r_max + SKIN)
        row = {"atoms": n, "list": kinds[str(n)], "steps/chunk": steps}
        for v in variants:
            ase_steps = args.ase_steps or ASE_STEPS[n]
            value, comp = measure(v, single, shallow, atoms, steps, ase_steps)
            us[v][str(n)], compile_s[v][str(n)] = value, comp
            row[v] = value
            print(
                f"{n} atoms, {v}: {value:.2f} us/atom/step (compile {comp or 0:.1f} s)", flush=True
            )
        rows.append(row)
    print()
    print("us/atom/step (lower is better)")
    print(table(rows, ["atoms", "list", "steps/chunk", *variants]))
    path = write_result(
        args.out,
        {
            "load_average_at_end": os.getloadavg(),
            "us_per_atom_step": us,
            "compile_s": compile_s,
            "neighbour_list": kinds,
            "sampling_rate": SAMPLING_RATE,
            "skin": SKIN,
            "model": str(args.model) if args.model else "random reference GMNN (fp32)",
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
