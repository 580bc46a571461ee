"""Labelling that uses the machine and says what it did: a worker's calculator is built once and
labels every structure as a new one would (xTB to 1e-8 eV); stress only where asked; worker
threads set so that workers x threads = cores; reference MD with an unsampled equilibration;
every labelled frame records its labeller, through H5MD, into a model's ``labellers.json`` and
mlipx's ``get_spec()``."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import fsspec
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from pydantic import TypeAdapter
from workers import thread_settings

from apax_core.config import Executor
from apax_core.errors import InputError
from apax_core.labelling import (
    EMTLabeller,
    LJLabeller,
    XTBLabeller,
    label,
    label_frames,
    label_task,
    labeller_counts,
    read_labellers,
    reference_md,
    worker_calculator,
    write_labellers,
)
from apax_core.tasks import TaskStore, run_tasks
from apax_core.threads import THREAD_VARIABLES, cores
from apax_nodes.frames import read_h5, write_h5
from apax_nodes.model import ModelNode


def waters():
    """Two water geometries off equilibrium, a cation of one, and two waters in a 6 A cell."""
    bent, stretched = molecule("H2O"), molecule("H2O")
    bent.positions[1] += [0.0, 0.08, 0.05]
    stretched.positions[2] *= 1.1
    cation = stretched.copy()
    cation.info["charge"], cation.info["multiplicity"] = 1, 2
    pair = molecule("H2O")
    pair.extend(molecule("H2O"))
    pair.positions[3:] += [2.9, 0.2, 0.1]
    pair.cell, pair.pbc = [6.0, 6.0, 6.0], True
    return [bent, stretched, cation, pair]


def test_a_reused_xtb_calculator_labels_every_structure_as_a_new_one_would():
    """One calculator for a sequence (tblite's kept across the two neutral waters, rebuilt for
    the cation and the cell) against a new calculator per structure and against tblite's own
    ASE calculator: equal to 1e-8 eV (the SCF never starts from the last structure)."""
    pytest.importorskip("tblite", reason="the [xtb] extra (tblite) is not installed")
    from tblite.ase import TBLite

    frames, reused = waters(), XTBLabeller().get_calculator()
    sequence = [label(atoms, reused) for atoms in frames]
    fresh = [label(atoms, XTBLabeller().get_calculator()) for atoms in frames]
    for a, b in zip(sequence, fresh, strict=True):
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-8)
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), rtol=0, atol=1e-8)
    np.testing.assert_allclose(sequence[-1].get_stress(), fresh[-1].get_stress(), atol=1e-10)
    assert sequence[2].get_potential_energy() > sequence[1].get_potential_energy() + 5.0  # ~IP
    theirs = TBLite(method="GFN2-xTB", verbosity=0)
    theirs.calculate(frames[-1].copy(), ["energy", "forces", "stress"])
    assert sequence[-1].get_potential_energy() == pytest.approx(theirs.results["energy"], abs=1e-8)
    np.testing.assert_allclose(sequence[-1].get_forces(), theirs.results["forces"], atol=1e-8)
    np.testing.assert_allclose(sequence[-1].get_stress(), theirs.results["stress"], atol=1e-10)
    kept = reused._xtb
    label(frames[-1].copy(), reused)  # the same system again: the same tblite calculator
    assert reused._xtb is kept


def test_a_worker_builds_one_calculator_per_labeller_settings():
    first = worker_calculator(LJLabeller(sigma=2.0))
    assert worker_calculator(LJLabeller(sigma=2.0)) is first  # an equal labeller, unpickled anew
    assert worker_calculator(LJLabeller(sigma=2.5)) is not first  # other settings, another one
    held = worker_calculator(LJLabeller(sigma=2.5))
    overlapping = Atoms("Ar2", positions=np.zeros((2, 3)))  # an infinite energy
    with np.errstate(all="ignore"):
        assert "error" in label_task((LJLabeller(sigma=2.5), overlapping, True))
    assert worker_calculator(LJLabeller(sigma=2.5)) is not held  # a failure drops the calculator


def test_stress_only_where_asked(tmp_path):
    cells = [bulk("Cu", cubic=True) for _ in range(2)]
    cells[1].rattle(0.05, seed=1)
    serial = TypeAdapter(Executor).validate_python({"kind": "serial"})
    with_stress, _ = label_frames(EMTLabeller(), cells, serial, tmp_path / "a")
    without, _ = label_frames(EMTLabeller(), cells, serial, tmp_path / "a", stress=False)
    assert all("stress" in f.calc.results for f in with_stress)
    assert not any("stress" in f.calc.results for f in without)  # not reused from the store
    assert "stress" not in label(molecule("H2O"), EMT()).calc.results  # never for molecules
    pytest.importorskip("tblite", reason="the [xtb] extra (tblite) is not installed")
    pair, calc = waters()[-1], XTBLabeller().get_calculator()
    pair.calc = calc
    pair.get_forces()
    assert "stress" not in calc.results  # energy and forces asked: no stress computed
    assert label(pair, calc, stress=False).calc.results.keys() == {"energy", "forces"}


@pytest.mark.parametrize("kind", ["processes", "dask"])
def test_each_worker_gets_its_share_of_the_cores_as_threads(kind, tmp_path):
    def seen(**fields):
        config = TypeAdapter(Executor).validate_python({"kind": kind, "n_workers": 2, **fields})
        store = TaskStore(tmp_path / json.dumps(fields))
        return run_tasks(thread_settings, [0, 1], ["a", "b"], config, store)

    share = str(max(1, cores() // 2))  # workers x threads = cores
    assert seen() == [dict.fromkeys(THREAD_VARIABLES, share)] * 2
    assert {s["OMP_NUM_THREADS"] for s in seen(threads_per_worker=3)} == {"3"}


def test_reference_md_equilibrates_before_it_samples():
    """The same seed with 20 steps of equilibration keeps the frames of the run without
    equilibration after its first 20 steps: the extra steps run, unsampled. The centre of mass
    stays put without ASE's deprecated fixcm, and the labels carry no constraint."""
    atoms = bulk("Cu", cubic=True).repeat(2)

    def run(n_steps, n_equilibration):
        rng = np.random.default_rng(3)
        return reference_md(atoms, EMT(), (600.0, 0.02), 2.0, n_steps, 10, rng, n_equilibration)

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no fixcm warning
        equilibrated, plain = run(40, 20), run(60, 0)
    assert len(equilibrated) == 4 and len(plain) == 6
    for a, b in zip(equilibrated, plain[2:], strict=True):
        np.testing.assert_array_equal(a.positions, b.positions)
    for frame in equilibrated:
        assert not frame.constraints
        np.testing.assert_allclose(frame.get_center_of_mass(), atoms.get_center_of_mass())
        fresh = frame.copy()
        fresh.calc = EMT()
        np.testing.assert_allclose(frame.get_forces(), fresh.get_forces(), atol=1e-10)
    assert len(run(40, 25)) == 4  # an equilibration that is no multiple of the sampling rate


