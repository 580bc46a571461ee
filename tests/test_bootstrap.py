"""Bootstrap copies: the plain draw is pinned; the bounded copies stay under a force ceiling of
the reference by shrinking along the same random direction; bad input fails before labelling."""

from __future__ import annotations

import numpy as np
import pytest
import zntrack
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import Calculator
from test_nodes import init_repo, inside, repro

import apax_nodes as an
from apax_core.config import Processes
from apax_core.data import sampling
from apax_core.data.sampling import bootstrap, bootstrap_metrics, bounded_bootstrap, largest_force
from apax_core.errors import InputError
from apax_core.labelling import EMTLabeller
from apax_nodes.project import build


def cu_cell() -> Atoms:
    return bulk("Cu", cubic=True) * (2, 2, 2)


def test_a_float_rattle_draws_what_it_always_drew():
    """The default loop's dvc.lock depends on these frames: strain e ~ U(-s, s) (3, 3), then
    N(0, rattle) displacements, copy after copy from one generator."""
    seeds = [cu_cell(), molecule("H2O")]
    frames = bootstrap(seeds, 3, 0.1, 0.02, seed=7)
    rng = np.random.default_rng(7)
    for k, frame in enumerate(frames):
        seed = seeds[k % 2]
        cell = seed.cell.array
        if seed.pbc.any():
            e = rng.uniform(-0.02, 0.02, size=(3, 3))
            cell = cell @ (np.eye(3) + 0.5 * (e + e.T))
            expected = seed.get_scaled_positions() @ cell
        else:
            expected = seed.positions.copy()
        expected += rng.normal(scale=0.1, size=(len(seed), 3))
        np.testing.assert_allclose(frame.cell.array, cell, rtol=0, atol=1e-12)
        np.testing.assert_allclose(frame.positions, expected, rtol=0, atol=1e-12)
    # numpy's PCG64 stream, written down: a change of the generator shows here
    np.testing.assert_allclose(frames[1].positions[0], [-0.06239436, 0.02054039, 0.16856333], 1e-6)


def test_a_per_element_rattle_displaces_each_element_by_its_own_scale():
    rng = np.random.default_rng(0)
    atoms = Atoms("OH2" * 400, positions=rng.uniform(0, 30, (1200, 3)))
    copies = bootstrap([atoms], 3, {"H": 0.03, "O": 0.05}, 0.0, seed=1)
    d = np.stack([c.positions - atoms.positions for c in copies])
    is_h = atoms.numbers == 1
    assert d[:, is_h].std() == pytest.approx(0.03, rel=0.05)
    assert d[:, ~is_h].std() == pytest.approx(0.05, rel=0.05)


def test_bounded_copies_stay_under_the_ceiling_by_shrinking_along_the_same_direction():
    seed = cu_cell()
    plain = bootstrap([seed], 6, 0.05, 0.05, seed=3)
    frames, records = bounded_bootstrap(
        [seed], 6, 0.05, 0.05, 3, labeller=EMTLabeller(), max_force=2.0, max_tries=6
    )
    assert len(frames) == 6 and all(largest_force(f) <= 2.0 for f in frames)
    assert [r["largest_force"] for r in records] == [largest_force(f) for f in frames]
    shrunk = [r["index"] for r in records if r["scale"] < 1]
    assert shrunk and len(shrunk) < 6  # the ceiling cuts through this draw
    for r, frame in zip(records, frames, strict=True):
        s, p = r["scale"], plain[r["index"]]
        strain_p = np.linalg.solve(seed.cell.array, p.cell.array) - np.eye(3)
        strain_b = np.linalg.solve(seed.cell.array, frame.cell.array) - np.eye(3)
        np.testing.assert_allclose(strain_b, s * strain_p, atol=1e-12)
        moved = frame.positions - seed.get_scaled_positions() @ frame.cell.array
        np.testing.assert_allclose(
            moved, s * (p.positions - seed.get_scaled_positions() @ p.cell.array), atol=1e-10
        )
        assert r["calls"] == 1 + round(-np.log2(s))
    metrics = bootstrap_metrics(records)
    assert metrics["n_frames"] == 6 and metrics["n_failed"] == 0
    assert metrics["reference_calls"] == sum(r["calls"] for r in records)
    assert metrics["shrunk_share"] == pytest.approx(len(shrunk) / 6)
    assert metrics["largest_force_eV_A"] <= 2.0


def test_bounded_copies_resume_from_their_store_and_run_on_a_pool(tmp_path, monkeypatch):
    """Each copy is a task whose result is stored as it arrives: a rerun after a crash labels
    only the missing copies, and a pool of workers gives the serial run's frames."""
    seeds, kwargs = [cu_cell(), bulk("Cu", a=3.7, cubic=True)], {"max_force": 2.0, "max_tries": 6}
    args = (seeds, 4, 0.05, 0.05, 3)
    serial, records = bounded_bootstrap(
        *args, labeller=EMTLabeller(), store_dir=tmp_path / "s", relax_steps=2, **kwargs
    )
    stored = sorted((tmp_path / "s").glob("copy*.pkl"))
    assert len(stored) == 4 and len(list((tmp_path / "s").glob("relax*.pkl"))) == 2
    for lost in stored[1::2]:  # two copies were not finished when the run died
        lost.unlink()
    calls = []
    original = sampling.bounded_copy
    monkeypatch.setattr(sampling, "bounded_copy", lambda *a: calls.append(1) or original(*a))
    again = bounded_bootstrap(
        *args, labeller=EMTLabeller(), store_dir=tmp_path / "s", relax_steps=2, **kwargs
    )
    assert len(calls) == 2 and again[1] == records
    pool, _ = bounded_bootstrap(
        *args, labeller=EMTLabeller(), executor=Processes(n_workers=2), relax_steps=2, **kwargs
    )
    for frames in (again[0], pool):
        for a, b in zip(frames, serial, strict=True):
            np.testing.assert_array_equal(a.positions, b.positions)
            assert a.get_potential_energy() == b.get_potential_energy()


