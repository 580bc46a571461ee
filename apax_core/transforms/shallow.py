"""Member forces of a shallow GMNN ensemble: one forward pass, one member-batched backward pass.

The members share everything but the last readout layer, so every member's energy gradient is
the pull-back of its own cotangent through the same trunk. :func:`member_gradients` in
``ensemble.py`` gets it from ``vmap`` over JAX's VJP of the whole model, which batches every
small per-atom and per-pair operation of the backward M times (the radial basis' derivative,
the unit vectors' Jacobian and the neighbour scatter among them). Here the trunk's forward runs
once and the M cotangents travel together:

- readout: JAX's VJP, vmapped over the members (the dense layers' pull-back is one GEMM with
  M times the rows);
- contractions: :func:`apax_core.model.gmnn.contractions_pullback`, the products of each
  contraction's other factors formed once and shared by the members; on a CPU, float32, the
  same arithmetic as a compiled kernel (:func:`apax_core.native.contractions_pullback`);
- moments: :func:`apax_core.model.gmnn.monomials_pullback`, the members folded into the
  columns of its two per-atom GEMMs, so pair intermediates are (N, K, M, S) and (N, K, M, 3),
  never (N, K, S, 20) per member;
- radial channels and unit vectors: dR/dr from the basis slope (``radial_and_slope``)
  and the unit vectors, shared by all members;
- positions and strain: one scatter (M * 3 columns) and one contraction for all members.

Used for shallow GMNN ensembles without an energy transform and without ZBL (the predictor
checks :func:`supports`); the numbers are those of ``jax.grad`` of each member's energy.
Its forward duplicates ``GaussianMoments.__call__`` and ``EnergyModel`` (model/gmnn.py,
model/potential.py) from their parts; tests/test_ensemble.py compares it with ``jax.grad`` of
the model itself.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from apax_core import native
from apax_core.config import GMNNConfig
from apax_core.data.batch import Batch
from apax_core.model.basis import masked_pairs
from apax_core.model.gmnn import (
    contractions_pullback,
    features_and_moments,
    monomials_pullback,
    radial_and_slope,
)
from apax_core.model.readout import Readout
from apax_core.precision import network_dtype
from apax_core.transforms.derivatives import pair_vectors, zero_strain


def supports(model) -> bool:
    """Whether :func:`member_gradients` applies: a shallow GMNN ensemble without ZBL."""
    cfg = model.config
    return (
        isinstance(cfg, GMNNConfig)
        and cfg.n_members > 1
        and model.member_apply is None
        and cfg.zbl is None
    )


class Trunk(NamedTuple):
    """What the member-batched backward pass needs from the one forward pass."""

    dr_vec: jax.Array  # (N, K, 3) pair vectors, fp64
    r: jax.Array  # (N, K) lengths, network dtype
    unit: jax.Array  # (N, K, 3)
    radial: jax.Array  # (N, K, S) radial channels
    d_radial_dr: jax.Array  # (N, K, S) their derivative w.r.t. r
    moments: tuple  # (N, S), (N, S, 3), (N, S, 3, 3), (N, S, 3, 3, 3)
    n_contr: int
    readout_vjp: object  # descriptor's cotangent <- atomic energies' (N, M)


def member_gradients(model, params, s: Batch, *, chunk_size: int | None = None):
    """Member energies (M,) and their gradients w.r.t. positions (M, N, 3) and strain
    (M, 3, 3) of one structure ``s``, as ``ensemble.member_gradients`` (see the module
    docstring for how); ``chunk_size`` members at a time through the backward pass (bounds
    memory), or all at once."""
    atomic, trunk = _forward(model, params, s)
    n_members = atomic.shape[1]
    eye = jnp.eye(n_members, dtype=atomic.dtype)

    def pullback(rows):
        return _pullback(trunk, s, rows, atomic.shape[0])

    if chunk_size is None or chunk_size >= n_members:
        g_r, g_eps = pullback(eye)
    else:
        pad = (-n_members) % chunk_size
        rows = jnp.concatenate([eye, jnp.zeros((pad, n_members), eye.dtype)])
        chunks = jax.lax.map(pullback, rows.reshape(-1, chunk_size, n_members))
        g_r, g_eps = (g.reshape(-1, *g.shape[2:])[:n_members] for g in chunks)
    return jnp.sum(atomic, axis=0), g_r, g_eps


def _forward(model, params, s: Batch) -> tuple[jax.Array, Trunk]:
    """Atomic energies (N, M) of every member, as ``EnergyModel`` computes them, and the
    trunk's state for the backward pass."""
    cfg, stats = model.config, model.stats
    dtype = network_dtype(cfg.precision)
    species = jnp.asarray(stats.species_table())[s.Z]
    onehot = jax.nn.one_hot(species, len(stats.elements), dtype=dtype)
    neighbour_onehot = onehot[s.idx_j]
    coeffs = params["representation"]["radial_coeffs"]
    dr_vec = pair_vectors(s.positions, s.offsets, s.idx_j, zero_strain())
    dr, r = masked_pairs(dr_vec, s.pair_mask, dtype)
    unit = dr / r[..., None]
    radial, d_radial_dr, _ = radial_and_slope(r, onehot, neighbour_onehot, coeffs, s.pair_mask, cfg)
    features, m = features_and_moments(radial, unit, cfg.n_contr)

    readout = Readout(cfg.hidden, cfg.activation, cfg.n_members, dtype)
    scale = params["scale_shift"]["scale"][species] * s.atom_mask
    shift = params["scale_shift"]["shift"][species] * s.atom_mask

    def atomic_energies(features):  # EnergyModel: scale * readout + shift, padding zero
        out = readout.apply({"params": params["readout"]}, features).astype(jnp.float64)
        return scale[:, None] * out + shift[:, None]

    atomic, readout_vjp = jax.vjp(atomic_energies, features)
    return atomic, Trunk(dr_vec, r, unit, radial, d_radial_dr, m, cfg.n_contr, readout_vjp)


