"""The image neighbour list of the MD engine against vesin (an independent reference): small
cells that pair atoms with their own images, a water box below the minimum-image size,
triclinic cells, a slab, a molecule; updates under moves, drift and strain; overflow."""

from __future__ import annotations

import ase
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import vesin
from ase.build import bulk, fcc111, molecule
from conftest import make_model
from scipy.spatial.transform import Rotation

from apax_core.calculator import ApaxCalculator
from apax_core.md import image_neighbours as im
from apax_core.precision import x64
from apax_core.predictor import predictor


@pytest.fixture(autouse=True)
def _x64():
    with x64():
        yield


def water_box(n_molecules: int = 16, length: float = 7.8, seed: int = 0) -> ase.Atoms:
    """Randomly placed and rotated water molecules in a cubic box, O-O at least 2.5 A apart."""
    rng = np.random.default_rng(seed)
    h2o = molecule("H2O").positions - molecule("H2O").positions[0]
    oxygens: list[np.ndarray] = []
    while len(oxygens) < n_molecules:
        x = rng.uniform(0, length, 3)
        d = np.array(oxygens).reshape(-1, 3) - x
        d -= length * np.round(d / length)
        if np.all(np.linalg.norm(d, axis=1) > 2.5):
            oxygens.append(x)
    positions = [o + Rotation.random(random_state=rng).apply(h2o) for o in oxygens]
    return ase.Atoms("OH2" * n_molecules, np.concatenate(positions), cell=[length] * 3, pbc=True)


def reference(atoms: ase.Atoms, cutoff: float, positions=None) -> set:
    """vesin's (i, j, shift) within ``cutoff`` (full list)."""
    pbc = np.asarray(atoms.pbc, bool)
    box = atoms.cell.array if pbc.any() else np.zeros((3, 3))
    points = atoms.positions if positions is None else positions
    i, j, shifts = vesin.NeighborList(cutoff=cutoff, full_list=True).compute(
        points=points, box=box, periodic=pbc.tolist(), quantities="ijS"
    )
    return {(a, b, *s) for a, b, s in zip(i.tolist(), j.tolist(), shifts.tolist(), strict=True)}


def listed(nbrs: im.ImageNeighbours, s, cell, r_max: float = np.inf) -> set:
    """The list's (i, j, shift) whose pair vector at (s, cell) is at most ``r_max`` long."""
    r = np.linalg.norm(
        np.asarray(im.pair_vectors(nbrs, jnp.asarray(s), jnp.asarray(cell))), axis=-1
    )
    idx, shift = np.asarray(nbrs.idx), np.asarray(nbrs.shift)
    i, k = np.nonzero((idx < len(idx)) & (r <= r_max))
    pairs = zip(i.tolist(), idx[i, k].tolist(), shift[i, k].tolist(), strict=True)
    return {(a, b, *n) for a, b, n in pairs}


def vectors(nbrs: im.ImageNeighbours, s, cell) -> set:
    """The list's (i, j, pair vector rounded to 1e-6 A)."""
    r = np.round(np.asarray(im.pair_vectors(nbrs, s, cell)), 6)
    idx = np.asarray(nbrs.idx)
    i, k = np.nonzero(idx < len(idx))
    pairs = zip(i.tolist(), idx[i, k].tolist(), r[i, k].tolist(), strict=True)
    return {(a, b, *v) for a, b, v in pairs}


def fractional(atoms: ase.Atoms) -> tuple[jax.Array, jax.Array]:
    """(s (N, 3), cell (3, 3)) in the embedding cell."""
    cell = im.embedding_cell(atoms.cell.array, atoms.pbc)
    return jnp.asarray(atoms.positions @ np.linalg.inv(cell)), jnp.asarray(cell)


def allocate(atoms: ase.Atoms, r_max: float, skin: float, **kwargs):
    s, cell = fractional(atoms)
    fns = im.image_neighbour_list(np.asarray(cell), atoms.pbc, r_max, skin, **kwargs)
    return fns, fns.allocate(s, cell), s, cell


def triclinic(handed: float) -> ase.Atoms:
    cell = np.array([[4.0, 0.0, 0.0], [2.5, 3.5, 0.0], [1.2, -1.7, 3.1 * handed]])
    frac = np.random.default_rng(1).uniform(size=(3, 3))
    return ase.Atoms("CuAgCu", scaled_positions=frac, cell=cell, pbc=True)


def slab(zero_normal: bool) -> ase.Atoms:
    atoms = fcc111("Cu", size=(2, 2, 4), vacuum=10.0)
    if zero_normal:
        atoms.cell[2] = 0.0
    return atoms


