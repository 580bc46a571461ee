"""Our engine against the public apax 0.14, each with its own model of the same size, trained
the same way: MD cost (us/atom/step), neighbour slots, training epoch time, test errors.

    python bench/vs_apax.py [--quick] [--apax-python /work/apax014/bin/python] [--workdir DIR]

Runs in our venv; apax runs in a separate venv through bench/apax_side.py (a subprocess), so
our code never imports apax. Expected wall time of the full run on a quiet 2-core machine:
about 15-18 minutes, an extrapolation from per-epoch and per-process costs measured on a
machine loaded 4-5x (GMNN trainings about 2 min ours + 5.5 min apax, 400-frame epochs
1.5 min, EquivMP trainings 1.5 min, 12 MD processes 5-7 min, about 15-20 s of each apax MD
process being start-up and compilation); ``--no-equivmp`` saves about 3.5 min. ``--quick``
(2 epochs on 20 frames, 20/60 MD steps, 10 validation and test frames) took 15 min on the
loaded machine, about 5 min quiet; its numbers only show that everything runs (40 MD steps
cannot separate cost from start-up noise, and 2-epoch models do not keep the crystal). A
40-epoch model of ours kept it through 2500 steps at 600 K and 2 fs (256 atoms: 97 % of the
atoms with 12 neighbours; test F MAE 50 meV/A). Reduced to fit the budget: validation on
the first 32 frames of cu_bulk_val, the 400-frame epoch time from 4-epoch runs (the median
of epochs 2-4), the EquivMP models trained 3 epochs (not 40); ``--epochs``, ``--equivmp-epochs``
and ``--epoch-runs`` change these.

What it does (all data: ../shared/data, EMT labels, 107-atom fcc Cu cells):

- GMNN, the size of apax 0.14's schema defaults (Bessel basis, n_basis 16, r_max 5.0 A,
  n_radial 5, readout [256, 256], 8 contractions), 40 epochs on the first 120 frames of
  cu_bulk_train (validation: the first 32 of cu_bulk_val), batch 8, validation batch 16,
  Adam with the same peak learning rates in both (representation/embedding 0.01, readout
  0.003, scale 0.001, shift 0.003; our defaults), linear decay (ours to 0.01 x peak, apax to
  1e-6: each engine's default). Losses in each engine's default form (ours 25 x per-atom
  energy MSE + force MSE; apax its minimal template: energy weight 1 + forces weight 4,
  atoms_exponent 1); EMA: ours 0.99 (default), apax none (default). Precision: each
  engine's default, and they agree: fp32 descriptor and readout, fp64 scale/shift and
  energy sums, x64 MD. Test errors on cu_bulk_test (energy meV/atom, force components
  meV/A).
- MD: fcc Cu (a = 3.61 A) 4x4x4 and 6x6x6 conventional cells (256, 864 atoms), NVT
  Nose-Hoover chain at 600 K (tau 100 steps in both; chain length: ours 3, apax passes none
  to jax-md, whose default is 5), dt 2 fs, skin 0.5 A (apax dr_threshold 0.5), a frame kept
  every 500 steps, 500 steps per jitted chunk. Each engine runs 500 and 2500 steps in
  separate processes; us/atom/step = (t2500 - t500) / 2000 / N, t the wall time of the
  engine's run_md call (model load, neighbour allocation, compilation, the steps, output;
  the interpreter's start and imports are outside, process walls are kept in the JSON too).
  Every pair runs ``--md-rounds`` times (default 3), sizes and engines interleaved and the
  engine that goes first alternating; a row is each engine's median round, every round is
  listed beside it. On a 2-core cloud machine one process can run 1.5-2x slower than the
  next with nothing else running, so a single round decides nothing.
  apax's step loop calls back to the host (io_callback) at every step; that is part of its
  cost as shipped. Every process compiles from scratch (our persistent compilation cache is
  switched off here; apax's CLI has none). Neighbour slots: ours, K of the allocated list
  (idx (N, K), from the checkpoint of the 2500-step run); apax, jax-md's sparse pair
  capacity (allocated as apax does, at the start structure) over N. fcc check: the
  fraction of atoms with exactly 12 neighbours within 3.0 A in the final frame.
- Training epoch at 400 x 107 atoms: 4 epochs on all 400 training frames (validation: 16
  frames, counted in both engines' epoch times), the median of epochs 2-4 (the first
  compiles; apax's also fills its tf.data cache).
- EquivMP alike: ours (n_layers 1, n_channels 32, l_max 2, r_max 5, 7 Bessel functions,
  readout [32], radial MLP [32]) against apax's ``equiv-mp`` (num_iterations 1, features 32,
  max_degree 2, Bessel n_basis 7, r_max 5, readout nn [32]); both trained 3 epochs on the
  120 frames (a short training, so that the 600 K MD has sane forces; the fcc fraction
  shows whether it stayed on the lattice), MD at 256 atoms as above.

The apax venv (TensorFlow comes with apax; never a dependency of this project):

    python3.11 -m venv /work/apax014
    /work/apax014/bin/pip install apax==0.14.0

It resolved to jax/jaxlib 0.10.2, flax 0.12.8, optax 0.2.8, e3x 1.0.2, tensorflow 2.21.0,
ase 3.29.0 and ran as installed (no pins were needed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ase.build import bulk
from ase.io import read, write
from ase.neighborlist import neighbor_list

os.environ.setdefault("APAX_COMPILATION_CACHE", "off")
"""Every process compiles from scratch, so the 500-step run pays what the 2500-step run pays
(with our persistent cache on, the second process would load what the first compiled)."""

BENCH = Path(__file__).resolve().parent
APAX_SIDE = BENCH / "apax_side.py"
APAX_PYTHON = Path("/work/apax014/bin/python")

LR = {"representation": 0.01, "nn": 0.003, "scale": 0.001, "shift": 0.003}
GMNN_OURS = {
    "kind": "gmnn",
    "basis": "bessel",
    "n_basis": 16,
    "n_radial": 5,
    "r_max": 5.0,
    "hidden": [256, 256],
}
GMNN_APAX = {
    "name": "gmnn",
    "basis": {"name": "bessel", "n_basis": 16, "r_max": 5.0},
    "n_radial": 5,
    "nn": [256, 256],
}
EQUIV_OURS = {
    "kind": "equivmp",
    "n_layers": 1,
    "n_channels": 32,
    "l_max": 2,
    "r_max": 5.0,
    "n_basis": 7,
    "hidden": [32],
    "radial_hidden": [32],
}
EQUIV_APAX = {
    "name": "equiv-mp",
    "num_iterations": 1,
    "features": 32,
    "max_degree": 2,
    "basis": {"name": "bessel", "n_basis": 7, "r_max": 5.0},
    "nn": [32],
}
T_K, DT_FS, SKIN = 600.0, 2.0, 0.5
REPEATS = {256: 4, 864: 6}
FCC_CUTOFF = 3.0
VAL, VAL_400 = 32, 16
"""Validation frames (the first of cu_bulk_val) of the trainings and of the 400-frame epochs:
validation runs inside every epoch of both engines and is counted in their epoch times."""


# ------------------------------------------------------------------------------------ training


def train_ours(directory: Path, model: dict, epochs: int, train: Path, val: Path) -> dict:
    from train_speed import epoch_times

    from apax_core.config import TrainConfig, TrainRun
    from apax_core.train.trainer import train_run

    spec = TrainConfig.model_validate(
        {
            "n_epochs": epochs,
            "data": {"batch_size": 8, "val_batch_size": 16},
            "model": model,
            "optimizer": {"learning_rates": LR},
        }
    )
    run = TrainRun(directory=directory, train_file=train, val_file=val, progress_bar=False)
    start = time.perf_counter()
    train_run(spec, run)
    return {"wall_s": time.perf_counter() - start, "epoch_times_s": epoch_times(directory)}


def test_ours(directory: Path, test: Path) -> dict:
    from apax_core.data import from_atoms, read_frames
    from apax_core.evaluate import evaluate
    from apax_core.model_dir import load_model

    m = evaluate(load_model(directory), [from_atoms(a) for a in read_frames(test)])
    return {"test_energy_mae_meV_atom": m["energy_mae"], "test_forces_mae_meV_A": m["forces_mae"]}


def apax_config(directory: Path, model: dict, epochs: int, train: Path, val: Path) -> dict:
    return {
        "n_epochs": epochs,
        "seed": 1,
        "data": {
            "directory": str(directory.parent),
            "experiment": directory.name,
            "train_data_path": str(train),
            "val_data_path": str(val),
            "batch_size": 8,
            "valid_batch_size": 16,
        },
        "model": model,
        "loss": [{"name": "energy"}, {"name": "forces", "weight": 4.0}],
        "optimizer": {
            "emb_lr": LR["representation"],
            "nn_lr": LR["nn"],
            "scale_lr": LR["scale"],
            "shift_lr": LR["shift"],
        },
        "progress_bar": {"disable_epoch_pbar": True},
    }


def apax(mode: str, spec: dict, work: Path, python: Path, tag: str) -> dict:
    """Run apax_side.py ``mode`` with ``spec``; its JSON, plus the process wall time."""
    spec_file, out_file = work / f"{tag}.spec.json", work / f"{tag}.out.json"
    spec_file.write_text(json.dumps(spec))
    return child([str(python), str(APAX_SIDE), mode, str(spec_file), str(out_file)], out_file)


def child(cmd: list[str], out_file: Path) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode})")
    return {**json.loads(out_file.read_text()), "process_s": wall}


def steady(times: list[float]) -> float:
    """Median epoch time without the first (compiling) epoch."""
    return statistics.median(times[1:]) if len(times) > 1 else times[0]


# ------------------------------------------------------------------------------------------ MD


def md_ours_child(spec_file: str, out_file: str) -> None:
    """Child process: one MD run of our engine (``_md`` mode of this script)."""
    logging.basicConfig(level=logging.WARNING)
    spec = json.loads(Path(spec_file).read_text())
    from apax_core.config.md import MDConfig
    from apax_core.md import checkpoint, read_trajectory, run_md
    from apax_core.model_dir import load_model

    sim_dir = Path(spec["sim_dir"])
    steps, every = spec["steps"], spec["sampling_rate"]
    config = MDConfig(
        dynamics={"kind": "nvt"},
        temperature={"kind": "constant", "T": T_K},
        dt=DT_FS,
        duration=steps * DT_FS,
        n_inner=spec["n_inner"],
        sampling_rate=every,
        skin=SKIN,
        force_uncertainty=False,
    )
    start = time.perf_counter()
    model = load_model(Path(spec["model_dir"]))
    atoms = read(spec["structure"])
    result = run_md(model, atoms, config, sim_dir, restart=False, progress_bar=False)
    seconds = time.perf_counter() - start
    frames = read_trajectory(result.trajectory)
    write(sim_dir / "final.extxyz", frames[-1])
    idx = checkpoint.load(sim_dir).nbrs["idx"]
    out = {
        "run_md_s": seconds,
        "n_atoms": len(atoms),
        "n_frames": len(frames),
        "steps_done": result.status["step"],
        "neighbour_slots_per_atom": int(idx.shape[-1]),
        "in_run_us_per_atom_step": result.timing["us_per_atom_step"],
    }
    Path(out_file).write_text(json.dumps(out))


def md_run(
    engine: str, model_dir: Path, structure: Path, steps: int, chunk: int, work: Path, python: Path
) -> dict:
    tag = f"md_{engine}_{model_dir.name}_{structure.stem}_{steps}"
    sim_dir = work / tag
    if engine == "ours":
        spec = {
            "model_dir": str(model_dir),
            "structure": str(structure),
            "steps": steps,
            "n_inner": chunk,
            "sampling_rate": chunk,
            "sim_dir": str(sim_dir),
        }
        spec_file, out_file = work / f"{tag}.spec.json", work / f"{tag}.out.json"
        spec_file.write_text(json.dumps(spec))
        cmd = [sys.executable, str(Path(__file__).resolve()), "_md", str(spec_file), str(out_file)]
        out = child(cmd, out_file)
    else:
        md = {
            "ensemble": {
                "name": "nvt",
                "dt": DT_FS,
                "temperature_schedule": {"name": "constant", "T0": T_K},
            },
            "duration": steps * DT_FS,
            "n_inner": chunk,
            "sampling_rate": chunk,
            "dr_threshold": SKIN,
        }
        spec = {
            "model_dir": str(model_dir),
            "structure": str(structure),
            "md": md,
            "sim_dir": str(sim_dir),
        }
        out = apax("md", spec, work, python, tag)
    out["fcc_fraction"] = fcc_fraction(read(sim_dir / "final.extxyz"))
    return out


def fcc_fraction(atoms) -> float:
    """Fraction of atoms with exactly 12 neighbours within :data:`FCC_CUTOFF`."""
    counts = np.bincount(neighbor_list("i", atoms, FCC_CUTOFF), minlength=len(atoms))
    return float(np.mean(counts == 12))


def md_pair(engine, model_dir, structure, steps, chunk, work, python) -> dict:
    """us/atom/step from a short and a long run in separate processes."""
    short = md_run(engine, model_dir, structure, steps[0], chunk, work, python)
    long = md_run(engine, model_dir, structure, steps[1], chunk, work, python)
    n, extra = long["n_atoms"], steps[1] - steps[0]
    per = 1e6 / extra / n
    row = {
        "us_per_atom_step": (long["run_md_s"] - short["run_md_s"]) * per,
        "us_per_atom_step_process": (long["process_s"] - short["process_s"]) * per,
        "neighbour_slots_per_atom": long["neighbour_slots_per_atom"],
        "fcc_fraction": long["fcc_fraction"],
        "short": short,
        "long": long,
    }
    print(
        f"  {engine:4s} {model_dir.name} {n} atoms: {row['us_per_atom_step']:.3g} us/atom/step, "
        f"slots {row['neighbour_slots_per_atom']:.4g}, fcc {row['fcc_fraction']:.3f}",
        flush=True,
    )
    return row


def md_rounds(models, paths, steps, chunk, work, python, rounds, kinds) -> dict:
    """Every MD pair ``rounds`` times, sizes and engines interleaved, the engine that goes
    first alternating, so slow spells of a shared machine fall on both engines; each engine's
    row is its median round."""
    cases = [
        (k, n)
        for k, sizes in (("gmnn", (256, 864)), ("equivmp", (256,)))
        if k in kinds
        for n in sizes
    ]
    runs: dict[str, dict[str, list]] = {f"{k}_{n}": {"ours": [], "apax": []} for k, n in cases}
    for r in range(rounds):
        round_dir = work / f"round{r}"
        round_dir.mkdir(exist_ok=True)
        for kind, n in cases:
            print(f"MD {kind} {n} atoms, round {r + 1}/{rounds}", flush=True)
            engines = list(zip(("ours", "apax"), models[kind], strict=True))
            for engine, model_dir in engines if r % 2 == 0 else engines[::-1]:
                row = md_pair(engine, model_dir, paths[f"cu{n}"], steps, chunk, round_dir, python)
                runs[f"{kind}_{n}"][engine].append(row)
    return {case: {e: median_round(rows) for e, rows in by.items()} for case, by in runs.items()}


def median_round(rows: list[dict]) -> dict:
    """The median us/atom/step of the rounds, every round's value, and the lowest fcc
    fraction of any round's final frame."""
    per = [r["us_per_atom_step"] for r in rows]
    return {
        "us_per_atom_step": statistics.median(per),
        "us_per_atom_step_rounds": per,
        "neighbour_slots_per_atom": max(r["neighbour_slots_per_atom"] for r in rows),
        "fcc_fraction": min(r["fcc_fraction"] for r in rows),
        "rounds": rows,
    }


