"""MD walkers run by LAMMPS (the MD node's ``engine: lammps``, extra [lammps]): the frames are
our engine's H5MD with the calibrated uncertainties of the model at their positions; a stop
check stops the run at the frame that fired with our engine's status; a Langevin run holds
its temperature; every dynamics the spec offers runs; a spec LAMMPS cannot honour is bad input
naming its field before LAMMPS starts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from ase.build import bulk
from conftest import make_model, save_model_dir

from apax_core import lammps, lammps_md
from apax_core.calculator import ApaxCalculator
from apax_core.config.md import MDConfig
from apax_core.errors import InputError
from apax_core.lammps import create_system, open_lammps
from apax_core.lammps_input import check_engine, temperature_target
from apax_core.md import read_trajectory
from apax_core.md.io import STATUS, trace
from apax_core.md.kinetics import kinetic_temperature
from apax_core.md.schedules import temperature_fn
from apax_core.md.walkers import run_walkers
from apax_core.precision import x64
from apax_core.transforms import Calibration

pytest.importorskip("lammps")

STATUS_KEYS = {"stopped", "reason", "step", "time_fs", "n_frames"}
DETAIL_KEYS = {"check", "value", "threshold", "unit", "time_fs", "message"}
HOT = {"kind": "max_temperature", "max_T": 1e5}
STEPS = (0, 3, 5, 9, 14, 16, 17, 18, 40)


@pytest.fixture(scope="module")
def model():
    """A tiny fp64 shallow ensemble with a calibration, so calibrated values are checked."""
    raw = make_model(ensemble={"kind": "shallow", "n_members": 4})
    return dataclasses.replace(raw, calibration=Calibration(energy=2.0, forces=3.0))


def cuag(rattle=0.05):
    """32 atoms of fcc Cu, one in four Ag, in a sheared (triclinic) cell."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    shear = np.array([[1, 0.05, 0.02], [0.03, 1, -0.04], [0.01, 0.02, 1]])
    atoms.set_cell(atoms.cell.array @ shear, scale_atoms=True)
    atoms.numbers[::4] = 47
    atoms.rattle(rattle, seed=1)
    return atoms


def md(**settings) -> MDConfig:
    base = {"dt": 2.0, "duration": 40.0, "n_inner": 8, "sampling_rate": 4, "seed": 3}
    return MDConfig.model_validate({**base, **settings})


def test_lammps_frames_are_our_h5md_with_the_models_uncertainties(model, tmp_path):
    config = md(dynamics={"kind": "nvt"}, temperature={"kind": "constant", "T": 600.0})
    status = lammps_md.run_lammps_md(model, cuag(), config, tmp_path)
    assert set(status) == STATUS_KEYS | {"us_per_atom_step"}
    assert status | {"us_per_atom_step": 0} == {
        "stopped": False, "reason": None, "step": 20, "time_fs": 40.0, "n_frames": 5,
        "us_per_atom_step": 0,
    }  # fmt: skip
    frames = read_trajectory(tmp_path / "md.h5")
    assert [f.info["md_step"] for f in frames] == [4, 8, 12, 16, 20]
    assert np.ptp([f.positions for f in frames], axis=0).max() > 0.05  # A: the atoms moved
    for frame in frames:
        ref = frame.copy()
        ref.calc = ApaxCalculator(model)
        ref.get_potential_energy()
        for key in ("energy", "forces", "stress", "energy_uncertainty", "forces_uncertainty"):
            np.testing.assert_allclose(frame.calc.results[key], ref.calc.results[key], atol=1e-9)
    rows = trace(frames)
    assert all(200.0 < r["temperature_K"] < 1200.0 for r in rows)
    assert {"max_forces_uncertainty_eV_per_A", "energy_uncertainty_eV_per_atom"} <= set(rows[0])


