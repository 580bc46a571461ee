"""The one prediction path and the one batching helper.

Every consumer (predict in each mode, the ASE calculator with UDD or a stored calibration,
selection features and uncertainty scores) is compared with a plain reference evaluation of
the same model, written here from the definitions: ASE's neighbour list in a dense layout of
exact sizes (no padding, no batching, no skin), the flax module's atomic energies summed per
member, and jax.jacrev of the member energies w.r.t. positions and strain (not the chunked
member VJPs of transforms.ensemble; the module's own moments VJP is tested in test_model).
Models are fp64, so every path agrees with it to round-off. (This replaced a golden file of
outputs that no script could regenerate: a reference derived here fails only when a path
disagrees with the model, not when the model itself changes.)
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk
from ase.neighborlist import neighbor_list
from ase.stress import full_3x3_to_voigt_6_stress
from conftest import emt_frames, make_model

from apax_core.batching import map_batches, map_structures, unpad
from apax_core.calculator import ApaxCalculator
from apax_core.data import from_atoms
from apax_core.frame_predictions import predict
from apax_core.model.potential import representation
from apax_core.precision import x64
from apax_core.predictor import compiled
from apax_core.select import compute_features, uncertainties
from apax_core.transforms import UDD, Calibration

KINDS = {
    "single": None,
    "shallow": {"kind": "shallow", "n_members": 4, "chunk_size": 3},
    "full": {"kind": "full", "n_members": 3},
}
UDD_A, UDD_B = 0.3, 0.05
UNCALIBRATED = Calibration()


@functools.cache
def kind_model(kind: str):
    return make_model(elements=(29,), ensemble=KINDS[kind], seed=1)


@pytest.fixture(scope="module")
def frames():
    frames = emt_frames(2, seed=5, size=(1, 1, 1)) + emt_frames(1, seed=6, size=(2, 1, 1))
    molecule = bulk("Cu", "fcc", a=3.61, cubic=True)
    molecule.pbc, molecule.cell = False, [0, 0, 0]
    molecule.positions += np.random.default_rng(3).normal(scale=0.1, size=(4, 3))
    return frames, molecule


# ------------------------------------------------------------------- the reference evaluation


def dense_neighbours(atoms, cutoff: float):
    """ASE's full neighbour list in the dense layout at exact sizes (K = the largest neighbour
    count): Z (N,), idx_j (N, K), offsets (N, K, 3) in Angstrom, pair_mask (N, K)."""
    i, j, shift = neighbor_list("ijS", atoms, cutoff)
    order = np.argsort(i, kind="stable")
    i, j, shift = i[order], j[order], shift[order]
    n, counts = len(atoms), np.bincount(i, minlength=len(atoms))
    slot = np.arange(len(i)) - np.repeat(np.cumsum(counts) - counts, counts)
    k = max(1, int(counts.max(initial=0)))
    idx_j, shifts, mask = np.zeros((n, k), int), np.zeros((n, k, 3)), np.zeros((n, k), bool)
    idx_j[i, slot], shifts[i, slot], mask[i, slot] = j, shift, True
    return atoms.numbers, idx_j, shifts @ atoms.cell.array, mask


def pair_vectors(positions, strain, idx_j, offsets):
    """(N, K, 3) vectors to the neighbours, strained by (I + strain)."""
    return (positions[idx_j] - positions[:, None] + offsets) @ (jnp.eye(3) + strain)


def member_energies(module, stacked: bool, udd: bool):
    """(params, positions (N, 3), strain (3, 3), Z, idx_j, offsets, pair_mask) -> member total
    energies (M,) from the flax module's atomic energies (plus eq. 9 with ``udd``); ``stacked``
    (a full ensemble) applies each parameter set (stacked on axis 0) on its own."""

    def one(params, positions, strain, Z, idx_j, offsets, pair_mask):
        dr = pair_vectors(positions, strain, idx_j, offsets)
        atom_mask = jnp.ones(Z.shape, bool)
        return jnp.sum(module.apply({"params": params}, dr, Z, idx_j, atom_mask, pair_mask), 0)

    def energies(params, *args):
        if stacked:
            members = jax.vmap(lambda p: one(p, *args)[0])(params)
        else:
            members = one(params, *args)
        return members + udd_bias(members, args[0].shape[0]) if udd else members

    return energies


def udd_bias(members, n_atoms: int):
    """Paper eq. 9: A [exp(-sigma_E^2 / (M N B^2)) - 1], sigma_E with ddof 1."""
    m = members.shape[0]
    return UDD_A * (jnp.exp(-jnp.var(members, ddof=1) / (m * n_atoms * UDD_B**2)) - 1.0)


@functools.cache
def member_derivatives(kind: str, udd: bool):
    """Jitted: (dE_m/dR (M, N, 3), dE_m/d(strain) (M, 3, 3)), E_m (M,), by autodiff."""
    energies = member_energies(kind_model(kind).module, kind == "full", udd)

    def with_aux(*args):
        e = energies(*args)
        return e, e

    return jax.jit(jax.jacrev(with_aux, argnums=(1, 2), has_aux=True))


def reference(kind: str, atoms, *, udd=False, calibration=UNCALIBRATED) -> dict:
    """Every quantity of ``atoms`` in the predictor's keys: member energies, forces -dE_m/dR
    and stress (1/V) dE_m/d(strain) (members on the last axis), their means, and for
    ensembles their standard deviations (ddof 1) times the calibration factor, with the
    members spread about the mean by the same factor. UDD adds eq. 9 to every member."""
    nbrs = dense_neighbours(atoms, kind_model(kind).config.r_max)
    with x64():
        out = member_derivatives(kind, udd)(
            kind_model(kind).params, atoms.positions, np.zeros((3, 3)), *nbrs
        )
        (g_r, g_eps), energies = jax.tree.map(np.asarray, out)
    members = {"energy": energies, "forces": -np.moveaxis(g_r, 0, -1)}
    if atoms.pbc.all():
        members["stress"] = np.moveaxis(g_eps, 0, -1) / atoms.get_volume()
    out = {}
    for key, m in members.items():
        out[key] = mean = np.mean(m, axis=-1)
        if m.shape[-1] > 1:
            f = calibration.energy if key == "energy" else calibration.forces
            out[f"{key}_ensemble"] = mean[..., None] + f * (m - mean[..., None])
            out[f"{key}_uncertainty"] = f * np.std(m, axis=-1, ddof=1)
    return out


@functools.cache
def feature_fn(kind: str, name: str):
    """Jitted: (params, positions, Z, idx_j, offsets, pair_mask) -> (D,) features.

    Last-layer gradient: d(mean energy)/d(kernel, bias) of the last readout layer, kernel
    first (row-major). Descriptor mean: the representation's features averaged over the
    atoms. A full ensemble concatenates its members' features, scaled by 1/sqrt(M)."""
    model = kind_model(kind)
    energies = member_energies(model.module, stacked=False, udd=False)  # one parameter set
    layer = f"dense_{len(model.config.hidden)}"
    table = jnp.asarray(model.stats.species_table())
    descriptor = representation(model.config, len(model.stats.elements), jnp.float64)

    def last_layer_gradient(params, positions, *nbrs):
        def mean_energy(p):
            return jnp.mean(energies(p, positions, jnp.zeros((3, 3)), *nbrs))

        last = jax.grad(mean_energy)(params)["readout"][layer]
        return jnp.concatenate([last["kernel"].ravel(), last["bias"].ravel()])

    def descriptor_mean(params, positions, Z, idx_j, offsets, pair_mask):
        dr = pair_vectors(positions, jnp.zeros((3, 3)), idx_j, offsets)
        inputs = (dr, table[Z], idx_j, pair_mask)
        return jnp.mean(descriptor.apply({"params": params["representation"]}, *inputs), 0)

    fn = last_layer_gradient if name == "last_layer_gradient" else descriptor_mean
    if kind != "full":
        return jax.jit(fn)

    def members(stacked, *args):
        per_member = jax.vmap(lambda p: fn(p, *args))(stacked)
        return per_member.reshape(-1) / jnp.sqrt(per_member.shape[0])

    return jax.jit(members)


