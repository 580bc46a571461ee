"""ASE calculator: ensemble keys, small periodic cells, finite differences with UDD, calibration,
batch evaluation, recompilation only on new padding bins, and no global ASE state touched."""

from __future__ import annotations

from dataclasses import dataclass, field

import ase.calculators.calculator as ase_calculator
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from conftest import make_model

from apax_core import calculator
from apax_core.calculator import ApaxCalculator
from apax_core.data import DataError, neighbour_list
from apax_core.precision import x64
from apax_core.transforms import UDD, Calibration, Transform, udd_energy

ALL_PROPERTIES = list(ase_calculator.all_properties)


def cuag(repeat=(2, 2, 2), seed=0, rattle=0.05):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    atoms.numbers[::5] = 47
    atoms.rattle(rattle, seed=seed)
    return atoms


@pytest.fixture(scope="module")
def shallow():
    return make_model(ensemble={"kind": "shallow", "n_members": 4})


@pytest.fixture(scope="module")
def full():
    return make_model(ensemble={"kind": "full", "n_members": 3})


@pytest.fixture(scope="module")
def single_calc(cuag_model):
    return ApaxCalculator(cuag_model)


@pytest.fixture(scope="module")
def shallow_calc(shallow):
    return ApaxCalculator(shallow)


UDD_A, UDD_B = 0.5, 0.02


@pytest.fixture(scope="module")
def udd_calc(shallow):
    return ApaxCalculator(shallow, transforms=[UDD(height=UDD_A, width=UDD_B)])


