"""The public apax 0.14 half of bench/vs_apax.py; run with the apax venv's interpreter, never
imported by our code (it imports apax, which our project must not depend on).

    /work/apax014/bin/python bench/apax_side.py train SPEC.json OUT.json
    /work/apax014/bin/python bench/apax_side.py md SPEC.json OUT.json

``train``: SPEC holds an apax training config (a dict, as apax's config.yaml) under "config"
and optionally a test file under "test"; it trains with apax.train.run.run, then reads the
per-epoch wall times from the run's log.csv (apax's CSV callback, column ``epoch_time``) and,
with a test file, the energy and force MAE of the trained model through apax's ASE calculator.

``md``: SPEC holds "model_dir" (the trained run's directory, holding config.yaml), "structure"
(an extxyz file), "md" (an apax md config dict, without initial_structure/sim_dir) and
"sim_dir". It times apax.md.simulate.run_md (what ``apax md`` runs: config parsing, model
build, parameter restore, neighbour allocation, jit compilation, the steps with their
per-step io_callback, the H5MD write), writes the final frame to sim_dir/final.extxyz and
counts the neighbour slots of jax-md's sparse list allocated the way apax allocates it (after
the timed run, outside the timing).

OUT receives a JSON object; every time is wall-clock seconds.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def train(spec: dict) -> dict:
    from apax.train.run import run

    config = spec["config"]
    start = time.perf_counter()
    run(config, log_level="error")
    wall = time.perf_counter() - start
    run_dir = Path(config["data"]["directory"]) / config["data"]["experiment"]
    with open(run_dir / "log.csv") as fh:
        epochs = [float(r["epoch_time"]) for r in csv.DictReader(fh)]
    out = {"wall_s": wall, "epoch_times_s": epochs, "model_dir": str(run_dir)}
    if spec.get("test"):
        out.update(test_errors(run_dir, spec["test"]))
    return out


def test_errors(run_dir: Path, test_file: str) -> dict:
    """Energy MAE (meV/atom) and force component MAE (meV/A) on ``test_file``."""
    import numpy as np
    from apax.md import ASECalculator
    from ase.io import read

    frames = read(test_file, ":")
    calc = ASECalculator(run_dir)
    de, df = [], []
    for ref in frames:
        atoms = ref.copy()
        atoms.calc = calc
        de.append((atoms.get_potential_energy() - ref.get_potential_energy()) / len(ref))
        df.append((atoms.get_forces() - ref.get_forces()).ravel())
    return {
        "test_energy_mae_meV_atom": 1e3 * float(np.mean(np.abs(de))),
        "test_forces_mae_meV_A": 1e3 * float(np.mean(np.abs(np.concatenate(df)))),
    }


def md(spec: dict) -> dict:
    from apax.config import Config, MDConfig, parse_config
    from apax.md.simulate import md_setup, run_md
    from ase.io import read, write

    model_dir = Path(spec["model_dir"])
    sim_dir = Path(spec["sim_dir"])
    md_config = {
        **spec["md"],
        "initial_structure": str(spec["structure"]),
        "sim_dir": str(sim_dir),
        "restart": False,
        "disable_pbar": True,
    }
    start = time.perf_counter()
    run_md(str(model_dir / "config.yaml"), md_config, log_level="error")
    seconds = time.perf_counter() - start

    frames = read(sim_dir / "md.h5", ":")
    write(sim_dir / "final.extxyz", frames[-1])

    model_config: Config = parse_config(str(model_dir / "config.yaml"))
    parsed: MDConfig = parse_config(md_config, mode="md")
    system, sim_fns = md_setup(model_config, parsed)
    nbrs = sim_fns.neighbor_fn.allocate(system.positions, extra_capacity=parsed.extra_capacity)
    n_atoms = len(system.positions)
    slots = int(nbrs.idx.shape[-1])  # sparse format: idx (2, pair capacity)
    return {
        "run_md_s": seconds,
        "n_atoms": n_atoms,
        "n_frames": len(frames),
        "neighbour_pair_capacity": slots,
        "neighbour_slots_per_atom": slots / n_atoms,
    }


def main() -> None:
    mode, spec_file, out_file = sys.argv[1:4]
    spec = json.loads(Path(spec_file).read_text())
    out = {"train": train, "md": md}[mode](spec)
    Path(out_file).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
