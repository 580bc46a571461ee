"""Function transformations of the energy model: totals, forces, stress (and, later, ensembles).

``apply`` is ``EnergyModel.apply``-like: (params, dr_vec, Z, idx_i, idx_j, atom_mask, pair_mask)
-> atomic energies (N, M). Everything here is a pure function of (params, structure) and
composes with ``jax.vmap`` over a :class:`apax_core.data.Batch` and ``jax.jit``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from apax_core.data.batch import Batch

AtomicEnergyFn = Callable[..., jax.Array]


def pair_vectors(positions, offsets, idx_i, idx_j, strain):
    """r_ij = (R_j - R_i + offset_ij) (I + strain): the strain derivative gives the virial."""
    dr = positions[idx_j] - positions[idx_i] + offsets
    return dr + dr @ strain


def total_energies(apply: AtomicEnergyFn, params, positions, strain, s: Batch):
    """Energy per model output (M,), summed over atoms in fp64, for one structure ``s``."""
    dr = pair_vectors(positions, s.offsets, s.idx_i, s.idx_j, strain)
    atomic = apply(params, dr, s.Z, s.idx_i, s.idx_j, s.atom_mask, s.pair_mask)
    return jnp.sum(atomic.astype(jnp.float64), axis=0)


def energy_forces_stress(apply: AtomicEnergyFn, params, s: Batch, *, stress: bool = True):
    """Mean energy over model outputs, forces -dE/dR and stress (1/V) dE/d(strain) in eV/A^3.

    Stress is zero for structures without a cell volume (molecules, padding structures).
    """
    strain = jnp.zeros((3, 3), dtype=jnp.float64)

    def mean_energy(positions, strain):
        return jnp.mean(total_energies(apply, params, positions, strain, s))

    argnums = (0, 1) if stress else 0
    energy, grads = jax.value_and_grad(mean_energy, argnums=argnums)(s.positions, strain)
    out = {"energy": energy}
    if stress:
        grad_r, grad_eps = grads
        volume = jnp.abs(jnp.linalg.det(s.cell))
        out["stress"] = jnp.where(volume > 0, grad_eps / jnp.where(volume > 0, volume, 1.0), 0.0)
    else:
        grad_r = grads
    out["forces"] = -grad_r * s.atom_mask[:, None]
    return out


def batched(fn):
    """vmap a per-structure function ``fn(params, s)`` over the leading axis of a Batch."""
    return jax.vmap(fn, in_axes=(None, 0))
