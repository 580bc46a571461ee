"""Function transformations of the energy model: totals, forces, stress (and, later, ensembles).

``apply`` is ``EnergyModel.apply``-like: (params, dr_vec, Z, idx_j, atom_mask, pair_mask)
-> atomic energies (N, M), with dense neighbours (see data/batch.py). Everything here is a
pure function of (params, structure) and composes with ``jax.vmap`` over a
:class:`apax_core.data.Batch` and ``jax.jit``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from apax_core.data.batch import Batch

AtomicEnergyFn = Callable[..., jax.Array]


def pair_vectors(positions, offsets, idx_j, strain):
    """r_ik = (R_j(i,k) - R_i + offset_ik) (I + strain), (N, K, 3): the strain derivative gives
    the virial."""
    dr = positions[idx_j] - positions[:, None, :] + offsets
    return dr + dr @ strain


def total_energies(apply: AtomicEnergyFn, params, positions, strain, s: Batch):
    """Energy per model output (M,), summed over atoms in fp64, for one structure ``s``."""
    dr = pair_vectors(positions, s.offsets, s.idx_j, strain)
    atomic = apply(params, dr, s.Z, s.idx_j, s.atom_mask, s.pair_mask)
    return jnp.sum(atomic.astype(jnp.float64), axis=0)


def energy_forces_stress(apply: AtomicEnergyFn, params, s: Batch, *, stress: bool = True):
    """Mean energy over model outputs, forces -dE/dR and stress (1/V) dE/d(strain) in eV/A^3.

    One forward and one backward pass; the member energies come along as ``energy_ensemble``.
    Stress is zero for structures without a cell volume (molecules, padding structures).
    """
    strain = jnp.zeros((3, 3), dtype=jnp.float64)

    def mean_energy(positions, strain):
        members = total_energies(apply, params, positions, strain, s)
        return jnp.mean(members), members

    argnums = (0, 1) if stress else 0
    (energy, members), grads = jax.value_and_grad(mean_energy, argnums=argnums, has_aux=True)(
        s.positions, strain
    )
    out = {"energy": energy, "energy_ensemble": members}
    if stress:
        grad_r, grad_eps = grads
        out["stress"] = grad_eps * inverse_volume(s.cell)
    else:
        grad_r = grads
    out["forces"] = -grad_r * s.atom_mask[:, None]
    return out


def inverse_volume(cell):
    """1/V, or 0 for a structure without volume (molecule, padding)."""
    volume = jnp.abs(jnp.linalg.det(cell))
    return jnp.where(volume > 0, 1.0 / jnp.where(volume > 0, volume, 1.0), 0.0)


def batched(fn):
    """vmap a per-structure function ``fn(params, s)`` over the leading axis of a Batch."""
    return jax.vmap(fn, in_axes=(None, 0))


# ------------------------------------------------------------------------------------ ensembles

ENSEMBLE_DDOF = 1
"""Uncertainties are sample standard deviations over members (ddof=1), for every ensemble kind."""


def mean_std(x, axis=-1):
    """Ensemble mean and standard deviation (ddof = ENSEMBLE_DDOF) over ``axis``.

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
    rows = jnp.concatenate([eye, jnp.zeros((pad, n_members), dtype)]).reshape(
        -1, chunk_size, n_members
    )
    chunks = jax.lax.map(jax.vmap(vjp), rows)
    return jax.tree.map(lambda g: g.reshape(-1, *g.shape[2:])[:n_members], chunks)


def member_gradients(apply, params, s: Batch, *, member_apply=None, chunk_size=None):
    """Member energies (M,) and their gradients w.r.t. positions (M, N, 3) and strain (M, 3, 3).

    Shallow ensembles (and single models): one forward pass, M backward passes (chunked).
    Full ensembles (``member_apply`` given, params stacked on axis 0): one pass per member.
    """
    strain = jnp.zeros((3, 3), dtype=jnp.float64)
    if member_apply is not None:

        def one(p):
            def energy(positions, strain):
                return total_energies(member_apply, p, positions, strain, s)[0]

            return jax.value_and_grad(energy, argnums=(0, 1))(s.positions, strain)

        energies, (g_r, g_eps) = jax.vmap(one)(params)
        return energies, g_r, g_eps

    def energies_of(positions, strain):
        return total_energies(apply, params, positions, strain, s)

    energies, vjp = jax.vjp(energies_of, s.positions, strain)
    g_r, g_eps = _chunked_vjp(vjp, energies.shape[0], chunk_size, energies.dtype)
    return energies, g_r, g_eps


def ensemble_predict(
    apply,
    params,
    s: Batch,
    *,
    member_apply=None,
    chunk_size=None,
    force_uncertainty=True,
    stress=True,
):
    """Mean predictions plus IPSuite's uncertainty keys (standard deviations, never variances).

    With ``force_uncertainty=False`` only energies are per member and forces/stress come from
    the gradient of the mean energy (eq. 6, left: the cost of a single model); with True, every
    member's forces and stress are computed (eq. 6, right) and their spread is reported.
    """
    if not force_uncertainty:
        out = energy_forces_stress(apply, params, s, stress=stress)
        out["energy_uncertainty"] = mean_std(out["energy_ensemble"])[1]
        return out
    energies, g_r, g_eps = member_gradients(
        apply, params, s, member_apply=member_apply, chunk_size=chunk_size
    )
    forces = -jnp.moveaxis(g_r, 0, -1) * s.atom_mask[:, None, None]  # (N, 3, M)
    stress = jnp.moveaxis(g_eps, 0, -1) * inverse_volume(s.cell)  # (3, 3, M)
    out = {"energy_ensemble": energies, "forces_ensemble": forces, "stress_ensemble": stress}
    for key, members in (("energy", energies), ("forces", forces), ("stress", stress)):
        out[key], out[f"{key}_uncertainty"] = mean_std(members)
    return out


def calibrate(pred: dict, energy_factor, forces_factor) -> dict:
    """Scale ensemble spreads by global factors (post-hoc calibration, paper sec. 2.2).

    Members move away from their mean by the factor (E_m <- E + f (E_m - E)), so the reported
    standard deviations and the members stay consistent. Stress is a derivative like forces
    and shares the force factor.
    """
    out = dict(pred)
    for key, factor in (("energy", energy_factor), ("forces", forces_factor),
                        ("stress", forces_factor)):  # fmt: skip
        if f"{key}_uncertainty" in out:
            out[f"{key}_uncertainty"] = out[f"{key}_uncertainty"] * factor
        if f"{key}_ensemble" in out:
            members = out[f"{key}_ensemble"]
            mean = jnp.mean(members, axis=-1, keepdims=True)
            out[f"{key}_ensemble"] = mean + factor * (members - mean)
    return out