def compute(calc, atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    atoms.get_potential_energy()
    return {k: np.copy(v) for k, v in calc.results.items()}


# ------------------------------------------------------------------------------ result keys


def test_single_model_has_no_uncertainty_keys(single_calc):
    res = compute(single_calc, cuag())
    assert set(res) == {"energy", "free_energy", "forces", "stress"}
    assert res["forces"].shape == (32, 3) and res["stress"].shape == (6,)


@pytest.mark.parametrize("kind", ["shallow", "full"])
def test_ensemble_keys_are_standard_deviations(request, kind):
    model = request.getfixturevalue(kind)
    m = model.config.n_members
    res = compute(ApaxCalculator(model), cuag())
    assert res["energy_ensemble"].shape == (m,)
    assert res["forces_ensemble"].shape == (32, 3, m)
    assert res["forces_uncertainty"].shape == (32, 3) and res["stress_uncertainty"].shape == (6,)
    np.testing.assert_allclose(res["energy"], res["energy_ensemble"].mean(), rtol=1e-12)
    np.testing.assert_allclose(res["energy_uncertainty"], res["energy_ensemble"].std(ddof=1))
    np.testing.assert_allclose(res["forces"], res["forces_ensemble"].mean(-1), atol=1e-12)
    np.testing.assert_allclose(res["forces_uncertainty"], res["forces_ensemble"].std(-1, ddof=1))
    assert res["energy_uncertainty"] > 0 and res["forces_uncertainty"].max() > 0


def test_cheap_mode_gives_mean_forces_without_member_forces(shallow, shallow_calc):
    atoms = cuag()
    full_res = compute(shallow_calc, atoms)
    cheap = compute(ApaxCalculator(shallow, force_uncertainty=False), atoms)
    assert "forces_ensemble" not in cheap and "energy_uncertainty" in cheap
    np.testing.assert_allclose(cheap["forces"], full_res["forces"], atol=1e-10)
    np.testing.assert_allclose(cheap["energy_uncertainty"], full_res["energy_uncertainty"])


# ---------------------------------------------------------------------------- small cells


def test_small_periodic_cell_equals_its_supercell(single_calc):
    """A primitive fcc cell (2.55 A, far below 2 r_max) sees all its images."""
    prim = bulk("Cu", "fcc", a=3.61)
    prim.positions[0] += [0.03, -0.02, 0.01]
    atoms = prim.copy()
    atoms.set_cell(atoms.cell * [1.0, 1.02, 0.99], scale_atoms=True)
    atoms = atoms * (1, 1, 1)
    atoms.append("Cu")
    atoms.positions[1] = atoms.positions[0] + [1.1, 1.3, 0.2]
    small = compute(single_calc, atoms)
    big = compute(single_calc, atoms.repeat((3, 2, 2)))
    np.testing.assert_allclose(big["energy"], 12 * small["energy"], rtol=1e-10)
    np.testing.assert_allclose(big["forces"][:2], small["forces"], atol=1e-9)
    np.testing.assert_allclose(big["stress"], small["stress"], atol=1e-10)


def test_molecule_has_no_stress(single_calc):
    mol = Atoms("Cu3Ag", positions=[[0, 0, 0], [2.4, 0, 0], [0, 2.5, 0.1], [1.2, 1.2, 2.0]])
    res = compute(single_calc, mol)
    assert "stress" not in res and np.isfinite(res["energy"])


# ----------------------------------------------------------------- derivatives and transforms


def energy_of(calc, atoms):
    a = atoms.copy()
    a.calc = calc
    return a.get_potential_energy()


def test_udd_forces_and_stress_are_exact_derivatives(udd_calc, shallow_calc):
    calc = udd_calc
    atoms = cuag()
    res = compute(calc, atoms)
    plain = compute(shallow_calc, atoms)
    # The bias is large here (not a no-op) and leaves the spread alone.
    bias = res["energy"] - plain["energy"]
    assert bias < -0.05
    np.testing.assert_allclose(res["energy_uncertainty"], plain["energy_uncertainty"])
    h = 1e-4
    for i, x in [(0, 0), (3, 1), (7, 2)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, x] += h
        minus.positions[i, x] -= h
        fd = -(energy_of(calc, plus) - energy_of(calc, minus)) / (2 * h)
        assert abs(fd - res["forces"][i, x]) < 1e-6
    # stress: dE/d(strain) / V for a symmetric strain of the xy component
    eps = np.zeros((3, 3))
    eps[0, 1] = eps[1, 0] = h
    strained = []
    for sign in (1, -1):
        a = atoms.copy()
        a.set_cell(atoms.cell.array @ (np.eye(3) + sign * eps), scale_atoms=True)
        strained.append(energy_of(calc, a))
    fd_xy = (strained[0] - strained[1]) / (2 * h) / atoms.get_volume() / 2
    assert abs(fd_xy - res["stress"][5]) < 1e-7


def test_udd_energy_is_equation_9(udd_calc, shallow_calc):
    members = np.array([1.0, 1.3, 0.7, 1.1])
    m, n, a, b = 4, 10, 0.8, 0.3
    expected = a * (np.exp(-members.var(ddof=1) / (m * n * b**2)) - 1)
    with x64():
        assert abs(float(udd_energy(members, n, a, b)) - expected) < 1e-14
    atoms = cuag(seed=7, rattle=0.2)
    plain = compute(shallow_calc, atoms)
    biased = compute(udd_calc, atoms)
    a, b = UDD_A, UDD_B
    sigma2 = plain["energy_uncertainty"] ** 2
    bias = a * (np.exp(-sigma2 / (m * len(atoms) * b**2)) - 1)
    np.testing.assert_allclose(biased["energy"] - plain["energy"], bias, rtol=1e-9)
    np.testing.assert_allclose(biased["energy_ensemble"] - plain["energy_ensemble"], bias)


def test_udd_needs_an_ensemble(cuag_model):
    with pytest.raises(ValueError, match="ensemble"):
        ApaxCalculator(cuag_model, transforms=[UDD()])


def test_calibration_scales_spreads_not_means(shallow, shallow_calc):
    atoms = cuag()
    raw = compute(shallow_calc, atoms)
    cal = compute(ApaxCalculator(shallow, transforms=[Calibration(2.0, 3.0)]), atoms)
    np.testing.assert_allclose(cal["energy"], raw["energy"])
    np.testing.assert_allclose(cal["forces"], raw["forces"], atol=1e-12)
    np.testing.assert_allclose(cal["energy_uncertainty"], 2.0 * raw["energy_uncertainty"])
    np.testing.assert_allclose(cal["forces_uncertainty"], 3.0 * raw["forces_uncertainty"])
    np.testing.assert_allclose(cal["energy_ensemble"].std(ddof=1), cal["energy_uncertainty"])
    np.testing.assert_allclose(
        cal["forces_ensemble"].std(-1, ddof=1), cal["forces_uncertainty"], atol=1e-12
    )


# ----------------------------------------------------------------------- batches and caching


def test_batch_eval_matches_single_calls(shallow, shallow_calc):
    frames = [cuag(seed=1), cuag(repeat=(1, 1, 2), seed=2), bulk("Cu", "fcc", a=3.6), cuag(seed=3)]
    out = shallow_calc.batch_eval(frames, batch_size=3, progress_bar=False)
    assert len(out) == 4 and all(o is not f for o, f in zip(out, frames, strict=True))
    for atoms, done in zip(frames, out, strict=True):
        ref = compute(shallow_calc, atoms)
        assert np.array_equal(done.numbers, atoms.numbers)
        np.testing.assert_allclose(done.get_potential_energy(), ref["energy"], rtol=1e-10)
        np.testing.assert_allclose(done.get_forces(), ref["forces"], atol=1e-9)
        np.testing.assert_allclose(
            done.calc.results["forces_uncertainty"], ref["forces_uncertainty"], atol=1e-9
        )
    assert frames[0].calc is None  # inputs untouched


@dataclass(frozen=True, eq=False)
class CountTraces(Transform):
    """An identity energy hook that records each call of the wrapped energy function. It runs
    only while JAX traces the predictor, which it does once per compilation; equal only to
    itself, so the calculator gets a compilation cache of its own."""

    traces: list = field(default_factory=list)

    def wrap_apply(self, apply):
        def counted(*args):
            self.traces.append(args[1].shape)  # (N, K, 3) pair vectors: the padding bin
            return apply(*args)

        return counted


def test_recompiles_only_when_a_bin_changes(cuag_model, monkeypatch):
    """Small moves reuse the neighbour list and the compiled function; a move beyond half the
    skin or a vacancy builds a new list but, in the same padding bins, compiles nothing; a
    bigger cell (new bins) compiles once more."""
    built = []

    def counting_neighbour_list(*args, **kwargs):
        built.append(1)
        return neighbour_list(*args, **kwargs)

    monkeypatch.setattr(calculator, "neighbour_list", counting_neighbour_list)
    count = CountTraces()
    atoms = cuag(seed=4)
    atoms.calc = ApaxCalculator(cuag_model, transforms=[count], skin=0.5)
    atoms.get_potential_energy()
    for k in range(3):  # moves below skin / 2: same neighbour list, same compiled function
        atoms.positions[k] += 0.05
        atoms.get_forces()
    assert len(built) == 1 and len(count.traces) == 1
    atoms.positions[0] += [0.3, 0.0, 0.0]  # beyond skin / 2: a new list
    atoms.get_potential_energy()
    assert len(built) == 2 and len(count.traces) == 1
    del atoms[-1]  # 31 atoms instead of 32: a new list, still the bin of 40 atoms
    atoms.get_potential_energy()
    assert len(built) == 3 and len(count.traces) == 1
    bigger = cuag(repeat=(3, 2, 2))  # 48 atoms: the bin of 50
    bigger.calc = atoms.calc
    bigger.get_potential_energy()
    assert len(built) == 4 and len(count.traces) == 2
    assert count.traces[0] != count.traces[1]


def test_skin_reuse_gives_fresh_list_results(cuag_model):
    calc, fresh = ApaxCalculator(cuag_model, skin=0.6), ApaxCalculator(cuag_model, skin=0.0)
    atoms = cuag(seed=6)
    compute(calc, atoms)
    atoms.positions += np.random.default_rng(0).normal(scale=0.08, size=atoms.positions.shape)
    a, b = compute(calc, atoms), compute(fresh, atoms)
    np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-10)
    np.testing.assert_allclose(a["energy"], b["energy"], rtol=1e-12)


def test_ase_global_state_untouched(udd_calc):
    compute(udd_calc, cuag())
    assert ase_calculator.all_properties == ALL_PROPERTIES
    assert ApaxCalculator.implemented_properties == ["energy", "free_energy", "forces", "stress"]


def test_unknown_element_is_rejected_before_work(single_calc):
    atoms = bulk("Au", "fcc", a=4.08)
    atoms.calc = single_calc
    with pytest.raises(DataError, match="Au"):
        atoms.get_potential_energy()