# ---------------------------------------------------------------------------------------- main


def prepare(work: Path, data: Path, quick: bool) -> dict[str, Path]:
    """The data subsets and the MD start structures as files under ``work``."""
    train, val, val400, test = (20, 10, 10, 10) if quick else (120, VAL, VAL_400, None)
    files = {
        "train": read(data / "cu_bulk_train.extxyz", f":{train}"),
        "val": read(data / "cu_bulk_val.extxyz", f":{val}"),
        "train400": read(data / "cu_bulk_train.extxyz", ":40" if quick else ":"),
        "val400": read(data / "cu_bulk_val.extxyz", f":{val400}"),
        "test": read(data / "cu_bulk_test.extxyz", f":{test}" if test else ":"),
    }
    paths = {}
    for name, frames in files.items():
        paths[name] = work / f"{name}.extxyz"
        write(paths[name], frames)
    for n, rep in REPEATS.items():
        paths[f"cu{n}"] = work / f"cu{n}.extxyz"
        write(paths[f"cu{n}"], bulk("Cu", "fcc", a=3.61, cubic=True).repeat(rep))
    return paths


def arguments() -> argparse.Namespace:
    from common import DATA

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 2 epochs, 20/60 MD steps")
    p.add_argument("--apax-python", type=Path, default=APAX_PYTHON)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--workdir", type=Path, help="keep models and runs here (default: a temp dir)")
    p.add_argument("--epochs", type=int, default=40, help="GMNN training epochs")
    p.add_argument("--equivmp-epochs", type=int, default=3)
    p.add_argument("--no-equivmp", action="store_true", help="GMNN only (saves about 3.5 min)")
    p.add_argument(
        "--epoch-runs", type=int, default=4, help="epochs of the 400-frame runs (first excluded)"
    )
    p.add_argument(
        "--md-rounds", type=int, default=3, help="MD pairs per engine and size (median kept)"
    )
    p.add_argument("--out", help="result name under bench/results (default vs_apax, vs_apax_quick)")
    return p.parse_args()


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "_md":
        md_ours_child(sys.argv[2], sys.argv[3])
        return
    args = arguments()
    logging.basicConfig(level=logging.WARNING)
    if not args.apax_python.exists():
        raise SystemExit(f"{args.apax_python} not found (see the docstring for the apax venv)")
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        run_all(args, args.workdir.resolve())
    else:
        with tempfile.TemporaryDirectory() as tmp:
            run_all(args, Path(tmp))


