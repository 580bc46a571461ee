"""EquivMP end to end through the workflow nodes, with no special case anywhere: a shallow
ensemble trains with CRPS and is calibrated (Train), runs UDD MD with two walkers in the JAX
engine, whose forces equal the ASE calculator's (MD), and drives last-layer-gradient selection
(Select), in a real DVC repository. Its physics (symmetries, finite differences, padding,
periodic images, smoothness) is tested with GMNN's in test_model.py."""

from __future__ import annotations

import csv
import shutil

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import zntrack
from conftest import TINY_EQUIVMP
from test_nodes import TRAIN, init_repo, inside, repro
from test_select import brute_force

import apax_nodes as an
from apax_core.calculator import ApaxCalculator
from apax_core.config import EquivMPConfig
from apax_core.data import from_atoms, read_frames
from apax_core.model.basis import bessel_basis, cosine_cutoff, masked_pairs
from apax_core.model.equivmp import EquivMP, gate_input_irreps, hidden_irreps
from apax_core.precision import x64
from apax_core.select.features import compute_features
from apax_core.transforms import UDD, Calibration
from apax_nodes.project import build

CRPS = [
    {"quantity": "energy", "kind": "crps", "atoms_exponent": 1.0},
    {"quantity": "forces", "kind": "crps"},
]


UDD_SETTINGS = {"height": 0.3, "width": 0.05}
MD_SPEC = {
    "temperature": {"kind": "constant", "T": 600.0},
    "dt": 2.0,
    "duration": 120.0,
    "n_inner": 20,
    "sampling_rate": 10,
    "udd": UDD_SETTINGS,
    "checks": [{"kind": "energy_uncertainty", "threshold": 10.0, "per_atom": True}],
}


@pytest.fixture(scope="module")
def repo(data_files, tmp_path_factory):
    """Train -> MD (2 walkers, UDD) -> Select with a shallow EquivMP ensemble."""
    root = init_repo(tmp_path_factory.mktemp("equivmp") / "project")
    shutil.copy(data_files["train"], root / "train.extxyz")
    model = {**TINY_EQUIVMP, "ensemble": {"kind": "shallow", "n_members": 3}}
    with inside(root):
        project = zntrack.Project()
        with project:
            data = an.LoadData(file="train.extxyz")
            spec = {**TRAIN, "model": model, "loss": CRPS}  # validated on a held-out 10 %
            train = an.Train(data=data.frames, config=spec)
            crystal = an.BuildBulk(element="Cu", repeat=[3, 3, 3])
            md = an.MD(model=train, data=crystal.frames, n_walkers=2, config=MD_SPEC)
            an.Select(model=train, pool=md.frames, train_data=data.frames, n=3)
        build(project)
    repro(root)
    return root


def test_shallow_equivmp_trains_with_crps_and_is_calibrated(repo):
    with open(repo / "nodes/Train/model/log.csv") as fh:
        losses = [float(r["train_loss"]) for r in csv.DictReader(fh)]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    with inside(repo):
        model = zntrack.from_rev("Train").get_model()
    assert model.config.kind == "equivmp"
    assert Calibration.load(repo / "nodes/Train/model") == model.calibration
    assert not model.calibration.is_identity


def test_udd_md_walkers_and_selection(repo, data_files):
    with inside(repo):
        model = zntrack.from_rev("Train").get_model()
        md, picked = zntrack.from_rev("MD"), zntrack.from_rev("Select").selected_ids
        frames, status = md.frames, md.status
    assert [f.info["walker"] for f in frames] == [0] * 6 + [1] * 6
    assert status["n_walkers"] == 2 and not status["stopped"]
    # The engine (jax-md neighbour list, fractional coordinates) and the ASE calculator (vesin
    # list) agree on the biased energy, forces and uncertainties of a moved frame.
    ref = frames[-1].copy()
    transforms = [UDD(UDD_SETTINGS["height"], UDD_SETTINGS["width"])]
    ref.calc = ApaxCalculator(model, transforms=transforms, skin=0.0)
    np.testing.assert_allclose(
        ref.get_potential_energy(), frames[-1].get_potential_energy(), rtol=1e-6
    )
    np.testing.assert_allclose(ref.get_forces(), frames[-1].get_forces(), atol=1e-5)
    pool = [from_atoms(f) for f in frames]
    train = [from_atoms(a) for a in read_frames(data_files["train"])]
    features = compute_features(model, train + pool)  # one batch shape: one compilation
    expected = brute_force(features[: len(train)], features[len(train) :], 3)[0]
    assert picked == expected


