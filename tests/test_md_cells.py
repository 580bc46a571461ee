"""The MD engine on real systems: small periodic cells (below twice the cutoff, down to one
atom), slabs, wires and molecules run on the image neighbour list and see exactly what the ASE
calculator sees; the two list kinds agree; restart is exact; start structures with overlapping
atoms are refused (naming the pair) unless allowed, in the engine, the CLI and the graph."""

from __future__ import annotations

import ase
import ase.io
import numpy as np
import pytest
import zntrack
from ase import units
from ase.build import bulk, fcc111, molecule
from conftest import TINY, crash_at_checkpoint, make_model
from test_image_neighbours import water_box
from test_nodes import init_repo, inside, repro

import apax_nodes as an
from apax_core.calculator import ApaxCalculator
from apax_core.config.md import MDConfig
from apax_core.data import write_frames
from apax_core.errors import InputError
from apax_core.md import capacity, read_trajectory, run_md
from apax_core.md import image_neighbours as im
from apax_core.md import run as md_run
from apax_core.md.neighbours import IMAGES, MINIMUM_IMAGE, list_kind
from apax_nodes.loop import LoopSettings, build_loop
from apax_nodes.project import build


@pytest.fixture(scope="module")
def water_model():
    return make_model(elements=(1, 8), r_max=5.0)


def nvt(duration=20.0, dt=0.5, **overrides) -> MDConfig:
    raw = {
        "dynamics": {"kind": "nvt"},
        "temperature": {"kind": "constant", "T": 300.0},
        "dt": dt,
        "duration": duration,
        "n_inner": 20,
        "sampling_rate": 5,
    }
    return MDConfig.model_validate({**raw, **overrides})


