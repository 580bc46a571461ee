"""Constant-pressure MD: its cost against NVT, and the 300 K lattice constant of EMT copper.

    python bench/npt.py [--parts speed,lattice] [--epochs 40] [--ps 20] [--quick]

The model: a GMNN of the reference size (n_basis 7, n_radial 5, r_max 5 A, hidden [128, 128],
fp32) trained on the EMT data (../shared/data/cu_bulk_{train,val}.extxyz, 107-atom cells at
600-1200 K and +-2 % strain; energy, forces and stress), or --model.

Speed: the perfect 108-atom fcc crystal (3x3x3 conventional cells), 300 K, 1 bar, dt 2 fs,
skin 0.5 A, a frame every 50 steps: us/atom/step of NVT (Langevin, Nose-Hoover) and NPT
(stochastic cell rescaling with an isotropic and a full cell, MTK) over the steady chunks
(five chunks of --speed-steps; the first, with compilation, excluded and reported apart).

Lattice constant: our SCR NPT (Langevin particles) of the same crystal at 300 K and 1 bar.
References: ASE's IsotropicMTKNPT on EMT itself, and the same ASE integrator on the trained
GMNN through ApaxCalculator (same model, other barostat: it separates the barostat from the
model). a = (V / 27)^(1/3), V averaged over the second half of each run.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.nose_hoover_chain import IsotropicMTKNPT
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from common import DATA, table, write_result
from train_speed import train_config

from apax_core.calculator import ApaxCalculator
from apax_core.config.md import MDConfig
from apax_core.md import read_trajectory, run_md
from apax_core.model_dir import Model, load_model

T_K, P_BAR, DT_FS, SKIN = 300.0, 1.0, 2.0, 0.5
CELLS = 27
"""Conventional cells in the 108-atom crystal."""
COMPRESSIBILITY = 7e-7
"""1/bar: copper's (bulk modulus ~140 GPa)."""
TAU_P, TAU_T = 500.0, 100.0
"""Barostat and thermostat time constants, fs."""
SPEED_VARIANTS = {
    "nvt_langevin": {"kind": "langevin", "friction": 0.01},
    "nvt_nose_hoover": {"kind": "nvt"},
    "npt_scr_isotropic": {"kind": "npt_scr", "compressibility": COMPRESSIBILITY},
    "npt_scr_full": {"kind": "npt_scr", "cell": "full", "compressibility": COMPRESSIBILITY},
    "npt_mtk": {"kind": "npt_mtk"},
}


def crystal(a: float = 3.61):
    """108-atom fcc Cu, conventional cubic cells repeated 3x3x3."""
    return bulk("Cu", "fcc", a=a, cubic=True).repeat(3)


def md_config(dynamics: dict, steps: int, n_inner: int, sampling_rate: int = 50) -> MDConfig:
    return MDConfig(
        dynamics=dynamics,
        temperature={"kind": "constant", "T": T_K},
        dt=DT_FS,
        duration=steps * DT_FS,
        n_inner=n_inner,
        sampling_rate=sampling_rate,
        skin=SKIN,
        force_uncertainty=False,
    )


def speed(model: Model, steps: int) -> list[dict]:
    """us/atom/step and compile s of each variant: five chunks of ``steps``, the first the
    warm-up."""
    rows = []
    for name, dynamics in SPEED_VARIANTS.items():
        with tempfile.TemporaryDirectory() as tmp:
            config = md_config(
                {**dynamics, "tau_p": TAU_P} if "npt" in name else dynamics, 5 * steps, steps
            )
            result = run_md(model, crystal(), config, Path(tmp), progress_bar=False)
        row = {"dynamics": name, **result.timing}
        rows.append(row)
        print(f"{name}: {row['us_per_atom_step']:.2f} us/atom/step", flush=True)
    nvt = rows[0]["us_per_atom_step"]
    for row in rows:
        row["vs_nvt_langevin"] = row["us_per_atom_step"] / nvt
    return rows