def _pullback(trunk: Trunk, s: Batch, rows, n_atoms: int):
    """Energy cotangents rows (C, M) -> gradients w.r.t. positions (C, N, 3) and strain
    (C, 3, 3): C members (one-hot rows) through the backward pass together."""
    cot = jnp.broadcast_to(rows[:, None, :], (rows.shape[0], n_atoms, rows.shape[1]))
    (d_features,) = jax.vmap(trunk.readout_vjp)(cot)
    pullback = native.contractions_pullback if native.applies(d_features.dtype) else None
    g = (pullback or contractions_pullback)(trunk.moments, d_features, trunk.n_contr)
    d_radial, d_unit = monomials_pullback(trunk.radial, trunk.unit, g)  # (N, K, C, S | 3)
    # r = |dr|, u = dr / r: d dr = (d_r - d_u . u / r) u + d_u / r; padded slots zero.
    r, unit = trunk.r[..., None], trunk.unit
    d_r = jnp.einsum("nkcs,nks->nkc", d_radial, trunk.d_radial_dr)
    d_r = d_r - jnp.einsum("nkca,nka->nkc", d_unit, unit) / r
    d_dr = d_r[..., None] * unit[:, :, None, :] + d_unit / r[..., None]
    d_dr = jnp.where(s.pair_mask[..., None, None], d_dr, 0.0).astype(trunk.dr_vec.dtype)
    # dr_ik = R_j(i,k) - R_i + offset (+ strain): neighbours gain, centres lose.
    to_neighbours = jax.ops.segment_sum(
        d_dr.reshape(-1, *d_dr.shape[2:]), s.idx_j.reshape(-1), num_segments=n_atoms
    )  # (N, C, 3)
    g_r = jnp.moveaxis(to_neighbours - jnp.sum(d_dr, axis=1), 1, 0)
    return g_r, jnp.einsum("nka,nkcb->cab", trunk.dr_vec, d_dr)