def test_a_forces_uncertainty_check_stops_at_the_first_frame_as_our_engine_does(model, tmp_path):
    checks = [
        {"kind": "energy_uncertainty", "threshold": 100.0},
        {"kind": "forces_uncertainty", "threshold": 1e-6},
    ]
    config = md(dynamics={"kind": "nve"}, checks=checks)
    status = lammps_md.run_lammps_md(model, cuag(), config, tmp_path)
    assert set(status) == STATUS_KEYS | {"stop_detail", "us_per_atom_step"}
    assert (status["stopped"], status["reason"], status["step"]) == (True, "forces_uncertainty", 4)
    assert (status["n_frames"], status["time_fs"]) == (1, 8.0)
    detail = status["stop_detail"]
    assert set(detail) == DETAIL_KEYS and detail["message"].startswith("forces_uncertainty ")
    (frame,) = read_trajectory(tmp_path / "md.h5")  # the frame that fired is the last one
    sigma = np.linalg.norm(frame.calc.results["forces_uncertainty"], axis=1).max()
    assert detail["value"] == pytest.approx(sigma, rel=1e-9)
    assert (tmp_path / STATUS).is_file()


def test_langevin_in_lammps_holds_the_temperature(model, tmp_path):
    config = md(
        dynamics={"kind": "langevin", "friction": 0.05},
        temperature={"kind": "constant", "T": 500.0},
        duration=1200.0,
        n_inner=300,
        sampling_rate=10,
        force_uncertainty=False,
    )
    lammps_md.run_lammps_md(model, cuag(rattle=0.0), config, tmp_path)
    temperatures = [r["temperature_K"] for r in trace(read_trajectory(tmp_path / "md.h5"))]
    assert len(temperatures) == 60
    assert np.mean(temperatures[20:]) == pytest.approx(500.0, rel=0.1)  # 2.3 % standard error


@pytest.mark.parametrize(
    "settings",
    [
        {"dynamics": {"kind": "langevin"}, "temperature": {"kind": "oscillating"}},
        {
            "dynamics": {"kind": "langevin"},
            "temperature": {"kind": "piecewise", "times": [0, 20], "temperatures": [300, 600]},
        },
        {"dynamics": {"kind": "npt_mtk", "tau_p": 100.0}, "checks": [HOT, {"kind": "volume"}]},
        {"dynamics": {"kind": "npt_scr", "cell": "full", "thermostat": {"kind": "nvt"}}},
        {"dynamics": {"kind": "npt_scr", "cell": "orthorhombic"}},
    ],
)
def test_every_dynamics_and_schedule_runs_in_lammps(model, tmp_path, settings):
    config = md(**{"duration": 16.0, "checks": [HOT], **settings})
    status = lammps_md.run_lammps_md(model, cuag(), config, tmp_path)
    assert (status["stopped"], status["n_frames"]) == (False, 2)
    frames = read_trajectory(tmp_path / "md.h5")
    if "npt" in config.dynamics.kind:
        assert "pressure_bar" in frames[0].info and "volume_A3" in frames[0].info


@pytest.mark.parametrize(
    "schedule",
    [
        {"kind": "oscillating", "T_low": 300.0, "T_high": 900.0, "period": 50.0},
        {"kind": "piecewise", "times": [10.0, 30.0, 35.0], "temperatures": [300, 700, 400]},
    ],
)
def test_the_lammps_temperature_formula_is_our_schedule(schedule):
    config = md(dynamics={"kind": "langevin"}, temperature=schedule)
    target, commands = temperature_target(config)
    assert target.startswith("v_apax_T ")
    with x64():
        ours = [float(temperature_fn(config.temperature)(step * config.dt)) for step in STEPS]
    lmp = open_lammps()
    create_system(lmp, cuag(), ["Cu", "Ag"])  # LAMMPS evaluates variables once a box exists
    lmp.command(commands[0])
    for step, expected in zip(STEPS, ours, strict=True):
        lmp.command(f"reset_timestep {step}")
        assert lmp.extract_variable("apax_T") == pytest.approx(expected, rel=1e-12)
    lmp.close()


@pytest.mark.parametrize(
    ("engine", "settings", "message"),
    [
        ("lammps", {"udd": {}}, "udd: uncertainty-driven dynamics is not supported"),
        ("lammps", {"temperature": {"kind": "oscillating"}}, "temperature.kind: oscillating"),
        (
            "lammps",
            {
                "dynamics": {
                    "kind": "npt_mtk",
                    "pressure": {"kind": "piecewise", "times": [0], "pressures": [1]},
                }
            },
            "dynamics.pressure.kind: piecewise",
        ),  # fmt: skip
        ("ipi", {}, "engine: ipi is not supported as an MD node engine; use apax-core ipi-client"),
        ("gromacs", {}, "engine: one of jax, lammps, ipi"),
    ],
)
def test_what_lammps_cannot_run_is_bad_input_naming_the_field(engine, settings, message):
    with pytest.raises(InputError, match=message):
        check_engine(engine, md(**settings))


