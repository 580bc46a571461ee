"""The one prediction path and the one batching helper.

``data/prediction_golden.npz`` holds fp64 outputs of the four prediction paths that existed
before the predictor was unified (commit 4b7c100: predict.predict, the ASE calculator with UDD
and calibration, select features and uncertainty baselines), for a single model, a shallow
(M=4, chunked jacobian) and a full (M=3) ensemble, with the parameters they were made with.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from conftest import emt_frames, make_model
from flax import serialization

from apax_core.batching import map_batches, map_structures, unpad
from apax_core.calculator import ApaxCalculator
from apax_core.data import from_atoms
from apax_core.frame_predictions import predict
from apax_core.predictor import compiled
from apax_core.select import compute_features, uncertainties
from apax_core.transforms import UDD, Calibration

GOLDEN = np.load(Path(__file__).parent / "data" / "prediction_golden.npz")
KINDS = {
    "single": None,
    "shallow": {"kind": "shallow", "n_members": 4, "chunk_size": 3},
    "full": {"kind": "full", "n_members": 3},
}


def golden(prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: GOLDEN[k] for k in GOLDEN.files if k.startswith(prefix)}


def golden_model(kind: str):
    model = make_model(elements=(29,), ensemble=KINDS[kind], seed=1)
    params = serialization.from_bytes(model.params, GOLDEN[f"{kind}/params"].tobytes())
    return dataclasses.replace(model, params=params)


@pytest.fixture(scope="module")
def frames():
    frames = emt_frames(2, seed=5, size=(1, 1, 1)) + emt_frames(1, seed=6, size=(2, 1, 1))
    molecule = bulk("Cu", "fcc", a=3.61, cubic=True)
    molecule.pbc, molecule.cell = False, [0, 0, 0]
    molecule.positions += np.random.default_rng(3).normal(scale=0.1, size=(4, 3))
    return frames, molecule


def assert_matches(got: dict, expected: dict[str, np.ndarray], where: str):
    """Every key the old path produced is produced, equal to fp64 round-off. (The old predict
    also gave single models a one-member ``energy_ensemble``; now no single-model path does.)"""
    for key, value in expected.items():
        if where.startswith("single") and key == "energy_ensemble":
            assert key not in got
            continue
        assert key in got, f"{where}: missing {key}"
        np.testing.assert_allclose(got[key], value, rtol=1e-9, atol=1e-11, err_msg=f"{where}/{key}")


@pytest.mark.parametrize("kind", KINDS)
def test_predict_equals_pre_refactor_paths(kind, frames):
    model, structures = golden_model(kind), [from_atoms(a) for a in frames[0]]
    modes = {0: "forces", 1: "uncertainty"} if KINDS[kind] else {0: "forces"}
    for flag, mode in modes.items():
        preds = predict(model, structures, mode=mode, batch_size=2)
        for k, pred in enumerate(preds):
            assert_matches(pred, golden(f"{kind}/predict_unc{flag}/{k}/"), f"{kind}/{mode}/{k}")
    for name in ("last_layer_gradient", "descriptor_mean"):
        got = compute_features(model, structures, name, batch_size=2)
        np.testing.assert_allclose(got, GOLDEN[f"{kind}/features/{name}"], rtol=1e-9, atol=1e-12)
    if KINDS[kind] is None:
        assert "energy_uncertainty" not in preds[0]  # single models report no spread
        return
    for q in ("energy", "forces"):
        got = uncertainties(model, structures, q, batch_size=2)
        np.testing.assert_allclose(got, GOLDEN[f"{kind}/uncertainty/{q}"], rtol=1e-9)


@pytest.mark.parametrize("kind", ["shallow", "full"])
def test_calculator_with_udd_and_calibration_equals_pre_refactor(kind, frames):
    """UDD (energy hook) and a stored calibration (results hook), periodic and free space."""
    base = golden_model(kind)
    calibrated = dataclasses.replace(base, calibration=Calibration(energy=0.5, forces=2.0))
    for label, model, transforms in (("udd", base, (UDD(0.3, 0.05),)), ("cal", calibrated, ())):
        calc = ApaxCalculator(model, transforms=transforms)
        for k, atoms in enumerate([*frames[0], frames[1]]):
            atoms = atoms.copy()
            atoms.calc = calc
            atoms.get_potential_energy()
            assert_matches(calc.results, golden(f"{kind}/calc_{label}/{k}/"), f"{kind}/{label}/{k}")


@pytest.mark.parametrize("kind", ["shallow", "full"])
def test_energy_mode_is_the_forward_part_of_every_mode(kind, frames):
    """``energy`` gives the same energies and spreads as the derivative modes, without forces."""
    model = golden_model(kind)
    structures = [from_atoms(a) for a in frames[0]]
    cheap = predict(model, structures, mode="energy")
    for mode in ("forces", "uncertainty"):
        for c, full in zip(cheap, predict(model, structures, mode=mode), strict=True):
            assert set(c) == {"energy", "energy_ensemble", "energy_uncertainty"}
            for key in c:
                np.testing.assert_allclose(c[key], full[key], rtol=1e-10)


def test_batching_unequal_sizes_equals_one_by_one(cuag_model):
    """Structures of 3, 7, 15 and 31 atoms share padded batches (and a short last batch), yet
    each result equals the structure evaluated alone, in input order, padding removed."""
    frames = [
        emt_frames(1, seed=s, size=size)[0]
        for s, size in ((1, (1, 1, 1)), (2, (2, 1, 1)), (3, (2, 2, 1)), (4, (2, 2, 2)))
    ]
    structures = [from_atoms(a) for a in frames]
    fn = compiled(cuag_model, "forces")
    together = map_structures(
        fn, cuag_model.params, structures, cuag_model.config.r_max, batch_size=3
    )
    assert [len(p["forces"]) for p in together] == [3, 7, 15, 31]
    for s, p in zip(structures, together, strict=True):
        alone = map_structures(fn, cuag_model.params, [s], cuag_model.config.r_max, batch_size=1)
        for key in p:
            np.testing.assert_allclose(p[key], alone[0][key], rtol=1e-10, atol=1e-12)
    n_batches = [
        len(n) for _, n in map_batches(fn, cuag_model.params, structures, 4.0, batch_size=3)
    ]
    assert n_batches == [3, 1]  # the short last batch drops its padding structures
    assert unpad({"forces": np.zeros((1, 9, 3)), "energy": np.zeros(1)}, np.array([7]))[0][
        "forces"
    ].shape == (7, 3)
