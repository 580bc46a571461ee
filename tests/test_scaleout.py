"""Labelling and MD on many workers: serial, a process pool and a dask LocalCluster give the
same frames in input order; a killed worker's task is retried; a rerun after a crash computes
only what is missing; MD walkers are seeded per walker and identical on every executor;
GFN2-xTB through tblite labels a molecule with forces equal to finite differences of its
energy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk, molecule
from conftest import save_model_dir
from pydantic import TypeAdapter
from test_md import cu108
from workers import always_die, die_once

from apax_core.config import Executor, MDConfig
from apax_core.errors import InputError
from apax_core.labelling import (
    EMTLabeller,
    GenericLabeller,
    LabellerError,
    label_task,
    reference_md,
    task_key,
)
from apax_core.md import read_trajectory
from apax_core.md.walkers import plan_walkers, run_walkers
from apax_core.tasks import Lost, TaskStore, run_tasks


def cells(n: int):
    out = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
        atoms.rattle(0.05, seed=k)
        out.append(atoms)
    return out


def executor(raw: dict):
    return TypeAdapter(Executor).validate_python(raw)


def labelled(kind: dict, tmp_path: Path, frames):
    jobs = [(EMTLabeller(), a, True) for a in frames]
    keys = [task_key(EMTLabeller(), a) for a in frames]
    store = TaskStore(tmp_path / kind["kind"])
    return run_tasks(label_task, jobs, keys, executor(kind), store)


def test_every_executor_gives_the_serial_frames_in_order(tmp_path):
    """Equal to round-off: each worker reuses its EMT calculator, whose neighbour list is
    updated from the structures that worker labelled before (sums in another order)."""
    frames = cells(6)
    serial = labelled({"kind": "serial"}, tmp_path, frames)
    for kind in ({"kind": "processes", "n_workers": 2}, {"kind": "dask", "n_workers": 2}):
        other = labelled(kind, tmp_path, frames)
        for a, b in zip(serial, other, strict=True):
            assert np.array_equal(a.positions, b.positions)
            assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-12)
            np.testing.assert_allclose(a.get_forces(), b.get_forces(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["processes", "dask"])
def test_a_killed_worker_has_its_task_retried(kind, tmp_path):
    markers = [str(tmp_path / f"m{k}") for k in range(3)]
    for done in (markers[0], markers[2]):  # only the middle task kills its worker, once
        Path(done).touch()
    config = executor({"kind": kind, "n_workers": 2, "retries": 1})
    store = TaskStore(tmp_path / "store")
    results = run_tasks(die_once, markers, ["a", "b", "c"], config, store)
    assert results == markers  # complete, once each, in order
    lost = run_tasks(always_die, [0], ["d"], config, TaskStore(tmp_path / "lost"))
    assert isinstance(lost[0], Lost)  # recorded, not dropped, not retried forever


class Counter:
    """Counts calls in a file; raises at call ``crash_at`` (a crash of the whole run)."""

    def __init__(self, path: Path, crash_at: int | None = None) -> None:
        self.path, self.crash_at = path, crash_at

    def __call__(self, item: int) -> int:
        calls = int(self.path.read_text()) if self.path.exists() else 0
        if calls == self.crash_at:
            raise KeyboardInterrupt("killed")
        self.path.write_text(str(calls + 1))
        return item * item


def test_a_rerun_after_a_crash_computes_only_what_is_missing(tmp_path):
    items, keys = list(range(8)), [f"k{i}" for i in range(8)]
    store, counter = TaskStore(tmp_path / "store"), tmp_path / "calls"
    with pytest.raises(KeyboardInterrupt):
        run_tasks(Counter(counter, crash_at=5), items, keys, executor({"kind": "serial"}), store)
    assert int(counter.read_text()) == 5
    assert run_tasks(Counter(counter), items, keys, executor({"kind": "serial"}), store) == [
        i * i for i in items
    ]
    assert int(counter.read_text()) == 8  # 5 before the crash + the 3 missing


TIMING = {"us_per_atom_step": None}
WALKER_MD = MDConfig(
    dynamics={"kind": "langevin", "friction": 0.05},
    temperature={"kind": "constant", "T": 600.0},
    dt=2.0,
    duration=40.0,
    n_inner=10,
    sampling_rate=5,
    skin=0.5,
    seed=7,
)


def test_md_walkers_are_seeded_per_walker_and_the_same_on_every_executor(cuag_model, tmp_path):
    model_dir = save_model_dir(tmp_path / "model", cuag_model)
    rattled = cu108()
    rattled.rattle(0.05, seed=3)
    starts = [cu108(), rattled]  # one cell: the walkers share one compiled engine
    serial = run_walkers(model_dir, starts, WALKER_MD, tmp_path / "s", indices="all", n_walkers=3)
    assert [(w.start, w.seed) for w, _ in serial] == [(0, 7), (1, 8), (0, 9)]
    trajectories = [read_trajectory(tmp_path / "s" / w.name / "md.h5") for w, _ in serial]
    assert [len(t) for t in trajectories] == [4, 4, 4]
    assert not any(status["stopped"] for _, status in serial)
    shift = trajectories[1][0].positions - rattled.positions
    shift -= rattled.cell[0, 0] * np.round(shift / rattled.cell[0, 0])  # minimum image (cubic)
    assert np.abs(shift).max() < 0.1  # walker 1 started from its own structure
    # walkers 0 and 2 start from the same structure; their seeds make them differ
    assert not np.allclose(trajectories[0][-1].positions, trajectories[2][-1].positions)
    stamps = [(tmp_path / "s" / w.name / "md.h5").stat().st_mtime_ns for w, _ in serial]
    again = run_walkers(model_dir, starts, WALKER_MD, tmp_path / "s", indices="all", n_walkers=3)
    assert again == serial  # a finished walker is stored, not rerun
    assert stamps == [(tmp_path / "s" / w.name / "md.h5").stat().st_mtime_ns for w, _ in serial]
    pool = executor({"kind": "processes", "n_workers": 2})
    pooled = run_walkers(
        model_dir, starts, WALKER_MD, tmp_path / "p", pool, indices="all", n_walkers=3
    )
    for (w, status), mine in zip(pooled, trajectories, strict=True):
        theirs = read_trajectory(tmp_path / "p" / w.name / "md.h5")
        assert [s for _, s in serial][w.number] | TIMING == status | TIMING
        for a, b in zip(theirs, mine, strict=True):
            np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-10)


def test_walker_indices_are_checked_before_any_walker_runs():
    assert [w.start for w in plan_walkers(3, -1, 2, 0)] == [2, 2]
    with pytest.raises(InputError, match=r"indices: \[5\] out of range for 3") as bad:
        plan_walkers(3, [0, 5], None, 0)
    assert isinstance(bad.value, IndexError)  # bad input (one line), and still an IndexError
    with pytest.raises(ValueError, match='indices: "all", an index or a list'):
        plan_walkers(3, "al", None, 0)
    with pytest.raises(ValueError, match="n_walkers must be at least 1"):
        plan_walkers(3, "all", 0, 0)


def test_a_labeller_that_cannot_work_fails_before_the_first_structure(monkeypatch):
    monkeypatch.delenv("APAX_NO_SUCH_VARIABLE", raising=False)
    cp2k = GenericLabeller(
        "ase.calculators.cp2k.CP2K",
        executables=["cp2k_shell_that_is_not_installed"],
        environment=["APAX_NO_SUCH_VARIABLE"],
    )
    with pytest.raises(LabellerError, match=r"cp2k_shell_that_is_not_installed.*APAX_NO_SUCH"):
        cp2k.get_calculator()
    with pytest.raises(LabellerError, match="cannot import"):
        GenericLabeller("ase.calculators.nothing.Nothing").get_calculator()


def test_xtb_labels_a_molecule_with_forces_equal_to_finite_differences():
    pytest.importorskip("tblite", reason="the [xtb] extra (tblite) is not installed")
    from apax_core.labelling import XTBLabeller, label

    water = molecule("H2O")
    water.positions[0] += [0.0, 0.05, 0.02]  # off equilibrium: forces of order 0.1-1 eV/A
    calc = XTBLabeller().get_calculator()
    out = label(water, calc)
    forces, h = out.get_forces(), 1e-4
    fd = np.zeros_like(forces)
    for i in range(len(water)):
        for x in range(3):
            energies = []
            for sign in (1, -1):
                moved = water.copy()
                moved.positions[i, x] += sign * h
                energies.append(label(moved, calc).get_potential_energy())
            fd[i, x] = -(energies[0] - energies[1]) / (2 * h)
    assert np.abs(forces).max() > 0.05
    np.testing.assert_allclose(forces, fd, atol=1e-4)
    cation = water.copy()
    cation.info["charge"], cation.info["multiplicity"] = 1, 2
    assert label(cation, calc).get_potential_energy() > out.get_potential_energy() + 5.0  # ~IP


def test_the_documented_slurm_cluster_is_a_valid_jobqueue_config():
    """Constructed, never submitted (there is no SLURM here): its job script says what a
    researcher would check before scaling it."""
    pytest.importorskip("dask_jobqueue", reason="the [dask] extra is not installed")
    import importlib.util

    path = Path(__file__).parents[1] / "example_project" / "slurm.py"
    spec = importlib.util.spec_from_file_location("slurm_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cluster = module.slurm_cluster(queue="gpu", walltime="01:00:00")
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p gpu", "#SBATCH -t 01:00:00", "#SBATCH --exclusive", "module load"):
        assert line in script
    assert "distributed.cli.dask_worker" in script or "dask worker" in script


def test_reference_md_keeps_labelled_frames_of_a_thermalised_run():
    """Reference MD runs the labeller itself: every kept frame carries the labeller's energy and
    forces at its own positions, frames differ, and the run is reproducible from its seed."""
    from ase.calculators.emt import EMT

    atoms = bulk("Cu", cubic=True).repeat(2)

    def run(seed):
        rng = np.random.default_rng(seed)
        return reference_md(atoms, EMT(), (600.0, 0.02), 2.0, 40, 10, rng)

    frames = run(0)
    assert len(frames) == 4
    for f in frames:
        fresh = f.copy()
        fresh.calc = EMT()
        assert f.get_potential_energy() == pytest.approx(fresh.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(f.get_forces(), fresh.get_forces(), atol=1e-10)
    assert not np.allclose(frames[0].positions, frames[-1].positions)
    np.testing.assert_array_equal(run(0)[-1].positions, frames[-1].positions)