def reference_features(kind: str, atoms, name: str) -> np.ndarray:
    nbrs = dense_neighbours(atoms, kind_model(kind).config.r_max)
    with x64():
        return np.asarray(feature_fn(kind, name)(kind_model(kind).params, atoms.positions, *nbrs))


def ase_form(ref: dict, periodic: bool) -> dict:
    """A reference in the ASE calculator's names and shapes (stress in Voigt order)."""
    out = {k: v for k, v in ref.items() if not k.startswith("stress") and k != "stress_ensemble"}
    out["free_energy"] = ref["energy"]
    for key in ("stress", "stress_uncertainty"):
        if periodic and key in ref:
            out[key] = full_3x3_to_voigt_6_stress(ref[key])
    return out


def assert_matches(got: dict, expected: dict, where: str):
    """The same keys, equal to fp64 round-off."""
    assert set(got) == set(expected), where
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-9, atol=1e-11, err_msg=f"{where}/{key}")


# ------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("kind", KINDS)
def test_predict_equals_the_reference(kind, frames):
    """Both modes of predict, in batches of two, and the selection uncertainty scores."""
    model, structures = kind_model(kind), [from_atoms(a) for a in frames[0]]
    refs = [reference(kind, a) for a in frames[0]]
    cheap = {"energy", "forces", "stress"} | (
        {"energy_ensemble", "energy_uncertainty"} if KINDS[kind] else set()
    )
    modes = {"forces": cheap, "uncertainty": set(refs[0])} if KINDS[kind] else {"forces": cheap}
    for mode, keys in modes.items():
        preds = predict(model, structures, mode=mode, batch_size=2)
        for k, (pred, ref) in enumerate(zip(preds, refs, strict=True)):
            assert_matches(pred, {key: ref[key] for key in keys}, f"{kind}/{mode}/{k}")
    if KINDS[kind] is None:
        return
    scores = {
        "energy": [r["energy_uncertainty"] for r in refs],
        "forces": [np.linalg.norm(r["forces_uncertainty"], axis=-1).max() for r in refs],
    }
    for q, expected in scores.items():
        got = uncertainties(model, structures, q, batch_size=2)
        np.testing.assert_allclose(got, expected, rtol=1e-9, err_msg=q)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["last_layer_gradient", "descriptor_mean"])
