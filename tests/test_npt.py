"""Constant-pressure MD in the engine: its configuration, the volume check, the frames that carry
their cell, volume and pressure, the integrator factory, the neighbour list under a changing
cell, and whole runs with a GMNN: frames against the calculator at their own cell, exact
restart, the volume guard, bad input. (The barostats' physics: test_barostats.py.)"""

from __future__ import annotations

import logging

import ase
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import units
from ase.build import bulk
from conftest import crash_at_checkpoint
from jax_md import space
from pydantic import ValidationError

from apax_core.calculator import ApaxCalculator
from apax_core.config.md import (
    MDConfig,
    NPTMartynaTobiasKlein,
    NPTStochasticCellRescaling,
    NVTLangevin,
    NVTNoseHoover,
    TemperatureCheck,
    VolumeCheck,
    check_dynamics,
)
from apax_core.errors import InputError
from apax_core.md import barostats as b
from apax_core.md import image_neighbours as im
from apax_core.md import read_trajectory, run_md
from apax_core.md import run as md_run
from apax_core.md.checks import reason_code, reasons
from apax_core.md.integrators import integrator
from apax_core.md.io import frames_to_atoms, pressure_bar, trace
from apax_core.md.schedules import pressure_fn
from apax_core.precision import x64

# ---------------------------------------------------------------------------------- config


def test_npt_config_defaults_units_and_round_trip():
    config = MDConfig(duration=100.0, dynamics={"kind": "npt_scr"})
    d = config.dynamics
    assert isinstance(d, NPTStochasticCellRescaling) and isinstance(d.thermostat, NVTLangevin)
    assert (d.cell, d.tau_p, d.compressibility, d.pressure.P) == (
        "isotropic",
        1000.0,
        4.5e-5,
        1.01325,
    )
    raw = {
        "kind": "npt_scr",
        "thermostat": {"kind": "nvt", "thermostat": {"tau": 50}},
        "cell": "full",
        "tau_p": 500.0,
        "compressibility": 7e-7,
        "pressure": {"kind": "piecewise", "times": [0, 1000], "pressures": [1, 10000]},
    }
    config = MDConfig(duration=100.0, dynamics=raw, checks=[{"kind": "volume"}])
    assert isinstance(config.dynamics.thermostat, NVTNoseHoover)
    assert config.dynamics.thermostat.thermostat.tau == 50
    assert config.checks == [VolumeCheck(max_factor=2.0)]
    assert MDConfig.model_validate(config.model_dump(mode="json")) == config
    mtk = MDConfig(
        duration=10.0, dynamics={"kind": "npt_mtk", "pressure": {"kind": "constant", "P": -500}}
    )
    assert isinstance(mtk.dynamics, NPTMartynaTobiasKlein) and mtk.dynamics.pressure.P == -500


@pytest.mark.parametrize(
    ("dynamics", "checks", "match"),
    [
        ({"kind": "npt_scr", "cell": "triclinic"}, [], "cell"),
        ({"kind": "npt_scr", "compressibility": 0.0}, [], "compressibility"),
        ({"kind": "npt_scr", "tau_p": -1.0}, [], "tau_p"),
        ({"kind": "npt_scr", "thermostat": {"kind": "nve"}}, [], "thermostat"),
        ({"kind": "npt_mtk", "cell": "full"}, [], "cell"),  # MTK is isotropic only
        ({"kind": "npt_scr", "pressure": {"kind": "piecewise", "times": [0, 1]}}, [], "pressures"),
        (
            {
                "kind": "npt_scr",
                "pressure": {"kind": "piecewise", "times": [5, 1], "pressures": [1, 2]},
            },
            [],
            "increasing",
        ),
        (
            {
                "kind": "npt_mtk",
                "pressure": {"kind": "piecewise", "times": [0], "pressures": [1, 2]},
            },
            [],
            "1 times but 2 pressures",
        ),
        ({"kind": "npt_scr"}, [{"kind": "volume", "max_factor": 1.0}], "max_factor"),
        ({"kind": "langevin"}, [{"kind": "volume"}], "volume check needs NPT"),
    ],
)
def test_bad_npt_config_names_the_field(dynamics, checks, match):
    with pytest.raises(ValidationError, match=match):
        MDConfig(duration=100.0, dynamics=dynamics, checks=checks)


