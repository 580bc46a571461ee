"""Behaviour of the data pipeline: files, labels, neighbour lists, batching, statistics."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from apax_core.config import PadBinned, PadToMax
from apax_core.data import (
    DataError,
    Dataset,
    Structure,
    check_labels,
    energy_shift,
    force_scale,
    from_atoms,
    neighbour_list,
    prefetch,
    read_frames,
    species_index,
    write_frames,
)

CU, AG = 29, 47


# -------------------------------------------------------------------------------------- fixtures


def labelled(atoms: Atoms) -> Atoms:
    """``atoms`` with EMT energy, forces and stress frozen in a SinglePointCalculator."""
    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        results["stress"] = atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


@pytest.fixture
def cu_vacancy() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    del atoms[5]
    atoms.rattle(0.05, seed=1)
    return labelled(atoms)


@pytest.fixture
def cu_single() -> Atoms:
    return labelled(bulk("Cu", "fcc", a=3.61))


@pytest.fixture
def cu_ag() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True) * (2, 1, 1)
    atoms.numbers[[1, 4, 6]] = AG
    atoms.rattle(0.05, seed=2)
    return labelled(atoms)


@pytest.fixture
def slab() -> Atoms:
    atoms = fcc111("Cu", size=(2, 2, 3), a=3.61, vacuum=4.0)
    del atoms.info["adsorbate_info"]  # a dict of arrays: not storable in H5MD
    atoms.rattle(0.05, seed=3)
    return labelled(atoms)


@pytest.fixture
def methane() -> Atoms:
    atoms = molecule("CH4")
    atoms.rattle(0.02, seed=4)
    return labelled(atoms)


# --------------------------------------------------------------------------- neighbour lists


def brute_force_pairs(s: Structure, cutoff: float) -> set[tuple]:
    """Every (i, j, offset) within ``cutoff`` by enumerating image shifts explicitly."""
    zero = ~s.cell.any(axis=1)
    cell = np.where(zero[:, None], np.eye(3), s.cell)  # stand-in rows for zero vectors
    ranges = []
    for axis in range(3):
        if s.pbc[axis]:
            spacing = 1.0 / np.linalg.norm(np.linalg.inv(cell)[:, axis])  # lattice-plane distance
            n = int(np.ceil(cutoff / spacing)) + 1
            ranges.append(range(-n, n + 1))
        else:
            ranges.append(range(1))
    pairs = set()
    for shift in itertools.product(*ranges):
        offset = np.asarray(shift, float) @ s.cell
        d = s.positions[None, :, :] - s.positions[:, None, :] + offset
        for i, j in zip(*np.nonzero(np.linalg.norm(d, axis=-1) <= cutoff), strict=True):
            if i != j or any(shift):
                pairs.add((int(i), int(j), *np.round(offset, 6)))
    return pairs


def pair_set(nl) -> set[tuple]:
    return {
        (int(i), int(j), *np.round(o, 6))
        for i, j, o in zip(nl.idx_i, nl.idx_j, nl.offsets, strict=True)
    }


@pytest.mark.parametrize(
    ("name", "cutoff"),
    [("cu_vacancy", 4.0), ("cu_single", 5.0), ("slab", 4.5), ("methane", 1.5), ("cu_ag", 3.3)],
)
def test_neighbour_list_matches_brute_force(request, name, cutoff):
    s = from_atoms(request.getfixturevalue(name))
    nl = neighbour_list(s, cutoff)
    expected = brute_force_pairs(s, cutoff)
    assert expected, "test system must have neighbours"
    assert pair_set(nl) == expected
    assert len(pair_set(nl)) == nl.n_pairs  # no duplicates
    r = s.positions[nl.idx_j] - s.positions[nl.idx_i] + nl.offsets
    assert np.all(np.linalg.norm(r, axis=1) <= cutoff)


def test_small_cell_pairs_with_own_images(cu_single):
    nl = neighbour_list(from_atoms(cu_single), 5.0)
    assert np.all(nl.idx_i == nl.idx_j)  # one atom: every neighbour is an image of itself
    assert np.all(np.linalg.norm(nl.offsets, axis=1) > 0)
    assert nl.n_pairs == 12 + 6 + 24  # fcc shells within 5 A of a = 3.61


def test_mixed_pbc_with_zero_vacuum_axis():
    atoms = fcc111("Cu", size=(2, 2, 2), a=3.61)  # no vacuum: zero third cell vector
    atoms.pbc = [True, True, False]
    s = from_atoms(atoms)
    assert not s.cell[2].any()
    nl = neighbour_list(s, 4.0)
    assert pair_set(nl) == brute_force_pairs(s, 4.0)
    assert not nl.offsets[:, 2].any()


# ------------------------------------------------------------------------------------- files


@pytest.mark.parametrize("suffix", [".extxyz", ".h5"])
def test_round_trip_preserves_structures_and_labels(tmp_path, suffix, cu_vacancy, methane, slab):
    frames = [cu_vacancy, methane, slab]
    path = tmp_path / f"frames{suffix}"
    write_frames(path, frames)
    back = read_frames(path)
    assert len(back) == len(frames)
    assert not list(tmp_path.glob(".*tmp"))  # temporary file renamed away
    for original, read in zip(frames, back, strict=True):
        a, b = from_atoms(original), from_atoms(read)
        np.testing.assert_array_equal(a.Z, b.Z)
        np.testing.assert_allclose(b.positions, a.positions, atol=1e-8)
        np.testing.assert_allclose(b.cell, a.cell, atol=1e-8)
        np.testing.assert_array_equal(b.pbc, a.pbc)
        assert b.energy == pytest.approx(a.energy, abs=1e-8)
        np.testing.assert_allclose(b.forces, a.forces, atol=1e-8)
        if a.stress is None:
            assert b.stress is None
        else:
            np.testing.assert_allclose(b.stress, a.stress, atol=1e-10)


def test_stress_is_full_symmetric_matrix(cu_vacancy):
    s = from_atoms(cu_vacancy)
    voigt = cu_vacancy.get_stress()
    np.testing.assert_allclose(s.stress, s.stress.T)
    np.testing.assert_allclose(np.diag(s.stress), voigt[:3])
    assert s.stress[1, 2] == voigt[3] and s.stress[0, 2] == voigt[4]
    assert s.stress[0, 1] == voigt[5]


def test_labels_from_info_and_arrays_without_calculator():
    atoms = bulk("Cu", "fcc", a=3.61)
    atoms.info["energy"] = -1.5
    atoms.arrays["forces"] = np.full((1, 3), 0.25)
    s = from_atoms(atoms)
    assert s.energy == -1.5
    np.testing.assert_array_equal(s.forces, [[0.25, 0.25, 0.25]])
    assert s.stress is None


def test_missing_and_empty_files_name_the_path(tmp_path):
    missing = tmp_path / "absent.extxyz"
    with pytest.raises(DataError, match=r"absent\.extxyz: file not found"):
        read_frames(missing)
    for name in ("empty.extxyz", "empty.h5"):
        (tmp_path / name).write_text("")
        with pytest.raises(DataError, match=rf"{name}: contains no structures"):
            read_frames(tmp_path / name)


def test_unreadable_file_names_path_and_cause(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    with pytest.raises(DataError, match=r"bad\.h5: cannot read"):
        read_frames(bad)


# ------------------------------------------------------------------------------------ checks


def test_check_labels_names_file_and_every_offending_index(cu_vacancy, methane):
    bare = from_atoms(Atoms("Cu", positions=[[0, 0, 0]]))
    structures = [from_atoms(cu_vacancy), bare, from_atoms(methane), bare]
    with pytest.raises(DataError) as err:
        check_labels(structures, ["energy", "forces"], "train.extxyz")
    message = str(err.value)
    assert message.startswith("train.extxyz: ")
    assert "structures 1, 3 have no energy" in message
    assert "structures 1, 3 have no forces" in message
    with pytest.raises(DataError, match=r"train\.extxyz: structure 1 has no forces"):
        check_labels(structures[:2], ["forces"], "train.extxyz")
    check_labels(structures[:1], ["energy", "forces", "stress"], "train.extxyz")


def test_unknown_element_error_names_symbol_and_structure(cu_vacancy, cu_ag, methane):
    structures = [from_atoms(a) for a in (cu_vacancy, cu_ag, methane)]
    with pytest.raises(DataError, match=r"element Ag \(first in structure 1\)") as err:
        species_index(structures, [CU, 1, 6])
    assert "Cu" in str(err.value)  # the known elements are listed too
    index = species_index(structures[:2], [AG, CU])
    np.testing.assert_array_equal(index[:3], [1, 1, 1])
    padded = np.array([[CU, AG, 0], [AG, 0, 0]])
    np.testing.assert_array_equal(species_index(padded, [CU, AG]), [[0, 1, 0], [1, 0, 0]])
    with pytest.raises(DataError, match=r"element C \(first in structure 1\)"):
        species_index(np.array([[CU, 0], [6, 0]]), [CU])


# -------------------------------------------------------------------------------- statistics


def synthetic(n_cu: int, n_ag: int, energy: float | None, forces=None) -> Structure:
    n = n_cu + n_ag
    return Structure(
        Z=[CU] * n_cu + [AG] * n_ag,
        positions=np.arange(3 * n, dtype=float).reshape(n, 3),
        cell=np.zeros((3, 3)),
        pbc=[False] * 3,
        energy=energy,
        forces=forces,
    )


def test_energy_shift_recovers_per_element_energies():
    mu = {CU: -3.7, AG: -2.9}
    compositions = [(1, 0), (3, 1), (2, 2), (5, 3), (0, 4), (7, 1)]
    structures = [synthetic(c, a, c * mu[CU] + a * mu[AG]) for c, a in compositions]
    structures.append(synthetic(2, 1, None))  # unlabelled structures are ignored
    np.testing.assert_allclose(energy_shift(structures, [CU, AG]), [mu[CU], mu[AG]], atol=1e-10)
    # One element: the least-squares slope through the origin, sum(n E) / sum(n^2), which
    # weights large structures more than the mean energy per atom does (0.7 % apart here).
    single = [synthetic(n, 0, -3.0 * n + 0.1 * (n % 2)) for n in (1, 2, 3, 4)]
    n, e = np.array([s.n_atoms for s in single]), np.array([s.energy for s in single])
    slope = np.sum(n * e) / np.sum(n**2)
    assert energy_shift(single, [CU])[0] == pytest.approx(slope, rel=1e-12)
    assert slope != pytest.approx(np.mean(e / n), rel=1e-3)


def test_energy_shift_is_finite_for_fixed_ratio():
    structures = [synthetic(n, n, -5.0 * n) for n in (1, 2, 4, 7)]  # always Cu:Ag = 1:1
    shift = energy_shift(structures, [CU, AG])
    assert np.all(np.isfinite(shift)) and np.all(np.abs(shift) < 10)
    np.testing.assert_allclose(shift.sum(), -5.0)  # predicts every energy exactly
    np.testing.assert_allclose(energy_shift(structures, [CU, AG, 1])[2], 0.0)  # absent element


def test_force_scale_is_true_rms():
    f_cu = np.array([[3.0, 4.0, 0.0], [0.0, -3.0, 4.0]])  # |F| = 5 on every atom
    f_ag = np.array([[1.0, 1.0, 1.0]])
    structures = [synthetic(2, 1, 0.0, forces=np.vstack([f_cu, f_ag]))]
    scale = force_scale(structures, [CU, AG, 1])
    assert scale[0] == pytest.approx(np.sqrt(25.0 / 3.0))  # RMS of components, not mean |F|
    assert scale[1] == pytest.approx(1.0)
    assert scale[2] == pytest.approx(np.sqrt((50.0 + 3.0) / 9.0))  # no H: global RMS
    np.testing.assert_array_equal(force_scale([synthetic(1, 1, 0.0)], [CU, AG]), [1.0, 1.0])


# ---------------------------------------------------------------------------------- batching


@pytest.fixture(scope="module")
def mixed_dataset() -> Dataset:
    """60 structures of 1 to 32 atoms (so the progress-bar path runs too)."""
    rng = np.random.default_rng(0)
    shapes = [(1, 1, 1), (2, 1, 1), (1, 1, 2), (2, 2, 1), (2, 2, 2)]
    structures = []
    for k in range(60):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=k % 2 == 0) * shapes[k % len(shapes)]
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms.info["energy"] = float(k)  # the energy label identifies the structure
        structures.append(from_atoms(atoms))
    methane = molecule("CH4")
    methane.info["energy"] = 60.0
    structures.append(from_atoms(methane))
    return Dataset(structures, cutoff=4.0)


def epoch_ids(batches) -> list[int]:
    return [int(e) for b in batches for e in b.energy[b.structure_mask]]


def test_shuffled_epoch_yields_every_structure_once(mixed_dataset):
    ids = epoch_ids(mixed_dataset.batches(8, PadToMax(), shuffle=True, seed=3, epoch=0))
    assert sorted(ids) == list(range(len(mixed_dataset)))
    assert ids != sorted(ids)


def test_shuffle_is_a_pure_function_of_seed_and_epoch(mixed_dataset):
    def order(seed, epoch):
        kw = {"shuffle": True, "seed": seed, "epoch": epoch}
        return epoch_ids(mixed_dataset.batches(8, PadToMax(), **kw))

    assert order(3, 1) == order(3, 1)
    assert order(3, 1) != order(3, 2)
    assert order(3, 1) != order(4, 1)
    unshuffled = epoch_ids(mixed_dataset.batches(8, PadToMax(), shuffle=False, seed=0))
    assert unshuffled == list(range(61))


def test_padding_rows_and_slots_are_masked(mixed_dataset):
    batches = list(mixed_dataset.batches(8, PadToMax(), shuffle=True, seed=0))
    assert len(batches) == mixed_dataset.n_batches(8) == 8
    assert len({(b.Z.shape, b.idx_j.shape) for b in batches}) == 1  # PadToMax: one shape
    last = batches[-1]
    empty = ~last.structure_mask
    assert empty.sum() == 8 * 8 - len(mixed_dataset)
    assert not last.atom_mask[empty].any() and not last.pair_mask[empty].any()
    assert not last.Z[empty].any() and not last.n_atoms[empty].any()
    for b in batches:
        assert np.array_equal(b.atom_mask, b.Z > 0)
        assert np.array_equal(b.atom_mask.sum(axis=1), b.n_atoms)
        assert not b.idx_j[~b.pair_mask].any()
        assert not b.offsets[~b.pair_mask].any() and not b.forces[~b.atom_mask].any()
        assert not b.pair_mask[~b.atom_mask].any()  # padded atoms have no neighbours
        owner = np.broadcast_to(b.n_atoms[:, None, None], b.idx_j.shape)[b.pair_mask]
        assert np.all(b.idx_j[b.pair_mask] < owner)
    dropped = list(mixed_dataset.batches(8, PadToMax(), shuffle=True, seed=0, drop_last=True))
    assert len(dropped) == mixed_dataset.n_batches(8, drop_last=True) == 7
    assert all(b.structure_mask.all() for b in dropped)


def test_binned_padding_gives_few_bin_multiple_shapes(mixed_dataset):
    padding = PadBinned(atom_bin=16, neighbour_bin=8)
    shapes = set()
    for epoch in range(3):
        for b in mixed_dataset.batches(4, padding, shuffle=True, seed=0, epoch=epoch):
            n, k = b.idx_j.shape[1:]
            assert n % 16 == 0 and k % 8 == 0
            assert n >= b.n_atoms.max() and k >= b.pair_mask.sum(axis=2).max()
            shapes.add((n, k))
    assert len(shapes) <= 4


def test_pad_to_max_rounds_neighbours_so_a_grown_set_keeps_its_shape():
    from apax_core.data import pad_sizes

    pad = PadToMax()  # neighbour_bin 8
    assert pad_sizes([31, 31], [37, 41], pad) == (31, 48)
    assert pad_sizes([31, 31, 31], [37, 41, 45], pad) == (31, 48)  # one more, same shape
    assert pad_sizes([31, 31, 31], [37, 41, 49], pad) == (31, 56)  # a denser one: next bin
    assert pad_sizes([31, 31], [37, 41], PadToMax(neighbour_bin=1)) == (31, 41)


def test_dense_neighbours_hold_exactly_the_neighbour_list(mixed_dataset):
    b = next(mixed_dataset.batches(4, PadToMax(), shuffle=False, seed=0))
    for row in range(4):
        nl = mixed_dataset.neighbour_lists[row]
        expected = {
            (int(i), int(j), tuple(np.round(o, 8)))
            for i, j, o in zip(nl.idx_i, nl.idx_j, nl.offsets, strict=True)
        }
        i, k = np.nonzero(b.pair_mask[row])
        got = {
            (int(a), int(b.idx_j[row, a, c]), tuple(np.round(b.offsets[row, a, c], 8)))
            for a, c in zip(i, k, strict=True)
        }
        assert got == expected


def test_subset_reuses_neighbour_lists(mixed_dataset):
    sub = mixed_dataset.subset([5, 2])
    assert len(sub) == 2
    assert sub.neighbour_lists[0] is mixed_dataset.neighbour_lists[5]
    assert epoch_ids(sub.batches(2, PadToMax(), shuffle=False, seed=0)) == [5, 2]


# ---------------------------------------------------------------------------------- prefetch


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "apax-prefetch" and t.is_alive()]


@pytest.mark.parametrize("size", [0, 1, 3])
def test_prefetch_yields_the_same_sequence(size):
    assert list(prefetch(iter(range(20)), size)) == list(range(20))


def test_prefetch_reraises_worker_exception():
    def failing():
        yield 1
        yield 2
        raise RuntimeError("boom in worker")

    seen = []
    with pytest.raises(RuntimeError, match="boom in worker"):
        for item in prefetch(failing(), 2):
            seen.append(item)
    assert seen == [1, 2]


def test_prefetch_stops_worker_when_consumer_breaks():
    closed = threading.Event()

    def endless():
        try:
            yield from itertools.count()
        finally:
            closed.set()

    stream = prefetch(endless(), 2)
    for item in stream:
        if item == 3:
            break
    stream.close()
    assert closed.wait(2.0)  # the source was closed by the worker
    deadline = time.monotonic() + 2.0
    while prefetch_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not prefetch_threads()


def _relabel(atoms: Atoms) -> Atoms:
    atoms.calc = EMT()
    results = {k: atoms.calc.get_property(k, atoms) for k in ("energy", "forces", "stress")}
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


@pytest.fixture(scope="module")
def screened_frames():
    """20 plausible rattled cells; frame 4 with two atoms 0.2 A apart (EMT labels it with huge
    forces), frame 11 with an energy 5 eV/atom off (a labeller's bad reference)."""
    from conftest import emt_frames

    frames = emt_frames(20, seed=3, rattle=0.1)
    close = frames[4].copy()
    close.positions[1] = close.positions[2] + [0.2, 0.0, 0.0]
    frames[4] = _relabel(close)
    bad = frames[11]
    bad.calc.results["energy"] += 5.0 * len(bad)
    return frames


def test_screening_flags_exactly_the_implausible_frames(screened_frames):
    from apax_core.config import Screening
    from apax_core.data.screening import implausible

    structures = [from_atoms(a) for a in screened_frames]
    flagged = implausible(structures, Screening())
    assert sorted(flagged) == [4, 11]
    assert "closer than 0.5 A" in flagged[4] and "largest force" in flagged[4]
    assert "energy per atom" in flagged[11]
    # the plausible frames alone: nothing flagged (no false alarms on thermal disorder)
    clean = [s for k, s in enumerate(structures) if k not in (4, 11)]
    assert implausible(clean, Screening()) == {}


def test_screening_actions_drop_keep_error(screened_frames):
    from apax_core.config import Screening
    from apax_core.data.screening import screen

    structures = [from_atoms(a) for a in screened_frames]
    kept, flagged = screen(structures, Screening(action="drop"), "train.xyz")
    assert len(kept) == 18 and sorted(flagged) == [4, 11]
    assert all(s is not structures[4] and s is not structures[11] for s in kept)
    kept, flagged = screen(structures, Screening(action="keep"), "train.xyz")
    assert len(kept) == 20 and sorted(flagged) == [4, 11]
    with pytest.raises(DataError, match=r"train.xyz: implausible structures 4 \(atoms closer"):
        screen(structures, Screening(action="error"), "train.xyz")


def test_an_overlapping_frame_no_longer_inflates_the_force_scale(screened_frames):
    """Before screening, one 0.2 A pair among 20 frames multiplied the per-element scale."""
    from apax_core.config import TrainConfig
    from apax_core.train.data import load_training_data

    def scale(action, frames):
        spec = TrainConfig.model_validate(
            {"n_epochs": 1, "data": {"screening": {"action": action}}}
        )
        val = [from_atoms(a) for a in clean[:4]]
        data = load_training_data(spec, [from_atoms(a) for a in frames], val)
        return data.stats.scale[0], data.flagged

    clean = [a for k, a in enumerate(screened_frames) if k not in (4, 11)]
    reference, _ = scale("drop", clean)
    dropped, flagged = scale("drop", screened_frames)
    kept, _ = scale("keep", screened_frames)
    assert sorted(flagged["training data"]) == [4, 11]
    assert dropped == pytest.approx(reference)
    assert kept > 20 * reference  # 77x with EMT's 2.4 keV/A at 0.2 A


def test_a_molecular_box_has_its_density_whole_molecules_and_no_close_contacts():
    from ase.build import molecule
    from ase.neighborlist import neighbor_list

    from apax_core.data.liquids import molecular_box
    from apax_core.errors import InputError

    box = molecular_box("H2O", 16, 0.997, seed=3, min_distance=1.8)
    grams = box.get_masses().sum() / 6.02214076e23
    assert grams / (box.get_volume() * 1e-24) == pytest.approx(0.997, rel=1e-9)
    template = molecule("H2O").get_all_distances()
    for m in range(16):  # rigid copies, unwrapped
        assert np.allclose(box[3 * m : 3 * m + 3].get_all_distances(), template)
    i, j, d = neighbor_list("ijd", box, 1.8)  # through periodic images too
    assert np.all(i // 3 == j // 3), "atoms of different molecules closer than 1.8 A"
    assert np.array_equal(molecular_box("H2O", 16, 0.997, seed=3).positions, box.positions)
    with pytest.raises(InputError, match="no room for molecule"):
        molecular_box("H2O", 16, 3.0, min_distance=2.5)


def test_rdf_is_one_for_an_ideal_gas_and_peaks_at_the_fcc_neighbour_distance():
    from ase.build import bulk

    from apax_core.errors import InputError
    from apax_core.liquid import density, first_peak, rdf

    rng = np.random.default_rng(0)
    gas = [
        Atoms("Ar" * 200, rng.uniform(0, 12.0, (200, 3)), cell=[12.0] * 3, pbc=True)
        for _ in range(20)
    ]
    r, g = rdf(gas, "Ar", "Ar", 6.0, n_bins=12)
    assert np.allclose(g[2:], 1.0, atol=0.1), g  # inner bins hold too few pairs to average
    crystal = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    r, g = rdf([crystal], "Cu", "Cu", 5.0, n_bins=250)
    assert first_peak(r, g)[0] == pytest.approx(3.61 / np.sqrt(2), abs=0.02)
    assert density(crystal) == pytest.approx(4 * 63.546 / 6.02214076e23 / 3.61**3 * 1e24)
    with pytest.raises(InputError, match="exceeds half the cell's smallest height"):
        rdf([crystal], "Cu", "Cu", 6.0)