def run_all(args, work: Path) -> None:
    from common import table, write_result

    start = time.perf_counter()
    phases: dict[str, float] = {}

    def phase(name: str, t0: float) -> float:
        phases[name] = time.perf_counter() - t0
        print(
            f"  [{name}: {phases[name]:.0f} s, total {time.perf_counter() - start:.0f} s]",
            flush=True,
        )
        return time.perf_counter()

    q = args.quick
    epochs, equiv_epochs, epoch_runs = (
        (2, 2, 2)
        if q
        else (
            args.epochs,
            args.equivmp_epochs,
            args.epoch_runs,
        )
    )
    steps, chunk = ((20, 60), 20) if q else ((500, 2500), 500)
    paths = prepare(work, args.data, q)
    py = args.apax_python
    res: dict = {
        "quick": q,
        "settings": {
            "epochs": epochs,
            "equivmp_epochs": equiv_epochs,
            "md_steps": steps,
            "chunk": chunk,
            "dt_fs": DT_FS,
            "T_K": T_K,
            "skin_A": SKIN,
            "gmnn_ours": GMNN_OURS,
            "gmnn_apax": GMNN_APAX,
            "equivmp_ours": EQUIV_OURS,
            "equivmp_apax": EQUIV_APAX,
            "learning_rates": LR,
        },
    }

    models = {}
    t0 = time.perf_counter()
    kinds = ("gmnn",) if args.no_equivmp else ("gmnn", "equivmp")
    for kind, ours_model, apax_model, n_ep in (
        ("gmnn", GMNN_OURS, GMNN_APAX, epochs),
        ("equivmp", EQUIV_OURS, EQUIV_APAX, equiv_epochs),
    )[: len(kinds)]:
        print(f"training {kind}, {n_ep} epochs", flush=True)
        d_ours, d_apax = work / f"ours_{kind}", work / "apax_models" / f"apax_{kind}"
        ours = train_ours(d_ours, ours_model, n_ep, paths["train"], paths["val"])
        ours.update(test_ours(d_ours, paths["test"]))
        cfg = apax_config(d_apax, apax_model, n_ep, paths["train"], paths["val"])
        theirs = apax("train", {"config": cfg, "test": str(paths["test"])}, work, py, kind)
        res[f"train_{kind}"] = {"ours": ours, "apax": theirs}
        models[kind] = (d_ours, d_apax)
        for name, r in (("ours", ours), ("apax", theirs)):
            print(
                f"  {name}: {r['wall_s']:.0f} s, test E {r['test_energy_mae_meV_atom']:.3g} "
                f"meV/atom, F {r['test_forces_mae_meV_A']:.3g} meV/A",
                flush=True,
            )
        t0 = phase(f"train_{kind}", t0)

    print("epoch time at 400 frames", flush=True)
    d400 = work / "ours_400"
    ep_ours = train_ours(d400, GMNN_OURS, epoch_runs, paths["train400"], paths["val400"])
    cfg = apax_config(
        work / "apax_models" / "apax_400", GMNN_APAX, epoch_runs, paths["train400"], paths["val400"]
    )
    ep_apax = apax("train", {"config": cfg}, work, py, "epochs400")
    res["epoch_400"] = {
        "ours": ep_ours,
        "apax": ep_apax,
        "n_frames": len(read(paths["train400"], ":")),
    }
    t0 = phase("epoch_400", t0)

    rounds = 2 if q else args.md_rounds
    res["settings"]["md_rounds"] = rounds
    res["md"] = md_rounds(models, paths, steps, chunk, work, py, rounds, kinds)
    t0 = phase("md", t0)

    rows = rows_of(res)
    res["rows"] = rows
    res["wall_s"] = time.perf_counter() - start
    res["phase_s"] = phases
    print(table(rows, ["row", "ours", "apax 0.14", "ratio"]))
    name = args.out or ("vs_apax_quick" if q else "vs_apax")
    print(f"wall {res['wall_s']:.0f} s; wrote {write_result(name, res)}")


