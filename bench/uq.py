"""Ensembles: accuracy, calibration and cost of a shallow (M=8, CRPS) and a full (M=4) ensemble.

    python bench/uq.py [--epochs 40] [--train F --val F --test F [F ...]]

Each kind is trained with the reference model size, calibrated on the validation set, and
evaluated on every test file (uncalibrated and calibrated NLL, miscalibration area, Spearman rho
of per-structure force uncertainty vs force RMSE; on the union of the test files too). Also
the cost of one energy+force evaluation at 107 and 864 atoms: single model, shallow M=8 in
mean-force mode and with force uncertainty, full M=4.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import tempfile
import time
from pathlib import Path

import jax
from common import DATA, table, write_result
from train_speed import epoch_times, train_config

from apax_core.config import PadToMax
from apax_core.data import Dataset, from_atoms, read_frames
from apax_core.evaluate import error_metrics
from apax_core.model_dir import Model, load_model
from apax_core.precision import x64
from apax_core.predict import predict, predictor
from apax_core.train.trainer import train
from apax_core.uq import fit_calibration, uncertainty_metrics

MODEL = {"n_basis": 7, "n_radial": 5, "r_max": 5.0, "hidden": [128, 128]}
KINDS = {
    "shallow": {
        "model": {**MODEL, "ensemble": {"kind": "shallow", "n_members": 8}},
        "loss": [{"quantity": "energy", "kind": "crps", "atoms_exponent": 1.0, "weight": 20.0},
                 {"quantity": "forces", "kind": "crps"}],
    },
    "full": {"model": {**MODEL, "ensemble": {"kind": "full", "n_members": 4}}},
}  # fmt: skip


def scores(model: Model, structures) -> dict:
    preds = predict(model, structures, uncertainty=True)
    err = error_metrics(preds, structures)
    unc = uncertainty_metrics(preds, structures)
    return {"energy_mae_meV_atom": err["energy_mae"], "forces_mae_meV_A": err["forces_mae"],
            "nll_forces": unc["nll_forces"], "miscal_area_forces": unc["miscal_area_forces"],
            "spearman_forces": unc["spearman_forces"]}  # fmt: skip


def cost(model: Model, structures, uncertainty: bool, repeats: int = 10) -> float:
    fn = predictor(model, stress=False, uncertainty=uncertainty)
    with x64():
        batch = jax.device_put(next(Dataset(structures[:1], model.config.r_max).batches(
            1, PadToMax(), shuffle=False, seed=0)))  # fmt: skip
        jax.block_until_ready(fn(model.params, batch))
        start = time.perf_counter()
        for _ in range(repeats):
            jax.block_until_ready(fn(model.params, batch))
    return (time.perf_counter() - start) / repeats


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
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    val = [from_atoms(a) for a in read_frames(args.val)]
    tests = {f.stem: [from_atoms(a) for a in read_frames(f)] for f in args.test}
    tests["union"] = [s for ss in list(tests.values()) for s in ss]
    out, rows, models = {}, [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, overrides in KINDS.items():
            config = train_config(Path(tmp) / kind, args.train, args.val, args.epochs,
                                  progress_bar=False, **overrides)  # fmt: skip
            train(config)
            times = epoch_times(config.directory)
            raw = load_model(config.directory)
            cal = fit_calibration(predict(raw, val, uncertainty=True), val)
            calibrated = dataclasses.replace(raw, calibration=cal)
            out[kind] = {"epoch_s": statistics.median(times[1:] or times),
                         "calibration": dataclasses.asdict(cal)}  # fmt: skip
            for name, structures in tests.items():
                before, after = scores(raw, structures), scores(calibrated, structures)
                entry = {**after, "nll_forces_uncalibrated": before["nll_forces"],
                         "nll_forces_calibrated": after.pop("nll_forces")}  # fmt: skip
                entry.pop("nll_forces", None)
                out[kind][name] = entry
                rows.append({"kind": kind, "test": name, **entry})
            models[kind] = raw
        cells = tests[args.test[0].stem]
        big = [from_atoms(read_frames(args.test[0])[0].repeat((2, 2, 2)))]
        shallow = models["shallow"]
        single = Model(shallow.config.model_copy(update={"ensemble": None}), shallow.stats,
                       _single_params(shallow.params))  # fmt: skip
        out["cost_s"] = {}
        variants = (("single", single, False), ("shallow_mean", shallow, False),
                    ("shallow_unc", shallow, True), ("full", models["full"], True))  # fmt: skip
        for label, model, unc in variants:
            out["cost_s"][label] = {str(s[0].n_atoms): cost(model, s, unc) for s in (cells, big)}
    cols = ["kind", "test", "energy_mae_meV_atom", "forces_mae_meV_A", "nll_forces_uncalibrated",
            "nll_forces_calibrated", "miscal_area_forces", "spearman_forces"]  # fmt: skip
    print(table(rows, cols))
    print(table([{"model": k, **v} for k, v in out["cost_s"].items()], ["model", *next(iter(
        out["cost_s"].values()))]))  # fmt: skip
    print(f"epoch_s: shallow {out['shallow']['epoch_s']:.2f}, full {out['full']['epoch_s']:.2f}")
    print(f"wrote {write_result('uq', out)}")


def _single_params(params):
    """The shallow model's parameters with one output: the same network, one member."""
    last = max(k for k in params["readout"] if k.startswith("dense_"))
    layer = params["readout"][last]
    readout = {**params["readout"], last: {"kernel": layer["kernel"][:, :1],
                                           "bias": layer["bias"][:1]}}  # fmt: skip
    return {**params, "readout": readout}


if __name__ == "__main__":
    main()