def assert_frames_match_the_calculator(frames, model, stress=True):
    """Energy, forces (and stress) of every engine frame equal the calculator's at the frame's
    positions (vesin list built from scratch), in fp64."""
    assert frames
    calc = ApaxCalculator(model, skin=0.0)
    for frame in frames:
        ref = frame.copy()
        ref.calc = calc
        np.testing.assert_allclose(
            frame.get_potential_energy(), ref.get_potential_energy(), rtol=0, atol=1e-9
        )
        np.testing.assert_allclose(frame.get_forces(), ref.get_forces(), rtol=0, atol=1e-9)
        if stress:
            np.testing.assert_allclose(frame.get_stress(), ref.get_stress(), rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------- small cells


@pytest.mark.parametrize("r_max", [5.0, 6.0])
def test_a_water_box_below_twice_the_cutoff_sees_what_the_calculator_sees(r_max, tmp_path):
    """16 H2O in a 7.8 A box: heights 7.8 A < 2 (r_max + skin) = 11 or 13 A, so atoms pair
    with several images of each other; every saved frame equals the calculator's."""
    model, atoms = make_model(elements=(1, 8), r_max=r_max), water_box()
    assert list_kind(atoms, r_max + 0.5) == IMAGES
    result = run_md(model, atoms, nvt(), tmp_path, progress_bar=False)
    frames = read_trajectory(result.trajectory)
    assert len(frames) == 8
    assert_frames_match_the_calculator(frames, model)
    scaled = np.concatenate([f.get_scaled_positions(wrap=False) for f in frames])
    assert scaled.min() >= 0.0 and scaled.max() < 1.0  # frames are wrapped into the cell


def test_a_one_atom_cell_is_a_27th_of_its_3x3x3_supercell(cuag_model, tmp_path):
    """Energy is extensive and a perfect fcc crystal has no forces: the primitive cell (heights
    2.08 A, an atom among 78 images of itself within 5.5 A) and its 27-atom supercell."""
    energies = {}
    config = MDConfig(
        dynamics={"kind": "nve"},
        load_momenta=True,
        dt=1.0,
        duration=4.0,
        n_inner=4,
        sampling_rate=2,
    )
    for n in (1, 3):
        atoms = bulk("Cu", a=3.61).repeat(n)
        atoms.set_momenta(np.zeros((len(atoms), 3)))  # at rest: the crystal stays perfect
        result = run_md(cuag_model, atoms, config, tmp_path / str(n), progress_bar=False)
        frames = read_trajectory(result.trajectory)
        assert np.abs(frames[-1].get_forces()).max() < 1e-12
        energies[n] = frames[-1].get_potential_energy()
    np.testing.assert_allclose(energies[1], energies[3] / 27, rtol=1e-12)


def test_nve_drift_of_the_small_water_box_is_no_worse_than_of_its_large_supercell(
    water_model, tmp_path, monkeypatch
):
    """A periodic system is the same in any supercell: the 2x2x2 supercell (15.6 A, run on
    jax-md's minimum-image list) started with the replicated momenta follows the same
    trajectory, so its energy drift per atom at the same dt is what the image list in the
    7.8 A box must reach."""
    small, rng = water_box(), np.random.default_rng(0)
    mass = small.get_masses()[:, None]
    momenta = rng.normal(size=(len(small), 3)) * np.sqrt(mass * units.kB * 300.0)
    small.set_momenta(momenta - mass * momenta.sum(0) / mass.sum())  # 300 K, at rest
    config = MDConfig(
        dynamics={"kind": "nve"},
        load_momenta=True,
        dt=0.5,
        duration=500.0,
        n_inner=500,
        sampling_rate=10,
    )
    drift = {}
    for name, atoms in (("small", small), ("large", small.repeat(2))):
        if name == "large":
            monkeypatch.setattr(im, "MIN_IMAGE_FROM", 1)
            assert list_kind(atoms, 5.5) == MINIMUM_IMAGE
        result = run_md(water_model, atoms, config, tmp_path / name, progress_bar=False)
        frames = read_trajectory(result.trajectory)
        total = [f.get_potential_energy() + f.get_kinetic_energy() for f in frames]
        time_ps = [f.info["md_time_fs"] / 1000 for f in frames]
        drift[name] = abs(np.polyfit(time_ps, np.array(total) / len(atoms), 1)[0])
    message = f"drift small {drift['small']:.3g}, large {drift['large']:.3g} eV/atom/ps"
    assert drift["small"] <= 1.1 * drift["large"] + 1e-7, message
    assert drift["small"] < 1e-3, message


def test_both_list_kinds_give_the_same_dynamics(cuag_model, tmp_path, monkeypatch):
    """A 108-atom cell that both lists can hold: the image list and jax-md's minimum-image
    list give the same frames (the same pairs, summed in another order)."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    atoms.rattle(0.05, seed=1)
    config = nvt(duration=10.0, dt=1.0, n_inner=10, sampling_rate=5)
    frames = {}
    for kind, first_large in ((IMAGES, im.MIN_IMAGE_FROM), (MINIMUM_IMAGE, 1)):
        monkeypatch.setattr(im, "MIN_IMAGE_FROM", first_large)
        assert list_kind(atoms, 4.5) == kind
        result = run_md(cuag_model, atoms, config, tmp_path / kind, progress_bar=False)
        frames[kind] = read_trajectory(result.trajectory)
    assert len(frames[IMAGES]) == len(frames[MINIMUM_IMAGE]) == 2
    for a, b in zip(frames[IMAGES], frames[MINIMUM_IMAGE], strict=True):
        np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-10)
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), rtol=0, atol=1e-9)
        np.testing.assert_allclose(a.get_potential_energy(), b.get_potential_energy(), atol=1e-9)


# ------------------------------------------------------------------ slabs, wires, molecules


def wire() -> ase.Atoms:
    """A Cu wire along x: periodic along x only, 8 A of vacuum around it."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((1, 2, 2))
    atoms.center(vacuum=8.0, axis=(1, 2))
    atoms.pbc = [True, False, False]
    return atoms


@pytest.mark.parametrize("name", ["slab", "wire"])
def test_slabs_and_wires_run_nvt_and_see_what_the_calculator_sees(name, cuag_model, tmp_path):
    """Cu(111) 2x2x4 with 10 A of vacuum (in-plane heights 4.4 A) and a wire: images along the
    periodic axes only; the open axes are never wrapped."""
    atoms = fcc111("Cu", size=(2, 2, 4), vacuum=10.0) if name == "slab" else wire()
    result = run_md(cuag_model, atoms, nvt(duration=20.0, dt=1.0), tmp_path, progress_bar=False)
    assert result.status["n_frames"] == 4 and not result.status["stopped"]
    frames = read_trajectory(result.trajectory)
    assert_frames_match_the_calculator(frames, cuag_model)
    assert all(np.array_equal(f.pbc, atoms.pbc) for f in frames)
    assert frames[-1].info["temperature"] > 0


def test_a_molecule_runs_and_sees_what_the_calculator_sees(tmp_path):
    model = make_model(elements=(1, 6, 8))
    result = run_md(model, molecule("CH3CH2OH"), nvt(), tmp_path, progress_bar=False)
    frames = read_trajectory(result.trajectory)
    assert len(frames) == 8 and not frames[0].pbc.any() and not frames[0].cell.array.any()
    assert_frames_match_the_calculator(frames, model, stress=False)


# --------------------------------------------------------------------------------- restart


def frame_arrays(frames):
    return (
        np.array([f.positions for f in frames]),
        np.array([f.get_momenta() for f in frames]),
        np.array([f.get_forces() for f in frames]),
        np.array([f.info["md_step"] for f in frames]),
    )


def test_restart_on_the_image_list_equals_the_uninterrupted_run(
    water_model, tmp_path, monkeypatch, caplog
):
    """Langevin in the small water box with a list that overflows, crashed after the third
    chunk's frames were written but before its checkpoint: the resumed run (list restored with
    its image shifts and capacity) is bitwise the uninterrupted one."""
    config = nvt(
        duration=40.0,
        dynamics={"kind": "langevin", "friction": 0.02},
        n_inner=10,
        sampling_rate=3,
        capacity_multiplier=1.0,
    )
    atoms = water_box()
    monkeypatch.setattr(capacity, "N_SAMPLES", 0)  # sized on the start only: it overflows
    full = run_md(water_model, atoms, config, tmp_path / "full", progress_bar=False)
    assert "neighbour list overflow" in caplog.text  # the capacity grew during the run
    reference = frame_arrays(read_trajectory(full.trajectory))
    monkeypatch.setattr(capacity, "_MEMORY", {})  # the crashed run starts as the full one did
    crash_at_checkpoint(
        monkeypatch,
        lambda: run_md(water_model, atoms, config, tmp_path / "crash", progress_bar=False),
    )
    saved = md_run.ckpt.load(tmp_path / "crash")
    assert saved.run.step == 20 and saved.nbrs["shift"].ndim == 3  # image shifts are saved
    resumed = run_md(water_model, atoms, config, tmp_path / "crash", progress_bar=False)
    assert resumed.status == full.status
    for a, b in zip(frame_arrays(read_trajectory(resumed.trajectory)), reference, strict=True):
        assert np.array_equal(a, b)


# ---------------------------------------------------------------------------- close contacts


def close_pair() -> ase.Atoms:
    """A Cu dimer 0.2 A long: no structure a model was trained on."""
    return ase.Atoms("Cu2", positions=[[0.0, 0.0, 0.0], [0.2, 0.0, 0.0]])


PAIR = r"atoms 0 \(Cu\) and 1 \(Cu\) are 0.200 A apart"


def test_overlapping_atoms_are_refused_unless_allowed(cuag_model, tmp_path):
    config = nvt(duration=2.0, dt=0.5, n_inner=4, sampling_rate=2)
    with pytest.raises(InputError, match=f"the initial structure: {PAIR}"):
        run_md(cuag_model, close_pair(), config, tmp_path / "refused")
    one = bulk("Cu", a=3.61)
    one.set_cell(one.cell * 0.1, scale_atoms=True)  # an atom 0.26 A from its own image
    with pytest.raises(InputError, match=r"atom 0 \(Cu\) and its periodic image"):
        run_md(cuag_model, one, config, tmp_path / "refused")
    allowed = config.model_copy(update={"allow_close_contacts": True})
    result = run_md(cuag_model, close_pair(), allowed, tmp_path / "allowed", progress_bar=False)
    assert result.status["step"] > 0


def test_the_cli_and_the_graph_check_start_structures(cuag_model, tmp_path, capsys):
    from apax_core.cli import main

    ase.io.write(tmp_path / "bad.extxyz", close_pair())
    (tmp_path / "md.yaml").write_text("duration: 10\n")
    args = [
        "validate",
        "md",
        str(tmp_path / "md.yaml"),
        "--structure",
        str(tmp_path / "bad.extxyz"),
    ]
    assert main(args) == 2
    assert "bad.extxyz structure -1: atoms 0 (Cu) and 1 (Cu) are 0.200 A" in capsys.readouterr().err
    (tmp_path / "md.yaml").write_text("duration: 10\nallow_close_contacts: true\n")
    assert main(args) == 0 and capsys.readouterr().out.endswith("valid\n")
    ase.io.write(tmp_path / "slab.extxyz", fcc111("Cu", size=(2, 2, 4), vacuum=10.0))
    (tmp_path / "md.yaml").write_text("duration: 10\n")
    assert main([*args[:3], "--structure", str(tmp_path / "slab.extxyz")]) == 0  # a slab runs

    train = {"n_epochs": 1, "model": dict(TINY)}
    with zntrack.Project(), pytest.raises(InputError, match=f"data structure 1: {PAIR}"):
        model = an.Train(data=[], validation_data=[], config=train)
        an.MD(model=model, data=[bulk("Cu"), close_pair()], indices="all", config={"duration": 4})


def test_a_loop_refuses_existing_start_structures_when_it_is_built(tmp_path):
    """Start structures that exist while the graph is built (a node loaded from a revision)
    are checked by build_loop, before any stage runs; ones still to be computed when MD runs."""
    root = init_repo(tmp_path / "project")
    write_frames(root / "start.extxyz", [bulk("Cu", "fcc", a=3.61, cubic=True), close_pair()])
    with inside(root):
        project = zntrack.Project()
        with project:
            an.LoadData(file="start.extxyz")
        build(project)
    repro(root)
    with inside(root):
        project = zntrack.Project()
        with project.group("data"):
            crystal = an.BuildBulk(element="Cu", repeat=[3, 3, 3])
            split = an.Split(data=crystal.frames, fractions=[0.67, 0.33, 0.0])
            later = an.LoadData(file="start.extxyz", name="Later")
        settings = LoopSettings(
            n_iterations=1, train={"n_epochs": 1}, md={"duration": 4.0}, n_walkers=2
        )
        start = zntrack.from_rev("LoadData")
        with pytest.raises(InputError, match=f"LoadData structure 1: {PAIR}"):
            build_loop(
                project,
                settings,
                initial_data=split,
                test_data=split,
                start_structures=start,
                labeller=an.EMTLabeller(),
            )
        build_loop(  # the same structures, still to be computed: checked when MD runs
            project,
            settings,
            initial_data=split,
            test_data=split,
            start_structures=later,
            labeller=an.EMTLabeller(),
            name="later",
        )