SYSTEMS = {
    "fcc_primitive_5.5": (lambda: bulk("Cu"), 5.5),
    "fcc_primitive_6.0": (lambda: bulk("Cu"), 6.0),
    "water_16": (water_box, 6.0),
    "fcc_supercell_minimum_image_alone": (lambda: bulk("Cu", cubic=True).repeat(4), 5.5),
    "triclinic": (lambda: triclinic(1.0), 4.5),
    "triclinic_left_handed": (lambda: triclinic(-1.0), 4.5),
    "slab": (lambda: slab(False), 5.5),
    "slab_zero_normal": (lambda: slab(True), 5.5),
    "molecule": (lambda: molecule("CH3CH2OH"), 3.0),
}


@pytest.mark.parametrize("name", SYSTEMS)
def test_build_equals_vesin(name):
    make, cutoff = SYSTEMS[name]
    atoms = make()
    _, nbrs, s, cell = allocate(atoms, cutoff - 0.5, 0.5)
    assert int(nbrs.error) == 0
    assert listed(nbrs, s, cell) == reference(atoms, cutoff)


def test_fcc_primitive_cell_has_its_78_neighbours_at_the_fcc_shells():
    _, nbrs, s, cell = allocate(bulk("Cu", a=3.6), 5.5, 0.5)
    r = np.sort(np.linalg.norm(np.asarray(im.pair_vectors(nbrs, s, cell))[0], axis=-1))
    shells = 3.6 * np.sqrt([0.5, 1.0, 1.5, 2.0, 2.5])
    assert np.count_nonzero(r) == 78
    np.testing.assert_allclose(r[-78:], np.repeat(shells, [12, 6, 24, 12, 24]), atol=1e-9)


def test_slab_has_no_images_along_its_open_axis():
    _, nbrs, *_ = allocate(slab(False), 5.0, 0.5)
    assert np.all(np.asarray(nbrs.shift)[..., 2] == 0)


def moved(s, cell, displacement):
    """Fractional positions after a Cartesian ``displacement`` (N, 3)."""
    return s + jnp.asarray(displacement) @ jnp.linalg.inv(cell)


def test_small_moves_and_strain_keep_the_list_which_still_covers_r_max():
    atoms, r_max, skin = water_box(), 5.0, 1.0
    fns, nbrs, s, cell = allocate(atoms, r_max, skin)
    rng = np.random.default_rng(2)
    u = rng.normal(size=(len(atoms), 3))
    u *= 0.4 * skin / np.linalg.norm(u, axis=1, keepdims=True)  # 0.4 A < skin / 2
    strain = np.eye(3) + 0.01 * np.array([[1.0, 0.5, 0.0], [0.5, -1.0, 0.2], [0.0, 0.2, 0.5]])
    update = jax.jit(fns.update)
    for new_cell in (cell, cell @ strain):  # bound 0.8 + (||M|| - 1) 5 A < skin
        s_new = moved(s, cell, u)
        kept = update(nbrs, s_new, new_cell)
        for a, b in zip(kept, nbrs, strict=True):
            np.testing.assert_array_equal(a, b)
        positions = np.asarray(s_new @ new_cell)
        moved_atoms = atoms.copy()
        moved_atoms.set_cell(np.asarray(new_cell), scale_atoms=False)
        assert listed(kept, s_new, new_cell, r_max) == reference(moved_atoms, r_max, positions)


def test_a_large_move_or_strain_rebuilds_the_list():
    atoms, r_max, skin = water_box(), 5.0, 1.0
    fns, nbrs, s, cell = allocate(atoms, r_max, skin)
    u = np.zeros((len(atoms), 3))
    u[3] = [0.6 * skin, 0.0, 0.0]
    strained = cell * 0.97  # (||M|| - 1) r_max = 0.15 A, plus 2 * 0.45 A of moves > skin
    u_small = np.full((len(atoms), 3), 0.45 / np.sqrt(3))
    for s_new, new_cell in ((moved(s, cell, u), cell), (moved(s, cell, u_small), strained)):
        new = jax.jit(fns.update)(nbrs, s_new, new_cell)
        np.testing.assert_array_equal(new.reference, s_new)
        moved_atoms = atoms.copy()
        moved_atoms.set_cell(np.asarray(new_cell), scale_atoms=False)
        positions = np.asarray(s_new @ new_cell)
        want = reference(moved_atoms, r_max + skin, positions)
        assert listed(new, s_new, new_cell) == want