def rows_of(res: dict) -> list[dict]:
    rows = []

    def add(name, ours, theirs):
        ratio = ours / theirs if isinstance(ours, float) and theirs else None
        rows.append({"row": name, "ours": ours, "apax 0.14": theirs, "ratio": ratio})

    for kind in ("gmnn", "equivmp")[: len([k for k in res if k.startswith("train_")])]:
        t = res[f"train_{kind}"]
        label = "GMNN" if kind == "gmnn" else "EquivMP"
        for q, unit in (("energy", "meV/atom"), ("forces", "meV/A")):
            key = f"test_{q}_mae_meV_{'atom' if q == 'energy' else 'A'}"
            add(f"{label} test {q[0].upper()} MAE ({unit})", t["ours"][key], t["apax"][key])
    e = res["epoch_400"]
    add(
        f"training epoch, {e['n_frames']} x 107 atoms (s)",
        steady(e["ours"]["epoch_times_s"]),
        steady(e["apax"]["epoch_times_s"]),
    )
    for key, r in res["md"].items():
        kind, n = key.split("_")
        label = f"{'GMNN' if kind == 'gmnn' else 'EquivMP'} MD {n} atoms"
        add(f"{label} (us/atom/step)", r["ours"]["us_per_atom_step"], r["apax"]["us_per_atom_step"])
        if "us_per_atom_step_rounds" in r["ours"]:
            add(f"{label}, every round", *(rounds_text(r[e]) for e in ("ours", "apax")))
        add(
            f"{label} neighbour slots/atom",
            float(r["ours"]["neighbour_slots_per_atom"]),
            float(r["apax"]["neighbour_slots_per_atom"]),
        )
        add(f"{label} fcc fraction at end", r["ours"]["fcc_fraction"], r["apax"]["fcc_fraction"])
    return rows


def rounds_text(row: dict) -> str:
    return ", ".join(f"{v:.3g}" for v in row["us_per_atom_step_rounds"])


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH))
    main()