def test_npt_needs_a_fully_periodic_system_and_warns_of_a_short_tau_p(caplog):
    scr = NPTStochasticCellRescaling()
    for pbc in ([False] * 3, [True, True, False]):
        with pytest.raises(InputError, match="periodic along all three axes"):
            check_dynamics(scr, pbc, 1.0)
    check_dynamics(NVTLangevin(), [False] * 3, 1.0)  # constant volume: anything goes
    with caplog.at_level(logging.WARNING, logger="apax_core.config.md"):
        check_dynamics(scr, [True] * 3, 1.0)
        assert not caplog.records
        check_dynamics(NPTMartynaTobiasKlein(tau_p=30.0), [True] * 3, 2.0)
    assert "tau_p = 30 fs is below 20 time steps" in caplog.text


def test_pressure_schedules_in_bar():
    with x64():
        constant = pressure_fn(
            NPTStochasticCellRescaling(pressure={"kind": "constant", "P": 250.0}).pressure
        )
        assert float(constant(123.0)) == 250.0
        piece = pressure_fn(
            NPTStochasticCellRescaling(
                pressure={"kind": "piecewise", "times": [0, 100], "pressures": [1, -99]}
            ).pressure
        )
        assert [float(piece(t)) for t in (0, 50, 100, 1e6)] == [1, -49, -99, -99]


# ----------------------------------------------------------------------------- volume check


def test_volume_check_fires_outside_its_factor_and_on_a_broken_cell():
    checks = [TemperatureCheck(max_T=1000.0), VolumeCheck(max_factor=1.5)]
    assert reasons(checks)[3] == "volume"
    v0 = 1000.0
    frame = {
        "energy": 1.0,
        "positions": np.zeros((4, 3)),
        "forces": np.zeros((4, 3)),
        "temperature": 300.0,
    }
    with x64():
        for side, fired in ((10.0, False), (11.4, False), (11.5, True), (8.8, False), (8.7, True)):
            frame["cell"] = side * np.eye(3)
            assert int(reason_code(checks, frame, 4, v0)) == (3 if fired else 0), side
        frame["cell"] = np.full((3, 3), np.nan)
        assert reasons(checks)[int(reason_code(checks, frame, 4, v0))] == "volume"


# ----------------------------------------------------------------------------------- frames


def _buffer(n_frames: int, with_cell: bool) -> tuple[dict, np.ndarray]:
    """A device buffer as the engine records it for 4-atom fcc Cu, each frame with its own cell
    (if ``with_cell``), momenta and stress; and the first cell (rows)."""
    rng = np.random.default_rng(0)
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    cells = np.array([atoms.cell.array * (1 + 0.02 * k) for k in range(n_frames)])
    buf = {
        "positions": np.array([atoms.positions * (1 + 0.02 * k) for k in range(n_frames)]),
        "momenta": rng.normal(size=(n_frames, 4, 3)),
        "step": np.arange(n_frames) * 10,
        "temperature": np.full(n_frames, 300.0),
        "energy": rng.normal(size=n_frames),
        "forces": rng.normal(size=(n_frames, 4, 3)),
        "stress": np.array([(s + s.T) / 2 for s in rng.normal(size=(n_frames, 3, 3)) * 1e-3]),
    }
    if with_cell:
        buf["cell"] = cells
    return buf, cells[0]


def test_constant_pressure_frames_carry_cell_volume_and_pressure():
    buf, cell = _buffer(3, with_cell=True)
    frames = frames_to_atoms(buf, 3, np.full(4, 29), cell, np.ones(3, bool), 0.5)
    for k, atoms in enumerate(frames):
        np.testing.assert_array_equal(atoms.cell.array, buf["cell"][k])
        assert atoms.info["volume_A3"] == pytest.approx(np.linalg.det(buf["cell"][k]), rel=1e-12)
        kinetic = (
            np.einsum("ia,ib->ab", buf["momenta"][k], buf["momenta"][k]) / atoms.get_masses()[0]
        )
        tensor = kinetic / atoms.info["volume_A3"] - buf["stress"][k]
        assert atoms.info["pressure_bar"] == pytest.approx(np.trace(tensor) / 3 / units.bar)
        assert atoms.info["md_time_fs"] == 5.0 * k
    assert len({round(f.get_volume(), 6) for f in frames}) == 3
    rows = trace(frames)
    assert [r["volume_A3"] for r in rows] == [f.info["volume_A3"] for f in frames]
    assert [r["pressure_bar"] for r in rows] == [f.info["pressure_bar"] for f in frames]


