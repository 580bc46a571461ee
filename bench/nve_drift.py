"""NVE energy conservation of a trained model: total energy spread and drift over a run.

    python bench/nve_drift.py MODEL_DIR [--atoms 108] [--T 300] [--ps 2] [--out nve_drift]

fcc Cu (a = 3.61 A) from rest with momenta drawn at T, velocity Verlet at 1 fs, a frame every
10 steps, skin 0.5 A. Prints the total energy's peak-to-peak and its linear drift (meV/atom,
meV/atom/ps) and the kinetic energy's peak-to-peak (the energy that moves between the two
halves), and writes bench/results/<out>.json. To compare two revisions on one model, run it
with each checkout first on PYTHONPATH (the apax_core it imports is printed).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
from common import write_result
from md_speed import cu

import apax_core
from apax_core.config.md import MDConfig
from apax_core.md import read_trajectory
from apax_core.md.run import run_md
from apax_core.model_dir import load_model

EVERY = 10


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path)
    p.add_argument("--atoms", type=int, default=108)
    p.add_argument("--T", type=float, default=300.0)
    p.add_argument("--ps", type=float, default=2.0)
    p.add_argument("--out", default="nve_drift")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = MDConfig(
        dynamics={"kind": "nve"},
        temperature={"kind": "constant", "T": args.T},
        dt=1.0,
        duration=1000.0 * args.ps,
        n_inner=500,
        sampling_rate=EVERY,
        skin=0.5,
        force_uncertainty=False,
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = run_md(load_model(args.model), cu(args.atoms), config, Path(tmp))
        frames = read_trajectory(result.trajectory)
    kinetic = np.array([f.get_kinetic_energy() for f in frames]) / args.atoms
    total = np.array([f.get_potential_energy() for f in frames]) / args.atoms + kinetic
    t_ps = np.arange(1, len(total) + 1) * EVERY * 1e-3
    out = {
        "apax_core": str(Path(apax_core.__file__).parent),
        "steps": result.status["step"],
        "E_ptp_meV_per_atom": 1e3 * float(np.ptp(total)),
        "E_drift_meV_per_atom_ps": 1e3 * float(np.polyfit(t_ps, total, 1)[0]),
        "K_ptp_meV_per_atom": 1e3 * float(np.ptp(kinetic)),
    }
    print(
        "\n".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in out.items())
    )
    write_result(args.out, out)


if __name__ == "__main__":
    main()