def test_selection_features_equal_the_reference(kind, name, frames):
    model, structures = kind_model(kind), [from_atoms(a) for a in frames[0]]
    got = compute_features(model, structures, name, batch_size=2)
    expected = [reference_features(kind, a, name) for a in frames[0]]
    np.testing.assert_allclose(got, np.stack(expected), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["shallow", "full"])
def test_calculator_with_udd_and_calibration_equals_the_reference(kind, frames):
    """UDD (energy hook) and a stored calibration (results hook), periodic and free space."""
    base = kind_model(kind)
    cal = Calibration(energy=0.5, forces=2.0)
    cases = {
        "udd": (base, (UDD(UDD_A, UDD_B),), dict(udd=True)),
        "cal": (dataclasses.replace(base, calibration=cal), (), dict(calibration=cal)),
    }
    for label, (model, transforms, settings) in cases.items():
        calc = ApaxCalculator(model, transforms=transforms)
        for k, atoms in enumerate([*frames[0], frames[1]]):
            atoms = atoms.copy()
            atoms.calc = calc
            atoms.get_potential_energy()
            expected = ase_form(reference(kind, atoms, **settings), atoms.pbc.all())
            assert_matches(calc.results, expected, f"{kind}/{label}/{k}")


@pytest.mark.parametrize("kind", ["shallow", "full"])
def test_energy_mode_is_the_forward_part_of_every_mode(kind, frames):
    """``energy`` gives the same energies and spreads as the derivative modes, without forces."""
    model = kind_model(kind)
    structures = [from_atoms(a) for a in frames[0]]
    cheap = predict(model, structures, mode="energy")
    for mode in ("forces", "uncertainty"):
        for c, full in zip(cheap, predict(model, structures, mode=mode), strict=True):
            assert set(c) == {"energy", "energy_ensemble", "energy_uncertainty"}
            for key in c:
                np.testing.assert_allclose(c[key], full[key], rtol=1e-10)


