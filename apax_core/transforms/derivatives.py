"""Energy, forces and stress of one structure as function transformations of the energy model.

``apply`` is ``(params, dr_vec, Z, idx_j, atom_mask, pair_mask) -> atomic energies (N, M)`` with
dense neighbours (see data/batch.py); M is 1 for a single model and the member count of an
ensemble. Everything here is a pure function of (params, one structure) and composes with
``jax.vmap`` over a :class:`apax_core.data.Batch` and ``jax.jit``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from apax_core.data.batch import Batch

AtomicEnergyFn = Callable[..., jax.Array]


def pair_vectors(positions, offsets, idx_j, strain):
    """r_ik = (R_j(i,k) - R_i + offset_ik) (I + strain): the strain derivative gives the virial.
    positions (N, 3), offsets (N, K, 3), idx_j (N, K), strain (3, 3) -> (N, K, 3)."""
    dr = positions[idx_j] - positions[:, None, :] + offsets
    return dr + dr @ strain


def zero_strain():
    """(3, 3) zeros in fp64: evaluate at, and differentiate w.r.t., no strain."""
    return jnp.zeros((3, 3), dtype=jnp.float64)


def total_energies(apply: AtomicEnergyFn, params, positions, strain, s: Batch):
    """Energy per model output (M,), summed over atoms in fp64, for one structure ``s`` at
    positions (N, 3) under strain (3, 3)."""
    dr = pair_vectors(positions, s.offsets, s.idx_j, strain)
    atomic = apply(params, dr, s.Z, s.idx_j, s.atom_mask, s.pair_mask)
    return jnp.sum(atomic.astype(jnp.float64), axis=0)


def energy_forces_stress(apply: AtomicEnergyFn, params, s: Batch, *, stress: bool = True):
    """Mean energy over model outputs, forces -dE/dR and stress (1/V) dE/d(strain) in eV/A^3.

    One forward and one backward pass; the member energies come along as ``energy_ensemble``.
    Stress is zero for structures without a cell volume (molecules, padding structures).
    Returns energy (), energy_ensemble (M,), forces (N, 3), stress (3, 3).
    """

    def mean_energy(positions, strain):
        members = total_energies(apply, params, positions, strain, s)
        return jnp.mean(members), members

    argnums = (0, 1) if stress else 0
    (energy, members), grads = jax.value_and_grad(mean_energy, argnums=argnums, has_aux=True)(
        s.positions, zero_strain()
    )
    grad_r = grads[0] if stress else grads
    out = {"energy": energy, "energy_ensemble": members, "forces": -grad_r * s.atom_mask[:, None]}
    if stress:
        out["stress"] = grads[1] * inverse_volume(s.cell)
    return out


def inverse_volume(cell):
    """cell (3, 3) -> 1/V (), or 0 for a structure without volume (molecule, padding)."""
    volume = jnp.abs(jnp.linalg.det(cell))
    return jnp.where(volume > 0, 1.0 / jnp.where(volume > 0, volume, 1.0), 0.0)


CPU_CHAINS = 2
"""Independent parts a batch is split into on a CPU (:func:`batched`)."""
MIN_CHAIN_ATOMS = 256
"""Padded atoms a chain must get at least (fewer chains for smaller batches): the default
loop's training batches (4 x 107 atoms, a small GMNN) ran no faster as two chains and
compiled 1-1.4 s longer; at 8 x 107 atoms they ran 5-8 % faster (bench/README.md)."""


def default_chains() -> int:
    """:data:`CPU_CHAINS` where JAX runs on the CPU, else 1 (a GPU runs one op at a time)."""
    return CPU_CHAINS if jax.default_backend() == "cpu" else 1


def batched(fn, chains: int = 1, min_atoms: int = MIN_CHAIN_ATOMS):
    """vmap a per-structure function ``fn(params, s)`` over the leading axis of a Batch, as up
    to ``chains`` independent vmaps over consecutive parts of at least ``min_atoms`` padded
    atoms each, outputs concatenated.

    XLA's CPU runtime runs independent ops concurrently, but the ops of one chain one after
    another, each on as many cores as its own size fills; the per-pair ops of a GMNN leave
    cores idle. With two chains (2 cores, apax-size GMNN, 107-atom Cu cells) a training step
    at batch 8 ran 10 % faster (four: no faster again; eight: slower) and a batch of 16
    predictions 5-15 % (forces; a shallow ensemble's uncertainties), at +0.3-1.2 s of
    compilation (bench/README.md).
    """
    mapped = jax.vmap(fn, in_axes=(None, 0))

    def run(params, batch: Batch):
        n = min(chains, batch.Z.shape[0], max(1, batch.Z.size // min_atoms))
        if n == 1:
            return mapped(params, batch)
        bounds = np.linspace(0, batch.Z.shape[0], n + 1).round().astype(int)
        parts = [
            mapped(params, jax.tree.map(lambda a, lo=lo, hi=hi: a[lo:hi], batch))
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        return jax.tree.map(lambda *p: jnp.concatenate(p), *parts)

    return run
