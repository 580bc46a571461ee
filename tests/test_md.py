"""The JAX MD engine: energy conservation, thermostat temperature and options, neighbour-list
correctness after many steps and after overflow, exact restart, UDD, stop checks, bad input."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging

import ase.io
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.constraints import FixAtoms
from conftest import crash_at_checkpoint, make_model, save_model_dir
from jax_md import space
from pydantic import ValidationError

from apax_core.calculator import ApaxCalculator, with_results
from apax_core.config.md import (
    ConstantTemperature,
    EnergyUncertaintyCheck,
    ForcesUncertaintyCheck,
    MDConfig,
    NVTNoseHoover,
    OscillatingTemperature,
    PiecewiseTemperature,
    TemperatureCheck,
    ThermostatChain,
    VolumeCheck,
)
from apax_core.data import DataError
from apax_core.errors import InputError
from apax_core.md import build as md_build
from apax_core.md import capacity, read_trajectory, run_md
from apax_core.md.checks import reason_code, reasons, stop_detail, validate
from apax_core.md.integrators import integrator
from apax_core.md.io import append_frames, pressure_bar, trace
from apax_core.md.kinetics import kinetic_temperature
from apax_core.md.model_adapter import dynamics_energy
from apax_core.md.neighbours import list_kind, pair_list
from apax_core.md.schedules import temperature_fn
from apax_core.precision import x64
from apax_core.predictor import predictor
from apax_core.transforms import UDD, Calibration


def cu108(a=3.61):
    """3x3x3 conventional fcc Cu: 108 atoms, 10.83 A > 2 (r_max 4 + skin 0.5)."""
    return bulk("Cu", "fcc", a=a, cubic=True).repeat((3, 3, 3))


def total_energy_per_atom(frames):
    return np.array([f.get_potential_energy() + f.get_kinetic_energy() for f in frames]) / len(
        frames[0]
    )


def unwrapped_displacement(frames, start):
    """Largest displacement from ``start`` (minimum image per frame)."""
    inv = np.linalg.inv(start.cell.array)
    d = frames.positions - start.positions
    d -= np.round(d @ inv) @ start.cell.array
    return np.linalg.norm(d, axis=1).max()


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def nve_run(cuag_model, tmp_path_factory):
    """NVE at 1 fs from 600 K; the random model melts the crystal, so atoms travel far (many
    list rebuilds), and a capacity of exactly the initial neighbour count overflows."""
    config = MDConfig(
        dynamics={"kind": "nve"},
        temperature={"kind": "constant", "T": 600.0},
        dt=1.0,
        duration=1000.0,
        n_inner=250,
        sampling_rate=10,
        skin=0.5,
        capacity_multiplier=1.0,
    )
    records = Records()
    logging.getLogger("apax_core.md.run").addHandler(records)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(capacity, "N_SAMPLES", 0)  # sized on the start only: it overflows
            result = run_md(cuag_model, cu108(), config, tmp_path_factory.mktemp("nve"))
    finally:
        logging.getLogger("apax_core.md.run").removeHandler(records)
    return result, read_trajectory(result.trajectory), records.messages


# -------------------------------------------------------------------------------- integrators


def test_nve_conserves_energy(nve_run):
    result, frames, _ = nve_run
    assert result.status == {
        "stopped": False,
        "reason": None,
        "step": 1000,
        "time_fs": 1000.0,
        "n_frames": 100,
    }
    assert [f.info["md_step"] for f in frames] == list(range(10, 1001, 10))
    e = total_energy_per_atom(frames)
    assert np.ptp(e) < 1e-5  # eV/atom over 1 ps, velocity Verlet at 1 fs, fp64 model
    assert abs(np.polyfit(np.arange(len(e)), e, 1)[0]) * len(e) < 5e-6  # drift
    kinetic = np.array([f.get_kinetic_energy() for f in frames]) / len(frames[0])
    assert np.ptp(kinetic) > 1e3 * np.ptp(e)  # energy flows between kinetic and potential


def test_the_trace_reports_the_engines_temperature(nve_run):
    """The trace (what the MD node plots) counts the dynamics' degrees of freedom, 3N - 3 under
    NVE, as the frames do; ASE's get_temperature counts 3N."""
    _, frames, _ = nve_run
    temperatures = np.array([row["temperature_K"] for row in trace(frames)])
    np.testing.assert_allclose(temperatures, [f.info["temperature"] for f in frames], rtol=1e-12)
    n = len(frames[0])
    ase_temperatures = np.array([f.get_temperature() for f in frames])
    np.testing.assert_allclose(temperatures / ase_temperatures, 3 * n / (3 * n - 3), rtol=1e-6)