def lattice_constant(volumes: np.ndarray) -> dict:
    """Mean lattice constant (A) of the second half of a volume series (A^3), its standard
    error from 10 blocks, the mean volume and its standard deviation (the same ensemble gives
    the same fluctuation, sqrt(kT V beta_T), whichever barostat samples it)."""
    half = np.asarray(volumes)[len(volumes) // 2 :]
    a = (half / CELLS) ** (1.0 / 3.0)
    blocks = a[: len(a) - len(a) % 10].reshape(10, -1).mean(axis=1)
    return {
        "a_A": float(a.mean()),
        "a_err_A": float(blocks.std(ddof=1) / np.sqrt(10)),
        "V_A3": float(half.mean()),
        "V_std_A3": float(half.std()),
        "n_samples": len(half),
    }


def ase_npt(calc, steps: int, every: int) -> tuple[np.ndarray, float]:
    """(volumes every ``every`` steps, seconds) of ASE's isotropic MTK NPT at T_K, P_BAR."""
    atoms = crystal()
    atoms.calc = calc
    thermalize_momenta(atoms, temperature_K=T_K, rng=np.random.default_rng(1))
    Stationary(atoms)
    dyn = IsotropicMTKNPT(
        atoms,
        timestep=DT_FS * units.fs,
        temperature_K=T_K,
        pressure_au=P_BAR * units.bar,
        tdamp=TAU_T * units.fs,
        pdamp=TAU_P * units.fs,
    )
    volumes = []
    dyn.attach(lambda: volumes.append(atoms.get_volume()), interval=every)
    t0 = time.perf_counter()
    dyn.run(steps)
    return np.array(volumes), time.perf_counter() - t0


def ours_npt(model: Model, steps: int, every: int) -> tuple[np.ndarray, float]:
    """(volumes of the kept frames, seconds) of our SCR NPT (Langevin particles)."""
    dynamics = {
        "kind": "npt_scr",
        "thermostat": {"kind": "langevin", "friction": 1.0 / TAU_T},
        "tau_p": TAU_P,
        "compressibility": COMPRESSIBILITY,
        "pressure": {"kind": "constant", "P": P_BAR},
    }
    config = md_config(dynamics, steps, n_inner=1000, sampling_rate=every)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = run_md(model, crystal(), config, Path(tmp), progress_bar=False)
        seconds = time.perf_counter() - t0
        volumes = np.array([f.info["volume_A3"] for f in read_trajectory(result.trajectory)])
    return volumes, seconds


def train(directory: Path, epochs: int) -> Model:
    """The reference GMNN trained on EMT energies, forces and stresses (batch 2)."""
    loss = [
        {"quantity": "energy", "weight": 25.0, "atoms_exponent": 1.0},
        {"quantity": "forces", "weight": 1.0},
        {"quantity": "stress", "weight": 1e3},
    ]
    job = train_config(
        directory,
        DATA / "cu_bulk_train.extxyz",
        DATA / "cu_bulk_val.extxyz",
        epochs,
        data={"batch_size": 2, "labels": ["energy", "forces", "stress"]},
        loss=loss,
    )
    job.train()
    return load_model(directory)


def lattice(model: Model, steps: int, every: int) -> list[dict]:
    """Lattice constants of EMT (ASE NPT) and of the GMNN (ours and ASE's NPT)."""
    runs = {
        "EMT, ASE IsotropicMTKNPT": lambda: ase_npt(EMT(), steps, every),
        "GMNN, our SCR NPT": lambda: ours_npt(model, steps, every),
        "GMNN, ASE IsotropicMTKNPT": lambda: ase_npt(
            ApaxCalculator(model, skin=SKIN, force_uncertainty=False), steps, every
        ),
    }
    rows = []
    for name, run in runs.items():
        volumes, seconds = run()
        rows.append({"run": name, **lattice_constant(volumes), "wall_s": seconds})
        print(f"{name}: a = {rows[-1]['a_A']:.4f} A ({seconds:.0f} s)", flush=True)
    reference = rows[0]["a_A"]
    for row in rows:
        row["a_over_emt_ase"] = row["a_A"] / reference
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="speed,lattice")
    p.add_argument("--speed-steps", type=int, default=500, help="steps per timed chunk")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--model", type=Path, help="a trained Cu model directory (default: train one)")
    p.add_argument("--ps", type=float, default=20.0, help="NPT run length, ps")
    p.add_argument("--quick", action="store_true", help="a smoke run: tiny everything")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    parts = args.parts.split(",")
    epochs, ps, speed_steps = args.epochs, args.ps, args.speed_steps
    if args.quick:
        epochs, ps, speed_steps = 1, 0.4, 50
    steps = round(ps * 1000 / DT_FS)
    result: dict = {"T_K": T_K, "P_bar": P_BAR, "dt_fs": DT_FS, "tau_p_fs": TAU_P}
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            t0 = time.perf_counter()
            model = train(Path(tmp) / "model", epochs)
            result["train_s"] = time.perf_counter() - t0
        else:
            model = load_model(args.model)
        result["model"] = str(args.model) if args.model else f"trained here, {epochs} epochs"
        if "speed" in parts:
            rows = speed(model, speed_steps)
            print("\nus/atom/step, 108-atom Cu, reference-size GMNN (lower is better)")
            print(table(rows, ["dynamics", "us_per_atom_step", "vs_nvt_langevin", "compile_s"]))
            result["speed"] = rows
        if "lattice" in parts:
            rows = lattice(model, steps, every=10)
            print(f"\n300 K lattice constant of fcc Cu, {ps:g} ps NPT each (second half averaged)")
            columns = ["run", "a_A", "a_err_A", "a_over_emt_ase", "V_std_A3", "n_samples", "wall_s"]
            print(table(rows, columns))
            result.update(lattice=rows, ps=ps)
    print(f"wrote {write_result('npt_quick' if args.quick else 'npt', result)}")


if __name__ == "__main__":
    main()
