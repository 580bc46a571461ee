"""Neighbour-list sizing before and after the thermal probe, on a default loop's own models.

    python bench/md_capacity.py REPO [--iterations 0 1 2 3 4]

REPO is a reproduced default loop (the repository root after ``dvc repro``). For each iteration,
its MD settings and model run its start structure twice in this process: with the list sized on
the start alone (before: ``N_SAMPLES = 0``) and with the thermal probe (after); then the last
model runs 864 atoms (6x6x6 fcc Cu) at 600 K the same two ways. Each run starts from an empty
capacity memory. "start" grows an overflowed list by 1.1x (the growth rule of this tree; the
tree before the probe grew by 1.25x, e.g. 46 -> 58 slots). Prints slots per atom, chunk
programs (compilations of the chunk), steady us/atom/step and wall time; writes
bench/results/md_capacity.json.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import yaml
import znh5md
from ase.build import bulk
from common import table, write_result

from apax_core.config.md import MDConfig
from apax_core.md import capacity, run_md
from apax_core.model_dir import load_model


def run(model, atoms, config: MDConfig, probe: bool) -> dict:
    capacity.N_SAMPLES, capacity._MEMORY = (8 if probe else 0), {}
    remembered = capacity._path
    capacity._path = lambda: None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            result = run_md(model, atoms, config, tmp, restart=False, progress_bar=False)
            wall = time.perf_counter() - t0
    finally:
        capacity._path, capacity.N_SAMPLES = remembered, 8
    return {
        "sizing": "probe" if probe else "start",
        "slots": result.timing["neighbour_slots"],
        "programs": result.timing["chunk_programs"],
        "us/atom/step": result.timing["us_per_atom_step"],
        "steps": result.status["step"],
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path)
    parser.add_argument("--iterations", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    params = yaml.safe_load((args.repo / "params.yaml").read_text())
    start = znh5md.IO(str(args.repo / "nodes/data/BuildBulk/frames.h5"))[0]
    rows = []
    for i in args.iterations:
        config = MDConfig(**params[f"iter{i}_MD"]["config"])
        model = load_model(args.repo / f"nodes/iter{i}/Train/model")
        for probe in (False, True):
            rows.append(
                {"case": f"iter{i} ({len(start)} atoms)", **run(model, start, config, probe)}
            )
    hot = MDConfig(
        **{**config.model_dump(), "temperature": {"kind": "constant", "T": 600.0}, "checks": []}
        | {"duration": 2000.0}
    )
    big = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((6, 6, 6))
    for probe in (False, True):
        rows.append({"case": "864 atoms, 600 K", **run(model, big, hot, probe)})
    columns = ["case", "sizing", "slots", "programs", "us/atom/step", "steps", "wall_s"]
    print(table(rows, columns))
    write_result("md_capacity", {"repo": str(args.repo), "rows": rows})


if __name__ == "__main__":
    main()
