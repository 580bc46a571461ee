"""Calibration families: each is NLL-optimal for the data it describes and wins on held-out NLL
there; they share one pytree (one compiled program); stored calibrations round-trip."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from conftest import TINY, make_model, save_model_dir, tiny_config

from apax_core.batching import map_structures
from apax_core.calibration_fit import force_components, power_law
from apax_core.cli import main
from apax_core.data import Structure, from_atoms, write_frames
from apax_core.errors import InputError
from apax_core.frame_predictions import predict
from apax_core.predictor import compiled
from apax_core.transforms import ENSEMBLE_DDOF, Calibration, Transform
from apax_core.uq import fit_calibration, uncalibrated

SHALLOW = {"kind": "shallow", "n_members": 4}


def synthetic(numbers, true_sigma, n=60, seed=0):
    """(preds, structures) whose force errors are drawn with standard deviation
    ``true_sigma(raw sigma, Z)``; raw sigmas are log-normal around 0.1 eV/A."""
    rng = np.random.default_rng(seed)
    Z = np.asarray(numbers)
    preds, structures = [], []
    for _ in range(n):
        sigma = np.exp(rng.normal(np.log(0.1), 0.6, size=(len(Z), 3)))
        forces = rng.normal(size=(len(Z), 3))
        err = true_sigma(sigma, Z[:, None]) * rng.normal(size=sigma.shape)
        structures.append(
            Structure(Z, rng.normal(size=(len(Z), 3)), np.zeros((3, 3)), np.zeros(3), -1.0, forces)
        )
        pred = {"energy": -1.0 + 0.02 * rng.normal(), "energy_uncertainty": 0.01}
        preds.append(pred | {"forces": forces + err, "forces_uncertainty": sigma})
    return preds, structures


def test_per_element_family_wins_when_elements_differ():
    """O errors are 4x its sigma, H errors 1x: one factor cannot serve both, per-element
    factors recover 1 and 4 and win on held-out NLL; auto picks them."""
    preds, structures = synthetic([1] * 6 + [8] * 4, lambda s, z: s * np.where(z == 8, 4.0, 1.0))
    cal = fit_calibration(preds, structures, "auto")
    scores = dict(cal.held_out_nll)
    assert cal.family == "per_element"
    assert min(scores, key=scores.get) == "per_element"
    assert scores["global"] > scores["per_element"] + 0.3  # measured: 0.090 vs -0.318
    factors = {z: a for z, a, _ in cal.elements}
    assert factors[1] == pytest.approx(1.0, rel=0.05) and factors[8] == pytest.approx(4.0, rel=0.05)


def test_power_family_wins_when_sigma_follows_a_power_law():
    """Errors drawn with sigma_true = 0.5 sigma^1.8: the power family recovers the exponent and
    wins on held-out NLL; Ag, with fewer than 200 force components, takes the shared law."""
    preds, structures = synthetic([29] * 9 + [47], lambda s, z: 0.5 * s**1.8)
    cal = fit_calibration(preds, structures, "auto")
    scores = dict(cal.held_out_nll)
    assert cal.family == "power"
    assert scores["power"] < min(scores["global"], scores["per_element"]) - 0.1
    laws = {z: (a, b) for z, a, b in cal.elements}
    assert laws[29][1] == pytest.approx(1.8, abs=0.1)
    err, sigma, *_ = force_components(preds, structures)
    assert laws[47] == pytest.approx(power_law(err, sigma))


def test_global_family_is_the_closed_form_of_one_factor():
    """``global`` is f^2 = mean(err^2 / sigma^2) for forces and per-atom energies, bit for bit."""
    preds, structures = synthetic([1] * 6 + [8] * 4, lambda s, z: 2.0 * s)
    cal = fit_calibration(preds, structures, "global")
    err, sigma, *_ = force_components(preds, structures)
    assert cal.family == "global" and cal.elements == ()
    assert cal.forces == float(np.sqrt(np.mean(err**2 / np.maximum(sigma, 1e-12) ** 2)))
    e = np.array([(p["energy"] - s.energy) / 10 for p, s in zip(preds, structures, strict=True)])
    assert cal.energy == pytest.approx(float(np.sqrt(np.mean(e**2 / (0.01 / 10) ** 2))))


def test_an_unknown_family_is_rejected_by_name():
    preds, structures = synthetic([29], lambda s, z: s, n=3)
    with pytest.raises(InputError, match="calibration family"):
        fit_calibration(preds, structures, "isotonic")


@pytest.fixture(scope="module")
def alloy():
    """A shallow Cu/Ag ensemble and two rattled Cu/Ag cells."""
    cells = []
    for seed in range(2):
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1, 1))
        atoms.numbers[::3] = 47
        atoms.rattle(0.1, seed=seed)
        cells.append(from_atoms(atoms))
    return make_model(elements=(29, 47), ensemble=SHALLOW), cells


@dataclasses.dataclass(frozen=True, eq=False)
class CountTraces(Transform):
    """An identity results hook counting how often JAX traces the predictor."""

    traces: list = dataclasses.field(default_factory=list)

    def results(self, out: dict) -> dict:
        self.traces.append(1)
        return out


def test_equal_factors_and_unit_exponents_reproduce_global_exactly(alloy):
    """Per-element factors all equal to f, and a power law with b = 1, give every output of
    the global factor f bit for bit, through one compiled program."""
    model, cells = alloy
    f = 1.2345678901
    equal = ((29, f, 1.0), (47, f, 1.0))
    calibrations = [
        Calibration(0.75, f),
        Calibration(0.75, f, "per_element", equal),
        Calibration(0.75, f, "power", equal),
    ]
    counter, traced = CountTraces(), []
    fn = compiled(model, "uncertainty", transforms=(counter,))
    out = []
    for c in calibrations:
        variables = dataclasses.replace(model, calibration=c).variables
        out.append(map_structures(fn, variables, cells, model.config.r_max))
        traced.append(len(counter.traces))  # one trace per chain of the batch (batched)
    assert traced[0] >= 1 and traced == [traced[0]] * len(calibrations)
    for other in out[1:]:
        for ref, got in zip(out[0], other, strict=True):
            for key in ref:
                assert np.array_equal(ref[key], got[key]), key


def test_a_stored_per_element_calibration_round_trips_and_scales_each_species(alloy, tmp_path):
    """calibration.json keeps the family, the factors and the scores; a model predicting with
    it reports sigma of species k = factor_k x raw, members consistent, and
    ``uncalibrated`` recovers the raw predictions."""
    model, cells = alloy
    scores = (("global", 0.5), ("per_element", 0.1), ("power", 0.2))
    cal = Calibration(1.5, 2.0, "per_element", ((29, 2.0, 1.0), (47, 5.0, 1.0)), scores)
    cal.save(tmp_path)
    loaded = Calibration.load(tmp_path)
    assert loaded == cal and loaded.held_out_nll == scores
    assert json.loads((tmp_path / "calibration.json").read_text())["elements"]["Ag"]["a"] == 5.0
    raw = predict(model, cells, mode="uncertainty")
    calibrated = dataclasses.replace(model, calibration=loaded)
    got = predict(calibrated, cells, mode="uncertainty")
    for r, c, s in zip(raw, got, cells, strict=True):
        factor = np.where(s.Z == 47, 5.0, 2.0)[:, None]
        np.testing.assert_allclose(c["forces_uncertainty"], factor * r["forces_uncertainty"])
        np.testing.assert_allclose(c["energy_uncertainty"], 1.5 * r["energy_uncertainty"])
        np.testing.assert_allclose(c["stress_uncertainty"], 2.0 * r["stress_uncertainty"])
        members = np.std(c["forces_ensemble"], axis=-1, ddof=ENSEMBLE_DDOF)
        np.testing.assert_allclose(members, c["forces_uncertainty"], rtol=1e-10)
        np.testing.assert_allclose(c["forces"], r["forces"], rtol=1e-12, atol=1e-12)
    for r, u in zip(raw, uncalibrated(got, loaded, cells), strict=True):
        for key in r:
            np.testing.assert_allclose(u[key], r[key], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="needs structures"):
        uncalibrated(got, loaded)


def test_a_power_law_scales_each_spread_by_its_own_law(alloy):
    """sigma' = a_Z sigma^b_Z per atom, its inverse undoing it."""
    model, cells = alloy
    cal = Calibration(1.0, 2.0, "power", ((29, 3.0, 1.5), (47, 0.5, 0.8)))
    raw = predict(model, cells, mode="uncertainty")
    got = predict(dataclasses.replace(model, calibration=cal), cells, mode="uncertainty")
    for r, c, s in zip(raw, got, cells, strict=True):
        cu = (s.Z == 29)[:, None]
        sigma = r["forces_uncertainty"]
        want = np.where(cu, 3.0 * sigma**1.5, 0.5 * sigma**0.8)
        np.testing.assert_allclose(c["forces_uncertainty"], want, rtol=1e-10)
    back = uncalibrated(got, cal, cells)
    np.testing.assert_allclose(back[0]["forces_uncertainty"], raw[0]["forces_uncertainty"])