class ReferenceInteraction(nn.Module):
    """The e3nn-jax formulation EquivMP's layers compute: the neighbours' irreps and their
    e3nn.tensor_product with the harmonics, every path weighted by e3nn's MLP, summed."""

    config: EquivMPConfig
    n_species: int

    @nn.compact
    def __call__(self, h, sh, edge, envelope, species, idx_j):
        cfg = self.config
        target = gate_input_irreps(hidden_irreps(cfg))
        h_j = e3nn.IrrepsArray(h.irreps, h.array[idx_j])
        parts = [h_j.filter(keep=target)]
        if sh.irreps:
            parts.append(e3nn.tensor_product(h_j, sh, filter_ir_out=target))
        messages = e3nn.concatenate(parts).regroup()
        weights = e3nn.flax.MultiLayerPerceptron(
            [*cfg.radial_hidden, messages.irreps.num_irreps], jax.nn.silu, output_activation=False
        )(edge)
        messages = messages * (weights * envelope[..., None])
        summed = e3nn.sum(messages, axis=1) / jnp.sqrt(cfg.avg_neighbours)
        linear = dict(irreps_out=target, force_irreps_out=True)
        update = e3nn.flax.Linear(**linear, name="message")(summed)
        self_part = e3nn.flax.Linear(**linear, num_indexed_weights=self.n_species, name="self")(
            species, h
        )
        return e3nn.gate(update + self_part)


class ReferenceEquivMP(nn.Module):
    config: EquivMPConfig
    n_species: int
    dtype: jnp.dtype = jnp.float64

    @nn.compact
    def __call__(self, dr_vec, species, idx_j, pair_mask):
        cfg = self.config
        dr, r = masked_pairs(dr_vec, pair_mask, self.dtype)
        sh_irreps = e3nn.Irreps([(1, (l, (-1) ** l)) for l in range(1, cfg.l_max + 1)])
        sh = e3nn.spherical_harmonics(sh_irreps, dr, normalize=True, normalization="component")
        onehot = jax.nn.one_hot(species, self.n_species, dtype=self.dtype)
        pair_onehot = jnp.concatenate(
            [jnp.broadcast_to(onehot[:, None], (*r.shape, self.n_species)), onehot[idx_j]], -1
        )
        edge = jnp.concatenate([bessel_basis(r, cfg.n_basis, cfg.r_max), pair_onehot], -1)
        envelope = cosine_cutoff(r, cfg.r_max) * pair_mask
        embed = nn.Embed(self.n_species, cfg.n_channels, param_dtype=self.dtype, name="embed")
        h = e3nn.IrrepsArray(f"{cfg.n_channels}x0e", embed(species))
        for layer in range(cfg.n_layers):
            h = ReferenceInteraction(cfg, self.n_species, name=f"layer_{layer}")(
                h, sh, edge, envelope, species, idx_j
            )
        return h.filter(keep="0e").array


@pytest.mark.parametrize(
    "settings",
    [
        {"n_channels": 8},  # the defaults' structure: 2 layers, l_max 2
        {"n_layers": 3, "n_channels": 3, "radial_hidden": [8, 8]},  # a middle layer: every path
        {"n_layers": 1, "l_max": 0, "n_channels": 4},
    ],
)
def test_equivmp_equals_the_e3nn_formulation(settings):
    """The plain-array message passing (paths contracted one by one, only the paths into
    scalars in the last layer) is the e3nn.tensor_product formulation: same parameter tree and
    initial values, same features and gradients by the pair vectors (forces) in fp64, on
    random pairs of two species with padded slots and out-of-cutoff neighbours."""
    rng = np.random.default_rng(0)
    n, k, n_species = 12, 9, 2
    config = EquivMPConfig(r_max=4.0, **settings)
    dr = jnp.asarray(rng.normal(size=(n, k, 3)) * 1.8)
    idx_j = jnp.asarray(rng.integers(0, n, size=(n, k)), jnp.int32)
    pair_mask = jnp.asarray(rng.random((n, k)) < 0.8)
    species = jnp.asarray(rng.integers(0, n_species, size=n), jnp.int32)
    args = (species, idx_j, pair_mask)
    with x64():
        ours = EquivMP(config, n_species, jnp.float64)
        reference = ReferenceEquivMP(config, n_species)
        params = jax.jit(ours.init)(jax.random.PRNGKey(1), dr, *args)
        ref_params = jax.jit(reference.init)(jax.random.PRNGKey(1), dr, *args)
        assert jax.tree.structure(params) == jax.tree.structure(ref_params)
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params), strict=True):
            np.testing.assert_array_equal(a, b)
        probe = jnp.asarray(rng.normal(size=(n, config.n_channels)))

        def energy(module):
            return jax.jit(
                jax.value_and_grad(lambda d: jnp.sum(module.apply(params, d, *args) * probe))
            )

        e, g = energy(ours)(dr)
        e_ref, g_ref = energy(reference)(dr)
        features = jax.jit(ours.apply)(params, dr, *args)
        ref_features = jax.jit(reference.apply)(params, dr, *args)
    assert features.dtype == jnp.float64
    np.testing.assert_allclose(features, ref_features, atol=1e-12)
    np.testing.assert_allclose(e, e_ref, rtol=1e-12)
    np.testing.assert_allclose(g, g_ref, atol=1e-12)
    assert np.max(np.abs(g_ref)) > 1e-3  # the forces are not trivially zero
