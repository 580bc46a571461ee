"""The MD engine's neighbour capacity: sized for the hottest temperature before the first chunk
(one chunk program where the start's count overflowed), remembered when it grows (the next run
starts with it, from the file beside the compilation cache too), and the capacity changes the
cost, not the trajectory."""

from __future__ import annotations

import numpy as np
import pytest
import vesin
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin
from conftest import make_model

from apax_core.config.md import MDConfig
from apax_core.md import capacity, read_trajectory, run_md


def cu108():
    return bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 3))


def max_count(atoms, cutoff: float) -> int:
    i = vesin.NeighborList(cutoff=cutoff, full_list=True).compute(
        points=atoms.positions, box=atoms.cell.array, periodic=True, quantities="i"
    )[0]
    return int(np.bincount(i, minlength=len(atoms)).max())


def langevin(T: float, **overrides) -> MDConfig:
    settings = dict(
        dynamics={"kind": "langevin", "friction": 0.02},
        temperature={"kind": "constant", "T": T},
        dt=2.0,
        duration=400.0,
        n_inner=50,
        sampling_rate=25,
        skin=0.4,
    )
    return MDConfig(**(settings | overrides))


def test_the_thermal_displacement_is_equipartition():
    """(1/2) m omega^2 <u^2> = (1/2) kT per axis; Cu at 600 K: 0.089 A (its Debye-Waller
    displacement is about 0.1 A)."""
    sigma = capacity.thermal_sigma(np.array([63.546, 1.008]), 600.0)
    omega = 2 * np.pi * capacity.OMEGA_THZ * 1e12  # rad/s
    mass = np.array([63.546, 1.008]) * units._amu
    np.testing.assert_allclose(
        0.5 * mass * omega**2 * (sigma * 1e-10) ** 2, 0.5 * units._k * 600.0, rtol=1e-6
    )
    assert 0.08 < sigma[0] < 0.10


def test_the_capacity_holds_what_a_real_hot_crystal_meets():
    """Cu at 900 K under EMT (a real potential): every neighbour count within r_max 4.5 + skin
    0.4 along 2 ps fits the slots sized on the thermal probe, while the slots sized on the perfect
    crystal (42 neighbours x 1.1) do not."""
    atoms, cutoff = cu108(), 4.9
    start = capacity.slots(max_count(atoms, cutoff), 1.1)
    hot = capacity.thermal_count(lambda x: max_count(_at(atoms, x), cutoff), atoms, 900.0)
    sized = capacity.slots(hot, 1.1)
    md = atoms.copy()
    md.calc = EMT()
    kT, mass = units.kB * 900.0, md.get_masses()[:, None]
    md.set_momenta(np.sqrt(mass * kT) * np.random.default_rng(0).standard_normal((len(md), 3)))
    dyn = Langevin(
        md,
        2 * units.fs,
        temperature_K=900.0,
        friction=0.02,
        fixcm=False,
        rng=np.random.default_rng(1),
    )
    met = []
    dyn.attach(lambda: met.append(max_count(md, cutoff)), interval=5)
    dyn.run(1000)
    assert max(met) > start  # the start's sizing overflows
    assert max(met) <= sized < 1.25 * max(met)  # the probe's holds, without waste


def _at(atoms, positions):
    out = atoms.copy()
    out.positions = positions
    return out


@pytest.fixture(scope="module")
def model():
    """A random tiny model with r_max 4.5: the list cutoff 4.9 A lies between fcc Cu's third
    (4.42 A) and fourth (5.10 A) shells, as in the default loop."""
    return make_model(r_max=4.5)


@pytest.fixture
def no_probe(monkeypatch):
    """The list sized on the start alone (as before the probe)."""
    monkeypatch.setattr(capacity, "N_SAMPLES", 0)


def test_a_grown_capacity_is_remembered_for_the_next_run(model, tmp_path, monkeypatch, no_probe):
    """A run whose list overflows records the grown slots; the same run again (a new process:
    only the file remembers) starts with them and needs one chunk program."""
    monkeypatch.setattr(capacity, "_path", lambda: tmp_path / capacity.FILE)
    config = langevin(300.0, capacity_multiplier=1.0)
    first = run_md(model, cu108(), config, tmp_path / "a", progress_bar=False)
    assert first.timing["chunk_programs"] >= 2
    monkeypatch.setattr(capacity, "_MEMORY", {})  # a new process
    second = run_md(model, cu108(), config, tmp_path / "b", progress_bar=False)
    assert second.timing["chunk_programs"] == 1
    assert second.timing["neighbour_slots"] == first.timing["neighbour_slots"]


def test_a_stopped_run_teaches_nothing(model, tmp_path, monkeypatch, no_probe):
    """A list grown in a run a check stopped (a blow-up's counts explode) is not remembered."""
    monkeypatch.setattr(capacity, "_path", lambda: tmp_path / capacity.FILE)
    config = langevin(
        300.0, capacity_multiplier=1.0, checks=[{"kind": "max_temperature", "max_T": 1.0}]
    )
    result = run_md(model, cu108(), config, tmp_path / "a", progress_bar=False)
    assert result.status["reason"] == "max_temperature" and result.timing["chunk_programs"] == 2
    assert not (tmp_path / capacity.FILE).exists() and capacity._MEMORY == {}


def test_a_run_starts_with_the_capacity_of_its_hottest_temperature(model, tmp_path):
    """A schedule peaking at 900 K gets the slots of the 900 K probe (counted here with vesin), not
    those of the perfect crystal at the start (a random model is no crystal for long, so the run
    is one short chunk)."""
    atoms, schedule = cu108(), {"kind": "oscillating", "T_low": 300.0, "T_high": 900.0}
    config = langevin(300.0, temperature=schedule, duration=20.0)
    result = run_md(model, atoms, config, tmp_path, progress_bar=False)
    hot = capacity.thermal_count(lambda x: max_count(_at(atoms, x), 4.9), atoms, 900.0)
    assert result.timing["neighbour_slots"] == capacity.slots(hot, 1.1)
    assert result.timing["neighbour_slots"] > capacity.slots(max_count(atoms, 4.9), 1.1)


def test_the_capacity_changes_the_cost_not_the_trajectory(cuag_model, tmp_path):
    """Padded slots are masked pairs: two capacities give the same frames up to the round-off of
    the sums' order (grown by the dynamics' chaos over 200 steps)."""
    frames = []
    for extra in (0, 12):
        config = langevin(300.0, extra_capacity=extra)
        result = run_md(cuag_model, cu108(), config, tmp_path / str(extra), progress_bar=False)
        frames.append(np.array([f.positions for f in read_trajectory(result.trajectory)]))
    np.testing.assert_allclose(frames[0], frames[1], rtol=0, atol=1e-9)