def test_constant_volume_frames_keep_their_content_and_gain_trace_columns():
    buf, cell = _buffer(2, with_cell=False)
    frames = frames_to_atoms(buf, 2, np.full(4, 29), cell, np.ones(3, bool), 0.5)
    assert all(np.array_equal(f.cell.array, cell) for f in frames)
    assert all("volume_A3" not in f.info and "pressure_bar" not in f.info for f in frames)
    rows = trace(frames)
    assert rows[0]["volume_A3"] == pytest.approx(np.linalg.det(cell))
    assert rows[1]["pressure_bar"] == pytest.approx(pressure_bar(frames[1]))
    molecule = frames_to_atoms(buf, 1, np.full(4, 29), np.zeros((3, 3)), np.zeros(3, bool), 0.5)
    assert set(trace(molecule)[0]) == {"time_fs", "temperature_K"}


# ---------------------------------------------------------------------------------- factory


def _harmonic(R, box, **unused):
    """A 2-atom 'crystal': a spring between the atoms and an isotropic spring on the volume
    around 125 A^3, eV."""
    d = (R[1] - R[0]) @ box.T
    return jnp.sum((d - 1.5) ** 2) + 1e-3 * (jnp.linalg.det(box) - 125.0) ** 2


@pytest.mark.parametrize("kind", ["npt_scr", "npt_mtk"])
def test_factory_builds_constant_pressure_integrators_that_move_the_cell(kind):
    """integrator() gives SCR and MTK for the NPT kinds; their steps take the target pressure
    and change the box; a constant-volume integrator ignores a pressure."""
    config = MDConfig(duration=10.0, dt=1.0, dynamics={"kind": kind, "tau_p": 50.0})
    with x64():
        box = 5.0 * jnp.eye(3)
        R = jnp.asarray([[0.1, 0.1, 0.1], [0.4, 0.4, 0.4]])
        shift = space.periodic_general(box, fractional_coordinates=True)[1]
        kT = units.kB * 300.0
        integ = integrator(config.dynamics, _harmonic, shift, config.dt, kT)
        state = integ.init(jax.random.PRNGKey(0), R, kT, jnp.full(2, 63.5), box=box)
        step = jax.jit(lambda s: integ.step(s, kT, b.bar_to_eva3(5e4)))
        for _ in range(20):
            state = step(state)
        assert not np.allclose(state.box, box) and np.all(np.isfinite(state.position))
        nvt = integrator(NVTLangevin(), lambda R, **kw: _harmonic(R, box), shift, 1.0, kT)
        s0 = nvt.init(jax.random.PRNGKey(0), R, kT, jnp.full(2, 63.5))
        np.testing.assert_array_equal(nvt.step(s0, kT, 1.0).position, nvt.step(s0, kT).position)


# ------------------------------------------------------------------ neighbours, changing cell


def _pairs(s, cell, cutoff: float) -> set[tuple[int, int, tuple[int, ...]]]:
    """Brute force: every (i, j, image) with |(s_j - s_i + image) @ cell| < ``cutoff``,
    images within one cell each way (heights > 2 cutoff + drift here)."""
    images = np.stack(np.meshgrid(*[[-1, 0, 1]] * 3, indexing="ij"), -1).reshape(-1, 3)
    found = set()
    for n in images:
        d = np.linalg.norm((s[None, :, :] - s[:, None, :] + n) @ cell, axis=-1)
        for i, j in zip(*np.nonzero(d < cutoff), strict=True):
            if i != j or n.any():
                found.add((int(i), int(j), tuple(int(x) for x in n)))
    return found


