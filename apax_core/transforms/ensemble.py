"""Ensemble statistics and member derivatives (paper eq. 6), for shallow and full ensembles.

Uncertainties are standard deviations, never variances; the keys are IPSuite's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from apax_core.data.batch import Batch
from apax_core.transforms.derivatives import inverse_volume, total_energies, zero_strain

ENSEMBLE_DDOF = 1
"""Uncertainties are sample standard deviations over members (ddof=1), for every ensemble kind."""


def mean_std(x, axis=-1):
    """Ensemble mean and standard deviation (ddof = ENSEMBLE_DDOF) over ``axis``:
    x (..., M) -> two (...) arrays.

    The square root is guarded so that a zero spread (padding atoms and structures) has a zero
    gradient instead of inf * 0 = NaN.
    """
    var = jnp.var(x, axis=axis, ddof=ENSEMBLE_DDOF)
    positive = var > 0
    return jnp.mean(x, axis=axis), jnp.where(positive, jnp.sqrt(jnp.where(positive, var, 1.0)), 0.0)


def _chunked_vjp(vjp, n_members: int, chunk_size: int | None, dtype):
    """Pull back every one-hot cotangent: the jacobian of M outputs, ``chunk_size`` rows at a
    time so memory stays bounded for large M."""
    eye = jnp.eye(n_members, dtype=dtype)
    if chunk_size is None or chunk_size >= n_members:
        return jax.vmap(vjp)(eye)
    pad = (-n_members) % chunk_size
    rows = jnp.concatenate([eye, jnp.zeros((pad, n_members), dtype)])
    chunks = jax.lax.map(jax.vmap(vjp), rows.reshape(-1, chunk_size, n_members))
    return jax.tree.map(lambda g: g.reshape(-1, *g.shape[2:])[:n_members], chunks)


def member_gradients(apply, params, s: Batch, *, member_apply=None, chunk_size=None):
    """Member energies (M,) and their gradients w.r.t. positions (M, N, 3) and strain (M, 3, 3).

    Shallow ensembles: one forward pass, M backward passes (chunked). Full ensembles
    (``member_apply`` given, params stacked on axis 0): one pass per member.
    """
    if member_apply is not None:

        def one(p):
            def energy(positions, strain):
                return total_energies(member_apply, p, positions, strain, s)[0]

            return jax.value_and_grad(energy, argnums=(0, 1))(s.positions, zero_strain())

        energies, (g_r, g_eps) = jax.vmap(one)(params)
        return energies, g_r, g_eps

    def energies_of(positions, strain):
        return total_energies(apply, params, positions, strain, s)

    energies, vjp = jax.vjp(energies_of, s.positions, zero_strain())
    g_r, g_eps = _chunked_vjp(vjp, energies.shape[0], chunk_size, energies.dtype)
    return energies, g_r, g_eps


def member_predictions(
    apply, params, s: Batch, *, member_apply=None, chunk_size=None, gradients=None
) -> dict:
    """Every member's energy, forces and stress with their means and standard deviations
    (eq. 6, right): ``<q>``, ``<q>_ensemble`` (members on the last axis), ``<q>_uncertainty``.
    Members: energy (M,), forces (N, 3, M), stress (3, 3, M); means and standard deviations
    drop the M axis. ``gradients``: ``(params, s) -> (energies, g_r, g_eps)`` in place of
    :func:`member_gradients` (the shallow GMNN path, ``transforms/shallow.py``)."""
    if gradients is not None:
        energies, g_r, g_eps = gradients(params, s)
    else:
        energies, g_r, g_eps = member_gradients(
            apply, params, s, member_apply=member_apply, chunk_size=chunk_size
        )
    forces = -jnp.moveaxis(g_r, 0, -1) * s.atom_mask[:, None, None]  # (N, 3, M)
    stress = jnp.moveaxis(g_eps, 0, -1) * inverse_volume(s.cell)  # (3, 3, M)
    out = {"energy_ensemble": energies, "forces_ensemble": forces, "stress_ensemble": stress}
    for key, members in (("energy", energies), ("forces", forces), ("stress", stress)):
        out[key], out[f"{key}_uncertainty"] = mean_std(members)
    return out