def test_reference_md_moves_heavier_atoms_less_and_keeps_standard_masses():
    """Masses for the dynamics only: with copper four times heavier the same seed moves the
    atoms about half as far in the first steps (v ~ 1/sqrt(m)), and the frames carry the
    standard masses; an unknown element fails before any step."""
    atoms = bulk("Cu", cubic=True).repeat(2)

    def shift(masses):
        rng = np.random.default_rng(5)
        (frame,) = reference_md(atoms, EMT(), (600.0, 0.0), 1.0, 4, 4, rng, 0, masses)
        np.testing.assert_allclose(frame.get_masses(), atoms.get_masses())
        return np.linalg.norm(frame.positions - atoms.positions, axis=1).mean()

    ratio = shift({"Cu": 4 * 63.546}) / shift(None)
    assert 0.4 < ratio < 0.6, ratio
    with pytest.raises(InputError, match="masses: .*'Xx'"):
        reference_md(atoms, EMT(), (600.0, 0.0), 1.0, 4, 4, np.random.default_rng(0), 0, {"Xx": 1})


def local_node(**fields):
    return SimpleNamespace(state=SimpleNamespace(fs=fsspec.filesystem("file")), **fields)


def test_labelled_frames_record_their_labeller_through_h5md(tmp_path):
    cells = [bulk("Cu", cubic=True), bulk("Cu", cubic=True).repeat((2, 1, 1))]
    serial = TypeAdapter(Executor).validate_python({"kind": "serial"})
    labelled, _ = label_frames(LJLabeller(sigma=2.3), cells, serial, tmp_path / "store")
    unrecorded = label(bulk("Cu", cubic=True), EMT())  # labelled elsewhere
    write_h5(tmp_path / "frames.h5", [unrecorded, *labelled])
    back = read_h5(local_node(), tmp_path / "frames.h5")
    counts = labeller_counts(back)
    assert [c["n_frames"] for c in counts] == [2, 1] and counts[1]["labeller"] == "unknown"
    record = counts[0]["labeller"]
    assert (record["method"], record["code"], record["settings"]["sigma"]) == (
        "Lennard-Jones",
        "ase",
        2.3,
    )
    assert record["version"]  # the installed ASE's
    write_labellers(tmp_path / "model", back)
    assert read_labellers(tmp_path / "model") == counts
    assert read_labellers(tmp_path / "nothing") is None


class FakeModel(ModelNode):
    def __init__(self, model_dir):
        self.model_dir, self.state = model_dir, SimpleNamespace(rev=None, remote=None)


def test_get_spec_names_the_reference_method_of_the_training_data(tmp_path):
    xtb = {"method": "GFN2-xTB", "code": "tblite", "version": "0.8.0", "settings": {}}
    emt = {"method": "EMT", "code": "ase", "version": "3.29.0", "settings": {}}
    vasp = {
        "method": "ase.calculators.vasp.Vasp",
        "code": "ase",
        "version": "3.29.0",
        "settings": {"xc": "PBE"},
    }

    def spec(*records):
        model_dir = tmp_path / str(len(list(tmp_path.iterdir())))
        model_dir.mkdir()
        counts = [{"labeller": r, "n_frames": 4} for r in records]
        (model_dir / "labellers.json").write_text(json.dumps(counts))
        return FakeModel(model_dir).get_spec()

    assert spec(xtb)["data"] == {
        "type": "DFT",
        "code": "other",
        "code_version": "tblite 0.8.0",
        "method": {"functional": "GFN2-xTB"},
    }
    assert spec(vasp)["data"]["code"] == "VASP"
    assert spec(vasp)["data"]["method"] == {"functional": "PBE"}
    mixed = spec(xtb, emt, "unknown")
    assert mixed["data"]["method"]["functional"] == "EMT + GFN2-xTB + unknown"  # never one
    assert mixed["metadata"]["description"].startswith("several labellers")
    assert spec("unknown") is None  # nothing known about the data
    assert FakeModel(tmp_path / "old").get_spec() is None  # a model without a record


def test_the_nodes_are_discoverable_through_the_zntrack_entry_point():
    from importlib.metadata import entry_points

    import zntrack

    import apax_nodes

    (entry,) = [e for e in entry_points(group="zntrack.nodes") if e.name == "apax_nodes"]
    groups = entry.load()()
    assert set(groups) == {"apax_nodes"} and "Train" in groups["apax_nodes"]
    for name in groups["apax_nodes"]:
        assert issubclass(getattr(apax_nodes, name), zntrack.Node), name