def test_an_old_calibration_file_loads_as_global(tmp_path):
    (tmp_path / "calibration.json").write_text(json.dumps({"energy": 2.0, "forces": 3.0}))
    cal = Calibration.load(tmp_path)
    assert cal == Calibration(2.0, 3.0) and cal.family == "global" and cal.elements == ()


def test_the_calibrate_command_chooses_a_family_and_records_every_score(alloy, tmp_path, capsys):
    """``apax-core calibrate --family auto`` stores the family with the lowest held-out NLL
    and every family's score in calibration.json, and says which it chose."""
    model, _ = alloy
    frames = []
    for seed in range(6):
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1, 1))
        atoms.numbers[::3] = 47
        atoms.rattle(0.1, seed=seed)
        atoms.calc = EMT()
        atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, **atoms.calc.results)
        frames.append(atoms)
    write_frames(tmp_path / "val.extxyz", frames)
    directory = save_model_dir(tmp_path / "model", model)
    assert (
        main(["calibrate", str(directory), str(tmp_path / "val.extxyz"), "--family", "auto"]) == 0
    )
    stored = json.loads((directory / "calibration.json").read_text())
    scores = stored["held_out_nll"]
    assert set(scores) == {"global", "per_element", "power"}
    assert stored["family"] == min(scores, key=scores.get)
    assert f"{stored['family']} family" in capsys.readouterr().out


def test_training_calibrates_in_the_configured_family(data_files, tmp_path):
    """The trainer's post-training calibration uses ``calibration_family`` and reports the
    family next to the factors in metrics.json."""
    model = {**TINY, "ensemble": SHALLOW}
    config = tiny_config(
        tmp_path / "m", data_files, n_epochs=1, model=model, calibration_family="auto"
    )
    directory = config.run()
    stored = Calibration.load(directory)
    metrics = json.loads((directory / "metrics.json").read_text())
    scores = dict(stored.held_out_nll)
    assert metrics["calibration_family"] == stored.family == min(scores, key=scores.get)
    assert metrics["calibration_forces"] == stored.forces