def test_walkers_check_their_input_before_lammps_starts(model, tmp_path, monkeypatch):
    def no_lammps(*args):
        raise AssertionError("LAMMPS started")

    monkeypatch.setattr(lammps_md, "open_lammps", no_lammps)
    directory = save_model_dir(tmp_path / "model", model)
    slab = cuag()
    slab.pbc = [True, True, False]
    with pytest.raises(InputError, match="start structure 1: engine lammps needs a cell periodic"):
        run_walkers(
            directory, [cuag(), slab], md(), tmp_path / "md", indices="all", engine="lammps"
        )
    with pytest.raises(InputError, match="udd: "):
        run_walkers(directory, [cuag()], md(udd={}), tmp_path / "md", engine="lammps")


def test_positions_that_turn_non_finite_stop_the_walker_as_nan(model, tmp_path, monkeypatch):
    evaluate = lammps.LammpsBridge.evaluate

    def blows_up(bridge, structure, uncertainty=False):
        out = evaluate(bridge, structure, uncertainty)
        if bridge.lmp.extract_global("ntimestep") >= 6:
            out["forces"] = out["forces"] * np.nan
        return out

    monkeypatch.setattr(lammps.LammpsBridge, "evaluate", blows_up)
    status = lammps_md.run_lammps_md(model, cuag(), md(dynamics={"kind": "nve"}), tmp_path)
    assert (status["stopped"], status["reason"], status["n_frames"]) == (True, "nan", 1)
    assert status["stop_detail"]["message"].startswith("non-finite energy, forces or positions")
    assert [f.info["md_step"] for f in read_trajectory(tmp_path / "md.h5")] == [4]


def test_run_walkers_runs_lammps_walkers_with_their_own_seeds(model, tmp_path):
    directory = save_model_dir(tmp_path / "model", model)
    walkers = run_walkers(
        directory, [cuag()], md(duration=16.0), tmp_path / "md", n_walkers=2, engine="lammps"
    )
    assert [s["n_frames"] for _, s in walkers] == [2, 2]
    first, second = (read_trajectory(tmp_path / "md" / w.name / "md.h5") for w, _ in walkers)
    assert not np.allclose(first[-1].positions, second[-1].positions)  # seeds 3 and 4


def test_loaded_momenta_start_the_lammps_run(model, tmp_path):
    atoms = cuag()
    masses = atoms.get_masses()[:, None]
    momenta = np.random.default_rng(0).normal(size=(len(atoms), 3)) * np.sqrt(masses * 0.08)
    atoms.set_momenta(momenta - masses * momenta.sum(0) / masses.sum())  # ~900 K, no drift
    loaded = float(kinetic_temperature(atoms.get_momenta(), atoms.get_masses(), True))
    config = md(dynamics={"kind": "nve"}, load_momenta=True, duration=2.0, sampling_rate=1)
    lammps_md.run_lammps_md(model, atoms, config, tmp_path)
    (frame,) = read_trajectory(tmp_path / "md.h5")  # one step later
    assert frame.info["temperature"] == pytest.approx(loaded, rel=0.05)  # not T(0) = 300 K


def test_an_md_node_checks_its_engine_when_the_graph_is_built(tmp_path, monkeypatch):
    import zntrack

    import apax_nodes as an

    monkeypatch.chdir(tmp_path)
    slab = cuag()
    slab.pbc = [True, True, False]
    cases = [
        ("ipi", {}, [cuag()], "engine: ipi is not supported as an MD node engine"),
        ("lammps", {"udd": {}}, [cuag()], "udd: uncertainty-driven dynamics"),
        ("lammps", {}, [slab], "data structure 0: engine lammps needs a cell periodic"),
    ]
    for engine, settings, data, message in cases:
        with zntrack.Project(), pytest.raises(InputError, match=message):
            model = an.Train(data=[], validation_data=[], config={"n_epochs": 1})
            an.MD(model=model, data=data, config={"duration": 4, **settings}, engine=engine)