def test_a_copy_that_never_passes_is_recorded_not_dropped():
    # a calculation that fails counts as a force too large: shrunk, then recorded
    frames, records = bounded_bootstrap(
        [cu_cell(), bulk("Si")], 2, 0.1, 0.0, 0, labeller=EMTLabeller(), max_force=50.0, max_tries=2
    )
    assert len(frames) == 1 and [r["index"] for r in records] == [0, 1]
    assert "error" not in records[0] and records[1]["calls"] == 2
    assert records[1]["largest_force"] is None and records[1]["scale"] == 0.5
    assert records[1]["error"] == "NotImplementedError: No EMT-potential for Si"
    assert bootstrap_metrics(records)["n_failed"] == 1
    # no copy at all: an error that says what to do, not an empty training set downstream
    with pytest.raises(InputError, match=r"none of 2 copies .* \(relax_steps\)"):
        bounded_bootstrap(
            [cu_cell()], 2, 0.1, 0.0, 0, labeller=EMTLabeller(), max_force=1e-6, max_tries=3
        )


def test_seeds_far_from_equilibrium_are_relaxed_first():
    """A random liquid box starts above any force ceiling (16 H2O under xTB: 6 eV/A at scale
    1/8); relax_steps relaxes each seed under the reference before it is copied."""
    seed = cu_cell()
    seed.positions[0] += [0.6, 0.0, 0.0]
    kwargs = {"labeller": EMTLabeller(), "max_force": 1.0, "max_tries": 2}
    with pytest.raises(InputError, match="none of 3 copies"):
        bounded_bootstrap([seed], 3, 0.01, 0.0, 0, **kwargs)
    frames, records = bounded_bootstrap([seed], 3, 0.01, 0.0, 0, relax_steps=100, **kwargs)
    assert len(frames) == 3 and all(largest_force(f) <= 1.0 for f in frames)


class NeverCalled(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, *args, **kwargs):
        raise AssertionError("labelled before the input was checked")


class NeverLabels:
    def get_calculator(self, **kwargs):
        return NeverCalled()


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"rattle": -0.1}, "rattle"),
        ({"rattle": {"H": 0.03, "Xx": 0.05}}, "rattle"),
        ({"rattle": {"H": 0.03, "O": -0.05}}, "rattle"),
        ({"rattle": {"H": 0.03}}, "rattle"),  # no entry for O
        ({"strain": -0.01}, "strain"),
        ({"max_force": 0.0}, "max_force"),
        ({"max_tries": 0}, "max_tries"),
    ],
)
def test_bad_input_names_its_field_before_any_label(kwargs, field):
    args = {"rattle": 0.05, "strain": 0.0, "max_force": 5.0, "max_tries": 3} | kwargs
    with pytest.raises(InputError, match=field):
        bounded_bootstrap(
            [molecule("H2O")],
            2,
            args["rattle"],
            args["strain"],
            0,
            labeller=NeverLabels(),
            max_force=args["max_force"],
            max_tries=args["max_tries"],
        )


def test_the_nodes_check_their_params_when_the_graph_is_built(tmp_path):
    with inside(tmp_path), zntrack.Project():
        with pytest.raises(InputError, match="rattle"):
            an.Bootstrap(data=[molecule("H2O")], rattle={"Hx": 0.1})
        with pytest.raises(InputError, match="max_force"):
            an.BoundedBootstrap(data=[molecule("H2O")], labeller=an.EMTLabeller(), max_force=-1)


def test_bounded_bootstrap_node_writes_labelled_frames_and_its_records(tmp_path):
    root = init_repo(tmp_path / "p")
    with inside(root):
        project = zntrack.Project()
        with project:
            cell = an.BuildBulk(element="Cu", a=3.6, repeat=[2, 2, 2])
            an.BoundedBootstrap(
                data=cell.frames,
                labeller=an.EMTLabeller(),
                n=4,
                rattle={"Cu": 0.25},
                max_force=2.0,
                max_tries=6,
            )
        build(project)
        repro(root)
        node = zntrack.from_rev("BoundedBootstrap")
        frames, copies, metrics = node.frames, node.copies, node.metrics
    assert len(frames) == 4 and [c["index"] for c in copies] == [0, 1, 2, 3]
    assert all(np.linalg.norm(f.get_forces(), axis=1).max() <= 2.0 for f in frames)
    assert metrics["n_frames"] == 4 and metrics["n_failed"] == 0
    assert metrics["reference_calls"] == sum(c["calls"] for c in copies)
