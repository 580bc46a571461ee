"""Ensembles: accuracy, calibration and cost of a shallow (M=8, CRPS) and a full (M=4) ensemble.

    python bench/uq.py [--epochs 40] [--train F --val F --test F [F ...]]

Each kind is trained with the reference model size, calibrated on the validation set, and
evaluated on every test file (uncalibrated and calibrated NLL, miscalibration area, Spearman rho
of per-structure force uncertainty vs force RMSE; on the union of the test files too). Also
the cost of one energy+force evaluation at 107 atoms (a test cell) and 864 atoms (rattled fcc
Cu 6x6x6): single model, shallow M=8 in mean-force mode and with force uncertainty, full M=4
(median of 30 calls; ``--cost-only`` measures just these, on untrained models).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import jax
from ase import Atoms
from ase.build import bulk
from common import DATA, RESULTS, table, write_result
from train_speed import epoch_times, train_config

from apax_core.config import PadToMax
from apax_core.data import Dataset, from_atoms, read_frames
from apax_core.evaluate import error_metrics
from apax_core.frame_predictions import predict
from apax_core.model import build_model, init_params
from apax_core.model_dir import Model, load_model
from apax_core.precision import x64
from apax_core.predictor import compiled
from apax_core.train.data import data_statistics, model_elements
from apax_core.uq import fit_calibration, uncertainty_metrics

MODEL = {"n_basis": 7, "n_radial": 5, "r_max": 5.0, "hidden": [128, 128]}
KINDS = {
    "shallow": {
        "model": {**MODEL, "ensemble": {"kind": "shallow", "n_members": 8}},
        "loss": [
            {"quantity": "energy", "kind": "crps", "atoms_exponent": 1.0, "weight": 1.0},
            {"quantity": "forces", "kind": "crps"},
        ],
    },
    "full": {"model": {**MODEL, "ensemble": {"kind": "full", "n_members": 4}}},
}


def scores(model: Model, structures) -> dict:
    preds = predict(model, structures, mode="uncertainty")
    err = error_metrics(preds, structures)
    unc = uncertainty_metrics(preds, structures)
    return {
        "energy_mae_meV_atom": err["energy_mae"],
        "forces_mae_meV_A": err["forces_mae"],
        "nll_forces": unc["nll_forces"],
        "miscal_area_forces": unc["miscal_area_forces"],
        "spearman_forces": unc["spearman_forces"],
    }


def cost(model: Model, structures, uncertainty: bool, repeats: int = 30) -> float:
    """Median seconds of one jitted energy+force call on one structure (robust to load)."""
    fn = compiled(model, "uncertainty" if uncertainty else "forces", stress=False)
    with x64():
        batch = jax.device_put(
            next(
                Dataset(structures[:1], model.config.r_max).batches(
                    1, PadToMax(), shuffle=False, seed=0
                )
            )
        )
        jax.block_until_ready(fn(model.variables, batch))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(fn(model.variables, batch))
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def costs(shallow: Model, full: Model, cell) -> dict:
    """Cost of single, shallow mean-force, shallow force-uncertainty and full ensemble calls at
    107 atoms (``cell``) and 864 atoms; the single model is the shallow one cut to one output."""
    big = from_atoms(rattled_fcc_cu((6, 6, 6)))
    single = Model(
        shallow.config.model_copy(update={"ensemble": None}),
        shallow.stats,
        _single_params(shallow.params),
    )
    variants = (
        ("single", single, False),
        ("shallow_mean", shallow, False),
        ("shallow_unc", shallow, True),
        ("full", full, True),
    )
    return {
        label: {str(s.n_atoms): cost(model, [s], unc) for s in (cell, big)}
        for label, model, unc in variants
    }


def untrained(kind: str, train_file: Path) -> Model:
    """A freshly initialised model of ``kind``: cost does not depend on the weights."""
    spec = train_config(Path("unused"), train_file, train_file, 1, **KINDS[kind]).spec
    structures = [from_atoms(a) for a in read_frames(train_file)]
    stats = data_statistics(structures, model_elements(spec, structures, None))
    model = build_model(spec.model, stats)
    with x64():
        return Model(spec.model, stats, init_params(model, jax.random.PRNGKey(0)))


def print_costs(cost_s: dict) -> None:
    rows = [
        {
            "model": k,
            **{f"{n} atoms": t for n, t in v.items()},
            **{f"x single ({n})": t / cost_s["single"][n] for n, t in v.items()},
        }
        for k, v in cost_s.items()
    ]
    print(table(rows, list(rows[0])))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--train", type=Path, default=DATA / "cu_bulk_train.extxyz")
    p.add_argument("--val", type=Path, default=DATA / "cu_bulk_val.extxyz")
    p.add_argument(
        "--test",
        type=Path,
        nargs="+",
        default=[DATA / "cu_bulk_test.extxyz", DATA / "cu_bulk_extra_test.extxyz"],
    )
    p.add_argument(
        "--cost-only",
        action="store_true",
        help="measure only the evaluation costs (untrained models) and update them "
        "in bench/results/uq.json",
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cell = from_atoms(read_frames(args.test[0])[0])
    if args.cost_only:
        cost_s = costs(untrained("shallow", args.train), untrained("full", args.train), cell)
        print_costs(cost_s)
        previous = RESULTS / "uq.json"
        out = json.loads(previous.read_text()) if previous.is_file() else {}
        out.pop("machine", None)
        print(f"wrote {write_result('uq', {**out, 'cost_s': cost_s})}")
        return
    val = [from_atoms(a) for a in read_frames(args.val)]
    tests = {f.stem: [from_atoms(a) for a in read_frames(f)] for f in args.test}
    tests["union"] = [s for ss in list(tests.values()) for s in ss]
    out, rows, models = {}, [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, overrides in KINDS.items():
            job = train_config(Path(tmp) / kind, args.train, args.val, args.epochs, **overrides)
            job.train()
            times = epoch_times(job.directory)
            raw = load_model(job.directory)
            cal = fit_calibration(predict(raw, val, mode="uncertainty"), val)
            calibrated = dataclasses.replace(raw, calibration=cal)
            out[kind] = {
                "epoch_s": statistics.median(times[1:] or times),
                "calibration": dataclasses.asdict(cal),
            }
            for name, structures in tests.items():
                before, after = scores(raw, structures), scores(calibrated, structures)
                entry = {
                    **after,
                    "nll_forces_uncalibrated": before["nll_forces"],
                    "nll_forces_calibrated": after.pop("nll_forces"),
                }
                entry.pop("nll_forces", None)
                out[kind][name] = entry
                rows.append({"kind": kind, "test": name, **entry})
            models[kind] = raw
        out["cost_s"] = costs(models["shallow"], models["full"], cell)
    cols = [
        "kind",
        "test",
        "energy_mae_meV_atom",
        "forces_mae_meV_A",
        "nll_forces_uncalibrated",
        "nll_forces_calibrated",
        "miscal_area_forces",
        "spearman_forces",
    ]
    print(table(rows, cols))
    print_costs(out["cost_s"])
    print(f"epoch_s: shallow {out['shallow']['epoch_s']:.2f}, full {out['full']['epoch_s']:.2f}")
    print(f"wrote {write_result('uq', out)}")


def rattled_fcc_cu(repeat) -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    atoms.rattle(0.05, seed=0)
    return atoms


def _single_params(params):
    """The shallow model's parameters with one output: the same network, one member."""
    last = max(k for k in params["readout"] if k.startswith("dense_"))
    layer = params["readout"][last]
    readout = {
        **params["readout"],
        last: {"kernel": layer["kernel"][:, :1], "bias": layer["bias"][:1]},
    }
    return {**params, "readout": readout}


if __name__ == "__main__":
    main()
