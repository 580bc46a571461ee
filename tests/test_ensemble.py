"""Ensembles and uncertainty: closed forms, consistency across kinds, calibration, training."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
from conftest import TINY, emt_frames, make_model, tiny_config
from scipy import integrate
from scipy.stats import norm

from apax_core.batching import map_structures
from apax_core.config import LossTerm
from apax_core.data import from_atoms, read_frames
from apax_core.frame_predictions import predict
from apax_core.model_dir import load_model
from apax_core.precision import x64
from apax_core.predictor import compiled
from apax_core.train.losses import crps, nll
from apax_core.transforms import ENSEMBLE_DDOF, Calibration, Transform
from apax_core.uq import fit_calibration, miscalibration_area, uncertainty_metrics

TERM = LossTerm(quantity="forces")


def test_nll_and_crps_match_closed_forms():
    rng = np.random.default_rng(0)
    err, sigma = rng.normal(size=20), rng.uniform(0.2, 2.0, size=20)
    with x64():
        got_nll = np.asarray(nll(err, sigma, TERM))
        got_crps = np.asarray(crps(err, sigma, TERM))
    np.testing.assert_allclose(got_nll, -norm.logpdf(err, 0.0, sigma), rtol=1e-12)
    # CRPS = integral of (F(x) - 1[x >= y])^2 for a Gaussian forecast F centred at the error.
    for e, s, c in zip(err[:5], sigma[:5], got_crps[:5], strict=True):
        below, _ = integrate.quad(lambda x, e=e, s=s: norm.cdf(x, e, s) ** 2, -np.inf, 0.0)
        above, _ = integrate.quad(lambda x, e=e, s=s: (1 - norm.cdf(x, e, s)) ** 2, 0.0, np.inf)
        assert c == pytest.approx(below + above, rel=1e-7)


ENSEMBLES = [
    {"kind": "shallow", "n_members": 5, "chunk_size": 2},
    {"kind": "full", "n_members": 3},
]


@pytest.fixture(scope="module")
def cells():
    return [from_atoms(a) for a in emt_frames(2, seed=5, size=(1, 1, 1))]


@pytest.mark.parametrize("ensemble", ENSEMBLES, ids=lambda e: e["kind"])
def test_kinds_share_keys_ddof_and_mean_force(ensemble, cells):
    model = make_model(elements=(29,), ensemble=ensemble)
    rich = predict(model, cells, mode="uncertainty")
    cheap = predict(model, cells, mode="forces")
    keys = {
        "energy",
        "forces",
        "stress",
        "energy_ensemble",
        "forces_ensemble",
        "stress_ensemble",
        "energy_uncertainty",
        "forces_uncertainty",
        "stress_uncertainty",
    }
    for r, c in zip(rich, cheap, strict=True):
        assert set(r) == keys
        m = ensemble["n_members"]
        assert r["energy_ensemble"].shape == (m,) and r["forces_ensemble"].shape[-1] == m
        assert r["energy_uncertainty"] == pytest.approx(np.std(r["energy_ensemble"], ddof=1))
        np.testing.assert_allclose(
            r["forces_uncertainty"], np.std(r["forces_ensemble"], axis=-1, ddof=ENSEMBLE_DDOF)
        )
        # Mean-force mode (gradient of the mean energy) == mean of the member forces (eq. 6).
        np.testing.assert_allclose(c["forces"], r["forces_ensemble"].mean(-1), atol=1e-12)
        np.testing.assert_allclose(c["forces"], r["forces"], atol=1e-12)
        assert np.all(r["forces_uncertainty"] > 0)


def test_chunked_force_jacobian_equals_unchunked(cells):
    chunked = make_model(elements=(29,), ensemble=ENSEMBLES[0])
    whole = make_model(elements=(29,), ensemble={**ENSEMBLES[0], "chunk_size": None})
    a = predict(chunked, cells, mode="uncertainty")[0]
    b = predict(whole, cells, mode="uncertainty")[0]
    np.testing.assert_allclose(a["forces_ensemble"], b["forces_ensemble"], atol=1e-12)


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_shallow_member_forces_equal_each_members_gradient(chunk_size):
    """The shallow GMNN path (one forward pass, the members batched through one backward pass,
    transforms/shallow.py) against jax.grad of every member's energy on its own: member forces
    and stresses, and the spread the predictor reports; on a two-element structure padded
    beside a larger one (padding atoms and pair slots), with and without member chunks."""
    import jax

    from apax_core.config import PadToMax
    from apax_core.data import Dataset
    from apax_core.transforms import member_predictions, shallow, total_energies, zero_strain
    from apax_core.transforms.derivatives import inverse_volume

    ensemble = {"kind": "shallow", "n_members": 5, "chunk_size": chunk_size}
    model = make_model(elements=(29, 47), ensemble=ensemble, seed=2)
    assert shallow.supports(model)
    small, large = emt_frames(1, seed=8, size=(1, 1, 1)) + emt_frames(1, seed=9, size=(2, 1, 1))
    small.numbers[[0, 2]] = 47
    structures = [from_atoms(a) for a in (small, large)]
    with x64():
        batch = next(
            Dataset(structures, model.config.r_max).batches(2, PadToMax(), shuffle=False, seed=0)
        )
        s = jax.tree.map(lambda x: x[0], batch)
        n_real = len(small)
        assert s.positions.shape[0] > n_real  # padded

        def member_energy(positions, strain, m):
            return total_energies(model.apply, model.params, positions, strain, s)[m]

        grads = [
            jax.grad(member_energy, argnums=(0, 1))(s.positions, zero_strain(), m)
            for m in range(ensemble["n_members"])
        ]
        ref_forces = -np.stack([np.asarray(g[0]) for g in grads], -1)[:n_real]
        ref_stress = np.stack([np.asarray(g[1]) for g in grads], -1) * inverse_volume(s.cell)

        energies, g_r, g_eps = jax.jit(
            lambda p, s: shallow.member_gradients(model, p, s, chunk_size=chunk_size)
        )(model.params, s)
        np.testing.assert_allclose(-np.moveaxis(g_r, 0, -1)[:n_real], ref_forces, atol=1e-11)
        np.testing.assert_allclose(g_r[:, n_real:], 0.0, atol=1e-11)
        np.testing.assert_allclose(
            np.moveaxis(g_eps, 0, -1) * inverse_volume(s.cell), ref_stress, atol=1e-11
        )

        out = compiled(model, "uncertainty")(model.variables, batch)
        generic = jax.jit(lambda p, s: member_predictions(model.apply, p, s))(model.params, s)
    np.testing.assert_allclose(out["energy_ensemble"][0], energies, rtol=1e-12)
    np.testing.assert_allclose(out["forces_ensemble"][0, :n_real], ref_forces, atol=1e-11)
    np.testing.assert_allclose(out["stress_ensemble"][0], ref_stress, atol=1e-11)
    np.testing.assert_allclose(
        out["forces_uncertainty"][0, :n_real],
        np.std(ref_forces, axis=-1, ddof=ENSEMBLE_DDOF),
        atol=1e-11,
    )
    for key in ("forces_ensemble", "forces_uncertainty", "stress_uncertainty"):
        np.testing.assert_allclose(out[key][0], generic[key], atol=1e-11)


def test_float32_shallow_member_forces_take_the_compiled_kernel(monkeypatch):
    """A float32 shallow GMNN on a CPU pulls its members back through the compiled kernel
    (apax_core.native) and gets the XLA path's member forces and spreads, whole and in
    member chunks."""
    from apax_core import native, predictor

    assert native.applies(np.float32)
    frames = [from_atoms(a) for a in emt_frames(2, seed=3, size=(2, 1, 1))]
    outputs = {}
    for chunk in (None, 3):
        ensemble = {"kind": "shallow", "n_members": 5, "chunk_size": chunk}
        model = make_model(elements=(29,), ensemble=ensemble, precision="fp32", seed=4)
        for path in ("native", "xla"):
            if path == "xla":
                monkeypatch.setattr(native, "applies", lambda dtype: False)
            predictor._compiled.cache_clear()  # one program per architecture otherwise
            outputs[chunk, path] = predict(model, frames, mode="uncertainty")
            monkeypatch.undo()
    predictor._compiled.cache_clear()
    for chunk in (None, 3):
        for a, b in zip(outputs[chunk, "native"], outputs[chunk, "xla"], strict=True):
            for key in ("forces_ensemble", "forces_uncertainty", "stress_ensemble"):
                scale = np.max(np.abs(b[key]))
                np.testing.assert_allclose(a[key], b[key], atol=1e-5 * scale, rtol=0)


def test_shallow_path_is_used_only_where_it_applies():
    """ZBL, full ensembles and single models take the generic member VJPs (as do energy
    transforms, which the predictor checks)."""
    from apax_core.transforms import shallow

    shallow_ens = {"kind": "shallow", "n_members": 3}
    assert shallow.supports(make_model(elements=(29,), ensemble=shallow_ens))
    assert not shallow.supports(make_model(elements=(29,), ensemble=shallow_ens, zbl={}))
    assert not shallow.supports(make_model(elements=(29,), ensemble=ENSEMBLES[1]))
    assert not shallow.supports(make_model(elements=(29,)))


def toy_predictions(rng, n, overconfidence=1.0):
    """Errors drawn from N(0, sigma) while the model reports sigma / overconfidence."""
    preds, structures = [], []
    for s in (from_atoms(a) for a in emt_frames(n, seed=7, size=(1, 1, 1))):
        sig_e, sig_f = rng.uniform(0.01, 0.1), rng.uniform(0.01, 0.2, size=s.forces.shape)
        preds.append(
            {
                "energy": s.energy + rng.normal() * sig_e,
                "energy_uncertainty": sig_e / overconfidence,
                "forces": s.forces + rng.normal(size=sig_f.shape) * sig_f,
                "forces_uncertainty": sig_f / overconfidence,
            }
        )
        structures.append(s)
    return preds, structures


def test_calibration_of_a_calibrated_set_is_one_and_fixes_an_overconfident_one():
    rng = np.random.default_rng(1)
    preds, structures = toy_predictions(rng, 200)
    cal = fit_calibration(preds, structures)
    assert cal.energy == pytest.approx(1.0, abs=0.12) and cal.forces == pytest.approx(1.0, abs=0.02)
    metrics = uncertainty_metrics(preds, structures)
    assert metrics["miscal_area_forces"] < 0.02
    assert metrics["mean_z2_forces"] == pytest.approx(1.0, abs=0.05)

    over, structures = toy_predictions(np.random.default_rng(2), 200, overconfidence=3.0)
    cal = fit_calibration(over, structures)
    assert cal.forces == pytest.approx(3.0, rel=0.03)
    e, s = (
        np.concatenate(
            [np.ravel(p["forces"] - t.forces) for p, t in zip(over, structures, strict=True)]
        ),
        np.concatenate([np.ravel(p["forces_uncertainty"]) for p in over]),
    )
    assert miscalibration_area(e, s) > 0.2
    assert miscalibration_area(e, cal.forces * s) < 0.02


@pytest.mark.parametrize("ensemble", ENSEMBLES, ids=lambda e: e["kind"])
def test_calibration_scales_members_and_spread_consistently(ensemble, cells):
    """A model with a stored calibration (energy factor 2, force and stress factor 3) reports
    the uncalibrated means, uncertainties times the factors, and members whose deviations from
    the mean are scaled by the same factors, so the members' spread is the uncertainty."""
    model = make_model(elements=(29,), ensemble=ensemble)
    calibrated = dataclasses.replace(model, calibration=Calibration(energy=2.0, forces=3.0))
    raw = predict(model, cells, mode="uncertainty")
    cal = predict(calibrated, cells, mode="uncertainty")
    for r, c in zip(raw, cal, strict=True):
        for key, factor in (("energy", 2.0), ("forces", 3.0), ("stress", 3.0)):
            members, mean = c[f"{key}_ensemble"], np.asarray(c[key])[..., None]
            raw_deviation = r[f"{key}_ensemble"] - np.asarray(r[key])[..., None]
            np.testing.assert_allclose(c[key], r[key], rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(
                c[f"{key}_uncertainty"], factor * r[f"{key}_uncertainty"], rtol=1e-10
            )
            np.testing.assert_allclose(members - mean, factor * raw_deviation, atol=1e-12)
            np.testing.assert_allclose(
                np.std(members, axis=-1, ddof=ENSEMBLE_DDOF), c[f"{key}_uncertainty"], rtol=1e-10
            )


@pytest.mark.parametrize(
    ("ensemble", "loss"),
    [
        (
            ENSEMBLES[0],
            [
                {"quantity": "energy", "kind": "crps", "atoms_exponent": 1.0},
                {"quantity": "forces", "kind": "crps"},
            ],
        ),
        (
            ENSEMBLES[1],
            [{"quantity": "energy", "atoms_exponent": 1.0, "weight": 10.0}, {"quantity": "forces"}],
        ),
    ],
    ids=["shallow_crps", "full_mse"],
)
def test_ensembles_train_and_calibrate(ensemble, loss, data_files, tmp_path):
    # Batches of 5 from 12 structures: the last batch carries padding structures, whose zero
    # ensemble spread must not turn the gradient into NaN.
    model = {**TINY, "ensemble": ensemble}
    config = tiny_config(
        tmp_path / "m",
        data_files,
        n_epochs=3,
        model=model,
        loss=loss,
        data={"batch_size": 5},
        calibration_family="global",  # the one factor whose fit sets z^2 = 1 exactly
    )
    directory = config.run()
    model = load_model(directory)
    if ensemble["kind"] == "full":  # members are independent parameter sets
        kernels = model.params["readout"]["dense_1"]["kernel"]
        assert kernels.shape[0] == 3 and not np.allclose(kernels[0], kernels[1])
    val = [from_atoms(a) for a in read_frames(data_files["val"])]
    # Training ends by calibrating on the validation set: the NLL-optimal factors make the
    # mean squared z-score there exactly 1, and they are stored with the model.
    stored = Calibration.load(directory)
    assert stored == model.calibration and not stored.is_identity
    metrics = uncertainty_metrics(predict(model, val, mode="uncertainty"), val)
    assert metrics["mean_z2_forces"] == pytest.approx(1.0, rel=1e-4)
    assert metrics["mean_z2_energy"] == pytest.approx(1.0, rel=1e-4)
    raw = dataclasses.replace(model, calibration=Calibration())
    preds = predict(raw, val, mode="uncertainty")
    cal = fit_calibration(preds, val)
    assert cal.forces == pytest.approx(stored.forces, rel=1e-5)
    cal.save(directory)
    calibrated = predict(load_model(directory), val, mode="uncertainty")
    np.testing.assert_allclose(
        calibrated[0]["forces_uncertainty"], cal.forces * preds[0]["forces_uncertainty"], rtol=1e-5
    )
    assert Calibration.load(directory) == cal
    with open(directory / "log.csv") as fh:
        losses = [float(r["train_loss"]) for r in csv.DictReader(fh)]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_calculator_applies_the_calibration_stored_with_the_model(cells):

    from ase.build import bulk

    from apax_core.calculator import ApaxCalculator

    model = make_model(elements=(29,), ensemble=ENSEMBLES[0])
    calibrated = dataclasses.replace(model, calibration=Calibration(energy=2.0, forces=3.0))
    atoms = bulk("Cu", cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=1)
    results = []
    for m in (model, calibrated):
        atoms.calc = ApaxCalculator(m)
        atoms.get_potential_energy()
        results.append(dict(atoms.calc.results))
    raw, cal = results
    np.testing.assert_allclose(
        cal["forces_uncertainty"], 3.0 * raw["forces_uncertainty"], rtol=1e-6
    )
    np.testing.assert_allclose(
        cal["energy_uncertainty"], 2.0 * raw["energy_uncertainty"], rtol=1e-6
    )
    np.testing.assert_allclose(cal["forces"], raw["forces"], atol=1e-12)  # means unchanged
    # The same numbers as predict(), which every other consumer uses.
    pred = predict(calibrated, [from_atoms(atoms)], mode="uncertainty")[0]
    np.testing.assert_allclose(cal["forces_uncertainty"], pred["forces_uncertainty"], rtol=1e-6)


@dataclasses.dataclass(frozen=True, eq=False)
class CountTraces(Transform):
    """An identity results hook that records each call. It runs only while JAX traces the
    predictor, once per compilation; equal only to itself, so it gets a compiled cache entry of
    its own."""

    traces: list = dataclasses.field(default_factory=list)

    def results(self, out: dict) -> dict:
        self.traces.append(1)
        return out


def test_a_recalibrated_model_shares_the_compiled_predictor(cells):
    """Calibration factors are an input of the compiled predictor, not constants in it: models
    that differ only in their calibration share one compilation, and the calibrated spreads
    are the raw ones times the factors."""
    model = make_model(elements=(29,), ensemble=ENSEMBLES[0])
    calibrated = dataclasses.replace(model, calibration=Calibration(energy=2.0, forces=3.0))
    counter, traced = CountTraces(), []
    raw, cal = [], []
    for m, out in ((model, raw), (calibrated, cal)):
        fn = compiled(m, "uncertainty", transforms=(counter,))
        out.extend(map_structures(fn, m.variables, cells, m.config.r_max))
        traced.append(len(counter.traces))  # one trace per chain of the batch (batched)
    assert traced[0] >= 1 and traced[1] == traced[0]
    for r, c in zip(raw, cal, strict=True):
        np.testing.assert_array_equal(c["energy_uncertainty"], 2.0 * r["energy_uncertainty"])
        np.testing.assert_allclose(
            c["forces_uncertainty"], 3.0 * r["forces_uncertainty"], rtol=1e-15, atol=0
        )


def test_a_calibration_of_one_changes_no_bit():
    """Factors of 1 are applied like any others (one program serves every calibration) and
    leave every output exactly as it was, members included."""
    rng = np.random.default_rng(3)
    energies = rng.normal(-100.0, 5.0, size=5)
    members = rng.normal(size=(4, 3, 5)) * 10.0 ** rng.integers(-3, 3, size=(4, 3, 1))
    pred = {
        "energy": energies.mean(),
        "energy_ensemble": energies,
        "energy_uncertainty": np.std(energies, ddof=ENSEMBLE_DDOF),
        "forces": members.mean(-1),
        "forces_ensemble": members,
        "forces_uncertainty": members.std(-1, ddof=ENSEMBLE_DDOF),
    }
    with x64():
        out = Calibration().results(pred)
    for key, value in pred.items():
        assert np.array_equal(np.asarray(out[key]), value), key