def test_forces_after_many_steps_and_an_overflow_equal_fresh_neighbour_list(nve_run, cuag_model):
    _, frames, messages = nve_run
    assert any("overflow" in m for m in messages)  # the capacity grew during the run
    last = frames[-1]
    assert unwrapped_displacement(last, cu108()) > 2.0  # far beyond skin / 2: many rebuilds
    ref = last.copy()
    ref.calc = ApaxCalculator(cuag_model, skin=0.0)  # vesin, built from scratch
    np.testing.assert_allclose(ref.get_potential_energy(), last.get_potential_energy(), rtol=1e-11)
    np.testing.assert_allclose(ref.get_forces(), last.get_forces(), atol=1e-9)
    np.testing.assert_allclose(ref.get_stress(), last.get_stress(), atol=1e-10)


def test_nose_hoover_temperature(cuag_model, tmp_path):
    config = MDConfig(
        dynamics=NVTNoseHoover(thermostat=ThermostatChain(chain_length=3, tau=50)),
        temperature=ConstantTemperature(T=300.0),
        dt=2.0,
        duration=3000.0,
        n_inner=500,
        sampling_rate=5,
        extra_capacity=30,
    )
    frames = read_trajectory(run_md(cuag_model, cu108(), config, tmp_path).trajectory)
    temps = np.array([f.info["temperature"] for f in frames])
    equilibrated = temps[len(temps) // 3 :]  # the last 2 ps
    assert abs(equilibrated.mean() - 300.0) < 0.05 * 300.0
    # ASE's kinetic temperature (3N degrees of freedom) of the stored momenta, rescaled to the
    # 3N - 3 of momentum-conserving dynamics (the total momentum stays zero), is the engine's.
    n = 3 * len(frames[-1])
    assert abs(frames[-1].get_temperature() * n / (n - 3) - temps[-1]) < 1e-6 * temps[-1]


def test_nose_hoover_small_cell_runs_at_the_target_temperature():
    """8 atoms: the centre of mass does not move, so 3N - 3 = 21 degrees of freedom carry the
    heat. A chain coupled to 3N = 24 (jax-md's count) runs 24/21 = 14 % hot."""
    n_atoms, target, n_steps = 8, 300.0, 100_000
    with x64():
        disp, shift = space.free()
        grid = np.stack(np.meshgrid(*[[0.0, 2.5]] * 3), -1).reshape(-1, 3)  # a cube of 8 atoms
        start = jnp.asarray(grid + np.random.default_rng(0).normal(scale=0.05, size=(8, 3)))
        pair = jax.vmap(jax.vmap(disp, (None, 0)), (0, None))
        i, j = np.triu_indices(n_atoms, 1)

        def energy(R, **unused):  # Lennard-Jones, eps 0.4 eV, sigma 2.2 A: a bound cluster
            r2 = jnp.sum(pair(R, R)[i, j] ** 2, axis=-1)
            s6 = (2.2**2 / r2) ** 3
            return jnp.sum(4 * 0.4 * (s6**2 - s6))

        kT = units.kB * target
        dynamics = NVTNoseHoover(thermostat=ThermostatChain(chain_length=3, tau=100))
        integ = integrator(dynamics, energy, shift, 2.0, kT)
        mass = jnp.full(n_atoms, 63.5)
        state = md_build.to_f64(integ.init(jax.random.PRNGKey(1), start, kT, mass))

        def body(k, carry):
            state, total, reported = carry
            state = integ.step(state, kT)
            p = state.momentum
            internal = jnp.sum(p**2) / 63.5 - jnp.sum(jnp.sum(p, 0) ** 2) / (63.5 * n_atoms)
            keep = k >= n_steps // 5
            t = kinetic_temperature(p, state.mass, integ.conserves_momentum)
            return state, total + keep * internal, reported + keep * t

        zero = jnp.zeros(())
        state, total, reported = jax.lax.fori_loop(0, n_steps, body, (state, zero, zero))
    samples = n_steps - n_steps // 5
    true_t = float(total) / samples / ((3 * n_atoms - 3) * units.kB)
    assert abs(true_t - target) < 0.03 * target
    assert abs(float(reported) / samples - true_t) < 1e-6 * true_t  # reported = true
    assert np.abs(np.asarray(state.momentum).sum(0)).max() < 1e-8  # momentum conserved


def test_nose_hoover_removes_a_loaded_drift_and_conserves_momentum():
    """Loaded momenta with a centre-of-mass drift: the chain (coupled to 3N - 3) would scale
    the drift like heat and change the total momentum, so the drift is removed at the start;
    the internal motion is kept as loaded."""
    with x64():
        disp, shift = space.free()
        rest = jnp.asarray(np.random.default_rng(0).normal(scale=2.0, size=(8, 3)))

        def energy(R, **unused):
            return 0.5 * jnp.sum((R - rest) ** 2)

        kT = units.kB * 300.0
        dynamics = NVTNoseHoover(thermostat=ThermostatChain(chain_length=3, tau=10))
        integ = integrator(dynamics, energy, shift, 1.0, kT)
        mass = jnp.full(8, 63.5)
        thermal = np.random.default_rng(1).normal(scale=np.sqrt(63.5 * kT), size=(8, 3))
        thermal -= thermal.mean(0)
        state = integ.init(jax.random.PRNGKey(0), rest, kT, mass, jnp.asarray(thermal + 2.0))
        np.testing.assert_allclose(np.asarray(state.momentum), thermal, atol=1e-12)
        state = jax.lax.fori_loop(
            0, 500, lambda k, s: integ.step(s, 2 * kT), md_build.to_f64(state)
        )
        assert np.abs(np.asarray(state.momentum).sum(0)).max() < 1e-10


def harmonic_run(dynamics, n_steps=40):
    """Positions after ``n_steps`` of a 3D harmonic crystal under ``dynamics`` (cheap, no model)."""
    with x64():
        disp, shift = space.free()
        rest = jnp.asarray(np.random.default_rng(0).normal(size=(8, 3)))

        def energy(R, **unused):
            return 0.5 * jnp.sum((R - rest) ** 2)

        integ = integrator(dynamics, energy, shift, 1.0, units.kB * 300.0)
        state = integ.init(jax.random.PRNGKey(0), rest, units.kB * 300.0, jnp.ones(8) * 63.5)
        state = md_build.to_f64(state)
        step = jax.jit(lambda s: integ.step(s, units.kB * 300.0))
        for _ in range(n_steps):
            state = step(state)
        return state


def test_every_chain_option_reaches_jax_md():
    base = ThermostatChain(chain_length=3, chain_steps=2, sy_steps=3, tau=100)
    ref = harmonic_run(NVTNoseHoover(thermostat=base))
    assert ref.chain.position.shape == (3,)
    dt = 1.0 * units.fs
    np.testing.assert_allclose(ref.chain.tau, 100 * dt, rtol=1e-6)
    np.testing.assert_allclose(ref.chain.mass[1], units.kB * 300.0 * (100 * dt) ** 2, rtol=1e-6)
    for change in ({"chain_length": 1}, {"chain_steps": 1}, {"sy_steps": 5}, {"tau": 20}):
        other = harmonic_run(NVTNoseHoover(thermostat=base.model_copy(update=change)))
        # chain_steps only refines the chain integration, so its effect is small but real
        assert np.abs(other.position - ref.position).max() > 1e-12, change
    assert harmonic_run(
        NVTNoseHoover(thermostat=base.model_copy(update={"chain_length": 5}))
    ).chain.position.shape == (5,)


def test_temperature_schedules():
    with x64():
        const = temperature_fn(ConstantTemperature(T=250.0))
        piece = temperature_fn(
            PiecewiseTemperature(times=[0, 100, 300], temperatures=[300, 600, 400])
        )
        osc = temperature_fn(OscillatingTemperature(T_low=300, T_high=600, period=1000))
        assert float(const(123.0)) == 250.0
        assert [float(piece(t)) for t in (0, 50, 100, 200, 300, 999)] == [
            300,
            450,
            600,
            500,
            400,
            400,
        ]
        assert [round(float(osc(t)), 9) for t in (0, 250, 500, 1000, 1500)] == [
            300,
            450,
            600,
            300,
            600,
        ]
    with pytest.raises(ValidationError, match="increasing"):
        PiecewiseTemperature(times=[0, 0], temperatures=[300, 400])


# --------------------------------------------------------------------------------- restart


def restart_config(duration):
    return MDConfig(
        dynamics={"kind": "langevin", "friction": 0.02},
        temperature={"kind": "oscillating", "T_low": 300, "T_high": 600, "period": 40},
        dt=1.0,
        duration=duration,
        n_inner=10,
        sampling_rate=3,  # does not divide n_inner: chunks hold 3 or 4 frames
        extra_capacity=30,
    )


def frame_arrays(frames):
    return (
        np.array([f.positions for f in frames]),
        np.array([f.get_momenta() for f in frames]),
        np.array([f.get_forces() for f in frames]),
        np.array([f.info["md_step"] for f in frames]),
    )


def test_restart_after_a_crash_equals_the_uninterrupted_run(cuag_model, tmp_path, monkeypatch):
    atoms = cu108()
    full = run_md(cuag_model, atoms, restart_config(60.0), tmp_path / "full")
    reference = frame_arrays(read_trajectory(full.trajectory))
    assert list(reference[3]) == list(range(3, 61, 3))

    # Crash after the third chunk's frames were appended but before its checkpoint.
    crash_at_checkpoint(
        monkeypatch, lambda: run_md(cuag_model, atoms, restart_config(60.0), tmp_path / "crash")
    )
    assert len(read_trajectory(tmp_path / "crash" / "md.h5")) == 10  # 3 chunks written
    resumed = run_md(cuag_model, atoms, restart_config(60.0), tmp_path / "crash")
    assert resumed.status == full.status
    for a, b in zip(frame_arrays(read_trajectory(resumed.trajectory)), reference, strict=True):
        assert np.array_equal(a, b)

    # A finished run continued to a longer duration (other chunk boundaries) is the same too.
    run_md(cuag_model, atoms, restart_config(25.0), tmp_path / "extend")
    extended = run_md(cuag_model, atoms, restart_config(60.0), tmp_path / "extend")
    assert json.loads((tmp_path / "extend" / "md_status.json").read_text()) == full.status
    for a, b in zip(frame_arrays(read_trajectory(extended.trajectory)), reference, strict=True):
        assert np.array_equal(a, b)

    other = restart_config(60.0).model_copy(update={"seed": 7})
    with pytest.raises(InputError, match=r"other settings \(config.seed\)"):
        run_md(cuag_model, atoms, other, tmp_path / "full")
    moved = atoms.copy()
    moved.positions[0] += 0.1
    with pytest.raises(InputError, match="start structure"):
        run_md(cuag_model, moved, restart_config(60.0), tmp_path / "full")


def test_restart_with_a_retrained_model_starts_afresh(cuag_model, tmp_path, caplog):
    """The run identity includes the model's parameters: a leftover checkpoint of another
    model (same architecture, same settings) is not continued; the files it replaces are
    named in the log."""
    atoms, retrained = cu108(), make_model(seed=11)
    run_md(cuag_model, atoms, restart_config(12.0), tmp_path / "run")
    with caplog.at_level("WARNING", logger="apax_core.md.run"):
        again = run_md(retrained, atoms, restart_config(24.0), tmp_path / "run")
    replaced = [r.getMessage() for r in caplog.records if "replacing" in r.getMessage()]
    assert replaced == [
        f"starting afresh: replacing {tmp_path / 'run' / n}" for n in ("md.h5", "md_checkpoint.npz")
    ]
    alone = run_md(retrained, atoms, restart_config(24.0), tmp_path / "alone")
    assert again.status == alone.status
    for a, b in zip(
        *(frame_arrays(read_trajectory(r.trajectory)) for r in (again, alone)), strict=True
    ):
        assert np.array_equal(a, b)


def test_a_recalibrated_model_reuses_the_compiled_chunk(shallow, tmp_path, monkeypatch):
    """Calibration factors are an input of the engine, not constants in it: a model that
    differs only in its calibration runs on the same compiled chunk (traced once), along the
    same trajectory, with its spreads scaled by the factors."""
    traces, chunker = [], md_build._chunker

    def counting_chunker(*args):
        chunk = chunker(*args)

        def counted(*inputs):
            traces.append(1)  # runs only while JAX traces the chunk: once per compilation
            return chunk(*inputs)

        return counted

    monkeypatch.setattr(md_build, "_chunker", counting_chunker)
    monkeypatch.setattr(md_build, "_ENGINES", {})
    calibrated = dataclasses.replace(shallow, calibration=Calibration(energy=2.0, forces=3.0))
    config = MDConfig(
        temperature={"kind": "constant", "T": 300.0},
        dt=1.0,
        duration=20.0,
        n_inner=10,
        sampling_rate=5,
        extra_capacity=30,
    )
    raw, cal = [
        read_trajectory(run_md(m, cu108(), config, tmp_path / name).trajectory)
        for m, name in ((shallow, "raw"), (calibrated, "calibrated"))
    ]
    assert len(traces) == 1 and len(raw) == len(cal) == 4
    for a, b in zip(raw, cal, strict=True):
        assert np.array_equal(a.positions, b.positions)
        for key, factor in (("energy_uncertainty", 2.0), ("forces_uncertainty", 3.0)):
            np.testing.assert_allclose(
                b.calc.results[key], factor * a.calc.results[key], rtol=1e-14, atol=0
            )


# ------------------------------------------------------------------------ UDD and stop checks


@pytest.fixture(scope="module")
def shallow():
    return make_model(ensemble={"kind": "shallow", "n_members": 4})


UDD_A, UDD_B = 0.3, 0.05


@pytest.fixture(scope="module")
def udd_calc(shallow):
    """The calculator with the bias the engine runs below (vesin list, no skin)."""
    return ApaxCalculator(shallow, transforms=[UDD(UDD_A, UDD_B)], skin=0.0)


def test_engine_udd_force_is_the_gradient_of_the_biased_energy(shallow, udd_calc):
    udd = UDD(UDD_A, UDD_B)
    atoms = cu108()
    atoms.rattle(0.05, seed=3)
    atoms.numbers[::7] = 47
    ref = atoms.copy()
    ref.calc = udd_calc
    with x64():
        kind = list_kind(atoms, shallow.config.r_max + 0.5)
        pairs = pair_list(kind, atoms, shallow.config.r_max, 0.5, 1.25)
        R = jnp.asarray(pairs.fractional(atoms.positions))
        nbrs = pairs.allocate(R, 0)
        udd_energy_fn = predictor(shallow, "energy", transforms=[udd])
        structure = functools.partial(pairs.structure, Z=jnp.asarray(atoms.numbers))
        energy = dynamics_energy(udd_energy_fn, structure, jnp.asarray(pairs.cell))
        e, grad = jax.value_and_grad(energy)(R, neighbor=nbrs, params=shallow.variables)
    np.testing.assert_allclose(float(e), ref.get_potential_energy(), rtol=1e-11)
    np.testing.assert_allclose(-np.asarray(grad), ref.get_forces(), atol=1e-9)


def udd_config(checks=()):
    return MDConfig(
        temperature={"kind": "constant", "T": 600.0},
        dt=2.0,
        duration=800.0,
        n_inner=100,
        sampling_rate=4,
        extra_capacity=30,
        udd={"height": UDD_A, "width": UDD_B},
        checks=list(checks),
    )


def record_threshold(values):
    """(k, threshold): a threshold between the running maximum of ``values`` and a later record
    ``values[k]`` (past the first third), so a stop check fires exactly at frame k."""
    running = np.maximum.accumulate(values)
    k = next(i for i in range(len(values) // 3, len(values)) if values[i] > running[i - 1])
    return k, 0.5 * (running[k - 1] + values[k])


def test_uncertainty_stop_fires_at_the_threshold(shallow, udd_calc, tmp_path):
    atoms = cu108()
    free = run_md(shallow, atoms, udd_config(), tmp_path / "free")
    frames = read_trajectory(free.trajectory)
    sigma = np.array([f.calc.results["energy_uncertainty"] for f in frames]) / len(atoms)
    # The engine frames (UDD-biased) agree with the calculator under the same transform.
    calc = udd_calc
    ref = frames[-1].copy()
    ref.calc = calc
    np.testing.assert_allclose(
        ref.get_potential_energy(), frames[-1].get_potential_energy(), rtol=1e-11
    )
    np.testing.assert_allclose(ref.get_forces(), frames[-1].get_forces(), atol=1e-9)
    np.testing.assert_allclose(
        calc.results["forces_uncertainty"],
        frames[-1].calc.results["forces_uncertainty"],
        atol=1e-9,
    )

    k, threshold = record_threshold(sigma)
    check = {"kind": "energy_uncertainty", "threshold": threshold, "per_atom": True}
    stopped = run_md(shallow, atoms, udd_config([check]), tmp_path / "stop")
    status = json.loads((tmp_path / "stop" / "md_status.json").read_text())
    assert status == stopped.status
    step = (k + 1) * 4
    detail = status.pop("stop_detail")
    assert status == {
        "stopped": True,
        "reason": "energy_uncertainty",
        "step": step,
        "time_fs": 2.0 * step,
        "n_frames": k + 1,
    }
    kept = read_trajectory(stopped.trajectory)
    kept_sigma = np.array([f.calc.results["energy_uncertainty"] for f in kept]) / len(atoms)
    assert len(kept) == k + 1 and kept_sigma[-1] > threshold and kept_sigma[:-1].max() <= threshold
    assert detail["value"] == pytest.approx(kept_sigma[-1], rel=1e-12)
    assert detail == {
        "check": "energy_uncertainty",
        "value": detail["value"],
        "threshold": threshold,
        "unit": "eV/atom",
        "time_fs": 2.0 * step,
        "message": f"energy_uncertainty {kept_sigma[-1]:.3g} eV/atom > {threshold:g} eV/atom "
        f"at {2 * step} fs",
    }
    assert np.array_equal(
        np.array([f.positions for f in kept]), np.array([f.positions for f in frames[: k + 1]])
    )


def test_calibrated_thresholds_stop_where_raw_ones_divided_by_the_factor(shallow, tmp_path):
    """Stop thresholds compare the calibrated sigma: a model with calibration factor f stops at
    the same frame as the same model uncalibrated with the threshold divided by f. UDD biases
    the raw spread, so both walk the same trajectory."""
    f_energy, f_forces = 2.7, 0.35
    calibrated = dataclasses.replace(
        shallow, calibration=Calibration(energy=f_energy, forces=f_forces)
    )
    atoms = cu108()
    free = read_trajectory(run_md(shallow, atoms, udd_config(), tmp_path / "free").trajectory)
    raw_sigma = {
        "energy_uncertainty": [f.calc.results["energy_uncertainty"] / len(atoms) for f in free],
        "forces_uncertainty": [
            np.linalg.norm(f.calc.results["forces_uncertainty"], axis=-1).max() for f in free
        ],
    }
    for kind, factor in (("energy_uncertainty", f_energy), ("forces_uncertainty", f_forces)):
        k, raw_threshold = record_threshold(np.array(raw_sigma[kind]))
        runs = [
            run_md(model, atoms, udd_config([{"kind": kind, "threshold": t}]), tmp_path / name)
            for model, t, name in (
                (shallow, raw_threshold, f"{kind}_raw"),
                (calibrated, factor * raw_threshold, f"{kind}_calibrated"),
            )
        ]
        raw, cal = (read_trajectory(r.trajectory) for r in runs)
        assert [r.status["reason"] for r in runs] == [kind, kind]
        assert len(raw) == len(cal) == k + 1
        assert np.array_equal(np.array([a.positions for a in raw]), [a.positions for a in cal])
        detail = runs[1].status["stop_detail"]
        assert detail["value"] == pytest.approx(factor * raw_sigma[kind][k], rel=1e-10)
        assert detail["threshold"] == pytest.approx(factor * raw_threshold, rel=1e-12)


def test_reason_codes():
    checks = [
        ForcesUncertaintyCheck(threshold=0.5, reduce="norm"),
        EnergyUncertaintyCheck(threshold=0.01, per_atom=True),
        TemperatureCheck(max_T=1000.0),
    ]
    frame = {
        "energy": 1.0,
        "positions": np.zeros((10, 3)),
        "forces": np.zeros((10, 3)),
        "energy_uncertainty": 0.05,  # 0.005 per atom: below 0.01
        "forces_uncertainty": np.full((10, 3), 0.3),  # norm 0.52 > 0.5, components < 0.5
        "temperature": 1200.0,
    }
    with x64():
        code = int(reason_code(checks, frame, 10))
        assert reasons(checks)[code] == "forces_uncertainty"  # first firing check wins
        by_component = [ForcesUncertaintyCheck(threshold=0.5, reduce="max_component")]
        code = int(reason_code(by_component + checks[1:], frame, 10))
        assert reasons(checks)[code] == "max_temperature"
        assert int(reason_code(checks[1:2], frame, 10)) == 0
        frame["energy"] = np.nan
        assert int(reason_code(checks, frame, 10)) == 1  # non-finite always stops


def test_the_stop_detail_says_value_and_threshold_in_the_checks_units():
    """energy_uncertainty per atom (eV/atom) or per structure (eV), forces (eV/A), temperature
    (K), volume (a factor), non-finite: the value, threshold, unit and time of the stop."""
    frame = {
        "step": 420,
        "energy_uncertainty": 0.81,
        "forces_uncertainty": np.full((10, 3), 0.3),
        "temperature": 1200.0,
        "cell": 2.0 * np.eye(3),
    }
    checks = [
        EnergyUncertaintyCheck(threshold=0.05),
        EnergyUncertaintyCheck(threshold=0.5, per_atom=False),
        ForcesUncertaintyCheck(threshold=0.5),
        TemperatureCheck(max_T=1000.0),
        VolumeCheck(max_factor=1.5),
    ]
    with x64():
        messages = [
            stop_detail(checks, code, frame, 10, 1.0, 2.0)["message"] for code in range(1, 7)
        ]
    assert messages == [
        "non-finite energy, forces or positions at 840 fs",
        "energy_uncertainty 0.081 eV/atom > 0.05 eV/atom at 840 fs",
        "energy_uncertainty 0.81 eV > 0.5 eV at 840 fs",
        "forces_uncertainty 0.52 eV/A > 0.5 eV/A at 840 fs",
        "max_temperature 1200 K > 1000 K at 840 fs",
        "volume max(V/V0, V0/V) 8 > 1.5 at 840 fs",
    ]
    with x64():
        detail = stop_detail(checks, 2, frame, 10, 1.0, 2.0)
    assert detail | {"message": None} == {
        "check": "energy_uncertainty",
        "value": pytest.approx(0.081),
        "threshold": 0.05,
        "unit": "eV/atom",
        "time_fs": 840.0,
        "message": None,
    }


def test_trace_columns_and_h5md_observables_carry_their_units(tmp_path):
    """The trace's column names end in their units; the observables the engine adds to the
    H5MD file have H5MD unit attributes, and reading the file back is unchanged."""
    import h5py

    atoms = cu108()
    atoms.info.update(md_step=10, md_time_fs=5.0, temperature=310.0)
    results = {
        "energy": -1.0,
        "forces": np.zeros((108, 3)),
        "stress": np.zeros(6),
        "energy_uncertainty": 2.16,
        "energy_ensemble": np.array([-2.0, 0.0]),
        "forces_uncertainty": np.tile([[0.3, 0.4, 0.0]], (108, 1)),
    }
    frame = with_results(atoms, results)
    frame.info.update(volume_A3=frame.get_volume(), pressure_bar=1.0)
    row = trace([frame])[0]
    assert row == {
        "time_fs": 5.0,
        "temperature_K": 310.0,
        "volume_A3": pytest.approx(frame.get_volume()),
        "pressure_bar": pytest.approx(pressure_bar(frame)),
        "energy_uncertainty_eV": 2.16,
        "energy_uncertainty_eV_per_atom": pytest.approx(0.02),
        "max_forces_uncertainty_eV_per_A": pytest.approx(0.5),
    }
    append_frames(tmp_path / "md.h5", [frame, frame], 5.0)
    with h5py.File(tmp_path / "md.h5") as fh:
        (group,) = fh["observables"].values()
        units_of = {k: group[k]["value"].attrs.get("unit") for k in group}
        (particles,) = fh["particles"].values()
        assert particles["forces_uncertainty/value"].attrs["unit"] == "eV/Angstrom"
    assert units_of["temperature"] == "K" and units_of["pressure_bar"] == "bar"
    assert units_of["volume_A3"] == "Angstrom^3" and units_of["md_time_fs"] == "fs"
    assert units_of["energy_uncertainty"] == "eV"
    back = read_trajectory(tmp_path / "md.h5")
    assert len(back) == 2 and back[1].info["temperature"] == 310.0


# ------------------------------------------------------------------------------------- cli


def test_cli_template_and_md(cuag_model, tmp_path, capsys):
    from apax_core.cli import main
    from apax_core.config import MDRun, load_job

    for extra in ([], ["--full"]):
        assert main(["template", "md", *extra]) == 0
        (tmp_path / "md.yaml").write_text(capsys.readouterr().out)
        spec, run = load_job(tmp_path / "md.yaml", MDConfig, MDRun)
        assert isinstance(spec, MDConfig) and run.structure.name == "start.extxyz"
        validate(spec.checks, 1, spec.force_uncertainty)  # a single model (train template) runs it
    model_dir = save_model_dir(tmp_path / "model", cuag_model)
    ase.io.write(tmp_path / "start.extxyz", cu108())
    (tmp_path / "md.yaml").write_text(
        "dynamics: {kind: langevin}\nduration: 20\ndt: 2\nn_inner: 10\nsampling_rate: 5\n"
        "progress_bar: false\n"
    )
    assert main(["validate", "md", str(tmp_path / "md.yaml")]) == 0
    assert capsys.readouterr().out.endswith("valid\n")
    args = [
        "md",
        str(model_dir),
        str(tmp_path / "md.yaml"),
        "--structure",
        str(tmp_path / "start.extxyz"),
        "--directory",
        str(tmp_path / "run"),
    ]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["n_frames"] == 2
    assert len(read_trajectory(tmp_path / "run" / "md.h5")) == 2
    (tmp_path / "bad.yaml").write_text("duration: 10\nthermostat_chain: {}\n")
    assert main(["md", str(model_dir), str(tmp_path / "bad.yaml"), "--structure", "x"]) == 2
    assert "thermostat_chain" in capsys.readouterr().err


# ------------------------------------------------------------------------------- bad input


def test_bad_input_fails_before_any_work(cuag_model, shallow, tmp_path):
    config = MDConfig(duration=10.0)
    flat = cu108()
    flat.cell[2] = 0.0
    with pytest.raises(InputError, match="periodic axes"):
        run_md(cuag_model, flat, config, tmp_path)
    with pytest.raises(DataError, match="Au"):
        run_md(cuag_model, bulk("Au", "fcc", a=4.08, cubic=True).repeat(3), config, tmp_path)
    with pytest.raises(InputError, match="ensemble"):
        run_md(cuag_model, cu108(), MDConfig(duration=10, udd={}), tmp_path)
    check = {"kind": "forces_uncertainty", "threshold": 0.1}
    with pytest.raises(InputError, match="ensemble"):
        run_md(cuag_model, cu108(), MDConfig(duration=10, checks=[check]), tmp_path)
    with pytest.raises(InputError, match="no atoms"):
        run_md(cuag_model, cu108()[:0], config, tmp_path)
    fixed = cu108()
    fixed.set_constraint(FixAtoms([0]))
    with pytest.raises(InputError, match="constraints"):
        run_md(cuag_model, fixed, config, tmp_path)
    with pytest.raises(InputError, match="no momenta"):
        run_md(cuag_model, cu108(), MDConfig(duration=10, load_momenta=True), tmp_path)
    with pytest.raises(ValidationError, match="force_uncertainty"):
        MDConfig(duration=10, checks=[check], force_uncertainty=False)
    with pytest.raises(ValidationError, match="Extra inputs"):
        MDConfig.model_validate({"duration": 10, "thermostat_chain": {}})


def test_expected_positions_repeat_the_last_step_across_the_cell_boundary():
    """The list is updated at the extrapolated positions before a step: the last displacement
    repeated, taken to the nearest image when the positions were wrapped across a face."""
    import jax.numpy as jnp

    from apax_core.md.build import _extrapolated

    previous = jnp.array([[0.99, 0.5, 0.20], [0.40, 0.02, 0.7]])
    current = jnp.array([[0.01, 0.5, 0.21], [0.41, 0.98, 0.7]])
    np.testing.assert_allclose(
        _extrapolated(previous, current), [[0.03, 0.5, 0.22], [0.42, 0.94, 0.7]], atol=1e-6
    )