def test_batching_unequal_sizes_equals_one_by_one(cuag_model):
    """Structures of 3, 7, 15 and 31 atoms share padded batches (and a short last batch), yet
    each result equals the structure evaluated alone, in input order, padding removed."""
    frames = [
        emt_frames(1, seed=s, size=size)[0]
        for s, size in ((1, (1, 1, 1)), (2, (2, 1, 1)), (3, (2, 2, 1)), (4, (2, 2, 2)))
    ]
    structures = [from_atoms(a) for a in frames]
    fn = compiled(cuag_model, "forces")
    together = map_structures(
        fn, cuag_model.variables, structures, cuag_model.config.r_max, batch_size=3
    )
    assert [len(p["forces"]) for p in together] == [3, 7, 15, 31]
    for s, p in zip(structures, together, strict=True):
        alone = map_structures(fn, cuag_model.variables, [s], cuag_model.config.r_max, batch_size=1)
        for key in p:
            np.testing.assert_allclose(p[key], alone[0][key], rtol=1e-10, atol=1e-12)
    n_batches = [
        len(n) for _, n in map_batches(fn, cuag_model.variables, structures, 4.0, batch_size=3)
    ]
    assert n_batches == [3, 1]  # the short last batch drops its padding structures
    assert unpad({"forces": np.zeros((1, 9, 3)), "energy": np.zeros(1)}, np.array([7]))[0][
        "forces"
    ].shape == (7, 3)


def test_a_batch_in_chains_equals_one_vmap(cuag_model):
    """batched(..., chains) splits a batch into consecutive parts (4 structures in 3 chains:
    1, 2 and 1; ``min_atoms=1``: these structures are smaller than a chain's minimum) and
    concatenates their outputs in order: the same predictions,
    and the same parameter gradient of a force loss (what a training step takes), as one
    vmap over the batch."""
    from apax_core.config import PadToMax
    from apax_core.data import Dataset
    from apax_core.predictor import predictor
    from apax_core.transforms import batched

    with x64():
        frames = [emt_frames(1, seed=s, size=(2, 1, 1))[0] for s in range(4)]
        data = Dataset([from_atoms(a) for a in frames], 4.0)
        batch = next(iter(data.batches(4, PadToMax(), shuffle=False, seed=0)))
        predict = predictor(cuag_model, "forces")
        variables = cuag_model.variables

        def loss(params, fn):
            out = fn(variables._replace(params=params), batch)
            return jnp.sum(out["forces"] ** 2) + jnp.sum(out["energy"])

        one, split = batched(predict), batched(predict, chains=3, min_atoms=1)
        together = jax.jit(split)(variables, batch)
        for key, value in jax.jit(one)(variables, batch).items():
            np.testing.assert_allclose(together[key], value, rtol=1e-12)
        grads = [
            jax.jit(jax.grad(loss), static_argnums=1)(variables.params, fn) for fn in (one, split)
        ]
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10), *grads)


def test_a_batch_below_two_chains_worth_of_atoms_stays_one_vmap(cuag_model):
    """Chains pay only on batches of enough atoms (compilation grows with each): a batch of
    fewer than 2 x min_atoms padded atoms is traced as one vmap, a larger one as two."""
    from apax_core.config import PadToMax
    from apax_core.data import Dataset
    from apax_core.predictor import predictor
    from apax_core.transforms import batched

    frames = [emt_frames(1, seed=s, size=(2, 1, 1))[0] for s in range(4)]
    data = Dataset([from_atoms(a) for a in frames], 4.0)
    batch = next(iter(data.batches(4, PadToMax(), shuffle=False, seed=0)))
    predict, traces = predictor(cuag_model, "forces"), []

    def counted(variables, s):
        traces.append(1)
        return predict(variables, s)

    atoms = batch.Z.size
    for min_atoms, want in ((atoms // 2 + 1, 1), (atoms // 2, 2)):
        traces.clear()
        with x64():
            split = batched(counted, chains=2, min_atoms=min_atoms)
            jax.eval_shape(split, cuag_model.variables, batch)
        assert len(traces) == want, (min_atoms, atoms)