def test_a_list_kept_under_moves_and_cell_strain_never_misses_a_pair():
    """Random moves and random (also shearing) cell strains of random points: whenever the
    image list is not rebuilt, it holds every pair now within r_max (with its image), and a
    30 % shrink alone forces a rebuild."""
    rng = np.random.default_rng(3)
    r_max, skin = 3.0, 1.0
    cell0 = np.diag([13.0, 12.0, 12.5]) + np.tril(0.3 * rng.normal(size=(3, 3)), -1)
    s0 = rng.uniform(size=(60, 3))
    with x64():
        fns = im.image_neighbour_list(cell0, (True,) * 3, r_max, skin)
        nbrs = fns.allocate(jnp.asarray(s0), jnp.asarray(cell0))
        idx, shift = np.asarray(nbrs.idx), np.asarray(nbrs.shift)
        listed = {
            (i, int(idx[i, k]), tuple(int(x) for x in shift[i, k]))
            for i in range(len(s0))
            for k in range(idx.shape[1])
            if idx[i, k] < len(s0)
        }
        kept = 0
        for _ in range(200):
            s = s0 + rng.normal(size=s0.shape) * rng.uniform(0, 0.03)
            cell = (np.eye(3) + rng.normal(size=(3, 3)) * rng.uniform(0, 0.05)) @ cell0
            stale = bool(im.needs_rebuild(nbrs, jnp.asarray(s), jnp.asarray(cell), r_max, skin))
            kept += not stale
            assert stale or _pairs(s, cell, r_max) <= listed
        assert 20 < kept < 200
        assert im.needs_rebuild(nbrs, jnp.asarray(s0), jnp.asarray(0.7 * cell0), r_max, skin)


# ------------------------------------------------------------------------------- engine runs


def cu108(a: float = 3.61) -> ase.Atoms:
    """3x3x3 conventional fcc Cu: 108 atoms."""
    return bulk("Cu", "fcc", a=a, cubic=True).repeat(3)


def npt(dynamics: dict, **settings) -> MDConfig:
    """A short NPT run at 300 K, dt 2 fs, the cell coupled strongly (tau_p 100 fs) so that it
    moves visibly within a few dozen steps."""
    base = dict(dt=2.0, duration=80.0, n_inner=10, sampling_rate=3)
    return MDConfig(dynamics={"tau_p": 100.0, **dynamics}, **{**base, **settings})


SCR_FULL = {"kind": "npt_scr", "cell": "full", "compressibility": 1e-4}


def test_frames_carry_their_cell_and_the_model_at_that_cell(cuag_model, tmp_path):
    """SCR with a full cell: every frame (read back from H5MD) has its own cell, lower
    triangular and sheared, volume_A3 = det(cell), pressure_bar from its stress and momenta,
    and energy, forces and stress equal to the ASE calculator's at its positions and cell."""
    result = run_md(cuag_model, cu108(), npt(SCR_FULL), tmp_path, progress_bar=False)
    frames = read_trajectory(result.trajectory)
    assert result.status["n_frames"] == len(frames) == 13
    cells = np.array([f.cell.array for f in frames])
    assert len({c.tobytes() for c in cells}) == len(frames)
    assert np.all(np.triu(cells, 1) == 0.0) and np.abs(np.tril(cells[-1], -1)).max() > 1e-4
    volumes = np.array([f.info["volume_A3"] for f in frames])
    np.testing.assert_allclose(volumes, np.abs(np.linalg.det(cells)), rtol=1e-12)
    assert np.ptp(volumes) > 1.0  # A^3
    calc = ApaxCalculator(cuag_model, force_uncertainty=False)
    for atoms in frames[::4]:
        assert atoms.info["pressure_bar"] == pytest.approx(pressure_bar(atoms), rel=1e-9)
        fresh = atoms.copy()
        fresh.calc = calc
        assert fresh.get_potential_energy() == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(fresh.get_forces(), atoms.get_forces(), rtol=0, atol=1e-9)
        np.testing.assert_allclose(fresh.get_stress(), atoms.get_stress(), rtol=0, atol=1e-11)
    rows = trace(frames)
    assert [r["volume_A3"] for r in rows] == pytest.approx(volumes.tolist(), rel=1e-12)