def test_atoms_drifted_several_cells_away_pair_as_wrapped_ones():
    atoms, cutoff = water_box(), 6.0
    fns, nbrs, s, cell = allocate(atoms, cutoff - 0.5, 0.5)
    drift = np.random.default_rng(3).integers(-7, 8, size=(len(atoms), 3))
    far = fns.allocate(s + drift, cell)
    reached, home = vectors(far, s + drift, cell), vectors(nbrs, s, cell)
    assert reached == home and len(home) == len(reference(atoms, cutoff))


def test_a_wrapped_atom_triggers_a_rebuild_that_stays_correct():
    """An engine that wraps positions (jax-md's ``wrapped=True``) only costs rebuilds."""
    atoms, cutoff = water_box(), 6.0
    fns, nbrs, s, cell = allocate(atoms, cutoff - 0.5, 0.5)
    s_new = s.at[5].add(jnp.array([1.0, 0.0, -1.0]))
    new = jax.jit(fns.update)(nbrs, s_new, cell)
    np.testing.assert_array_equal(new.reference, s_new)
    assert listed(new, s_new, cell) == reference(atoms, cutoff, np.asarray(s_new @ cell))


def test_too_few_slots_set_the_overflow_flag():
    atoms, cutoff = water_box(), 6.0
    fns, nbrs, s, cell = allocate(atoms, cutoff - 0.5, 0.5)
    shifts = im.image_shifts(np.asarray(cell), atoms.pbc, cutoff)
    small = im.build(s, cell, shifts=shifts, pbc=atoms.pbc, cutoff=cutoff, capacity=10)
    assert int(small.error) & im.OVERFLOW and int(small.max_count) > 10
    assert "above the capacity" in im.error_text(small)
    assert im.error_text(nbrs) is None and int(nbrs.max_count) <= nbrs.idx.shape[1]
    far = moved(s, cell, np.full((len(atoms), 3), 1.0))
    assert int(jax.jit(fns.update)(small, far, cell).error) & im.OVERFLOW  # sticky


def test_a_cell_shrinking_beyond_the_margin_sets_a_flag():
    atoms, r_max, skin = bulk("Cu", a=3.6), 5.0, 0.5
    for margin, flagged in ((0.0, True), (0.35, False)):
        fns, _, s, cell = allocate(atoms, r_max, skin, cell_margin=margin)
        small_cell = cell * 0.7  # heights shrink by 30 %
        new = jax.jit(fns.update)(fns.allocate(s, cell, 200), s, small_cell)
        assert bool(int(new.error) & im.CELL_SHRANK) == flagged
        if not flagged:
            compressed = atoms.copy()
            compressed.set_cell(np.asarray(small_cell), scale_atoms=True)
            assert listed(new, s, small_cell) == reference(compressed, r_max + skin)


def test_the_model_sees_the_same_structure_as_through_the_host_neighbour_list():
    """Energy, forces, stress equal the ASE calculator's (vesin); -dE/ds is the Cartesian
    force the integrator expects."""
    model = make_model(elements=(1, 8))
    atoms = water_box()
    _, nbrs, s, cell = allocate(atoms, model.config.r_max, 0.5)
    Z = jnp.asarray(atoms.numbers)

    def prediction(s, mode):
        batch = im.structure_with_images(s, nbrs, Z, cell)
        return predictor(model, mode, stress=True)(model.variables, batch)

    out = jax.jit(prediction, static_argnums=1)(s, "forces")
    gradient = jax.jit(jax.grad(lambda s: prediction(s, "energy")["energy"]))(s)
    atoms.calc = ApaxCalculator(model)
    np.testing.assert_allclose(out["energy"], atoms.get_potential_energy(), rtol=1e-10)
    np.testing.assert_allclose(out["forces"], atoms.get_forces(), atol=1e-9)
    np.testing.assert_allclose(-gradient, atoms.get_forces(), atol=1e-9)
    np.testing.assert_allclose(out["stress"], atoms.get_stress(voigt=False), atol=1e-9)


def test_minimum_image_check_and_recommendation():
    water, big = water_box(), bulk("Cu", cubic=True).repeat(6)
    assert not im.minimum_image_ok(water.cell.array, water.pbc, 5.5)
    assert im.minimum_image_ok(big.cell.array, big.pbc, 5.5)
    assert not im.minimum_image_ok(slab(False).cell.array, [True, True, False], 1.0)
    assert im.recommend(water.cell.array, water.pbc, len(water), 5.5) == "images"
    big_n = max(len(big), im.MIN_IMAGE_FROM)
    assert im.recommend(big.cell.array, big.pbc, big_n, 5.5) == "minimum_image"