def _arrays(frames):
    return [
        np.array([f.positions for f in frames]),
        np.array([f.get_momenta() for f in frames]),
        np.array([f.get_forces() for f in frames]),
        np.array([f.cell.array for f in frames]),
        np.array([f.info["md_step"] for f in frames]),
    ]


@pytest.mark.parametrize(
    "dynamics",
    [
        {"kind": "npt_scr", "cell": "orthorhombic", "thermostat": {"kind": "nvt"}},
        {"kind": "npt_mtk"},
        SCR_FULL,
    ],
    ids=["scr-orthorhombic-nose-hoover", "mtk", "scr-full-langevin"],
)
def test_a_run_crashed_and_resumed_equals_the_uninterrupted_run(
    dynamics, cuag_model, tmp_path, monkeypatch
):
    """Crashed after the third chunk's frames were written but before its checkpoint: the
    resumed run (box, barostat and thermostat state from the checkpoint, a piecewise pressure
    that changes during the run) is bitwise the uninterrupted one."""
    pressure = {"kind": "piecewise", "times": [0.0, 80.0], "pressures": [1.0, 2e4]}
    config = npt({**dynamics, "pressure": pressure})
    full = run_md(cuag_model, cu108(), config, tmp_path / "full", progress_bar=False)
    reference = _arrays(read_trajectory(full.trajectory))
    crash_at_checkpoint(
        monkeypatch,
        lambda: run_md(cuag_model, cu108(), config, tmp_path / "crash", progress_bar=False),
    )
    assert md_run.ckpt.load(tmp_path / "crash").run.step == 20
    resumed = run_md(cuag_model, cu108(), config, tmp_path / "crash", progress_bar=False)
    assert resumed.status == full.status
    for a, b_ in zip(_arrays(read_trajectory(resumed.trajectory)), reference, strict=True):
        assert np.array_equal(a, b_)
    assert not np.array_equal(reference[3][0], reference[3][-1])  # the cell moved


def test_the_volume_check_stops_a_run_whose_box_explodes(cuag_model, tmp_path):
    """Under 2 GPa of tension with a soft coupling the crystal blows up: the run stops on the
    first kept frame beyond V0 * 1.5, which is written as the last one; a NaN cell would stop
    it too (non-finite positions)."""
    dynamics = {**SCR_FULL, "compressibility": 1e-3, "pressure": {"kind": "constant", "P": -2e4}}
    config = npt(
        dynamics, duration=400.0, sampling_rate=2, checks=[{"kind": "volume", "max_factor": 1.5}]
    )
    result = run_md(cuag_model, cu108(), config, tmp_path, progress_bar=False)
    assert result.status["stopped"] and result.status["reason"] == "volume"
    assert result.status["step"] < config.n_steps
    frames = read_trajectory(result.trajectory)
    ratios = np.array([f.info["volume_A3"] for f in frames]) / cu108().get_volume()
    assert ratios[-1] > 1.5 and np.all((ratios[:-1] <= 1.5) & (ratios[:-1] >= 1 / 1.5))
    assert result.status["step"] == frames[-1].info["md_step"]
    detail = result.status["stop_detail"]  # the host's value is the engine's
    assert detail["check"] == "volume" and detail["value"] == pytest.approx(ratios[-1], rel=1e-9)


def test_npt_refuses_slabs_and_molecules_before_any_work(cuag_model, tmp_path, monkeypatch):
    def no_engine(*args, **kwargs):
        raise AssertionError("an engine was built")

    monkeypatch.setattr(md_run, "engine_for", no_engine)
    slab = cu108()
    slab.pbc = [True, True, False]
    molecule = ase.Atoms("Cu2", positions=[[0.0, 0.0, 0.0], [2.5, 0.0, 0.0]])
    for atoms in (slab, molecule):
        with pytest.raises(InputError, match="npt_scr needs a cell periodic along all three"):
            run_md(cuag_model, atoms, npt(SCR_FULL), tmp_path, progress_bar=False)
