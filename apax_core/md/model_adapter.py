"""The model as seen by the engine: one-structure Batches built from the jax-md neighbour list.

The engine integrates fractional positions R (free space: Cartesian). Cartesian positions are
``space.transform(box, R)``, whose custom derivative passes gradients through unchanged, so
the gradient of any energy of them with respect to R is the Cartesian gradient jax-md expects.
Each listed neighbour j of atom i gets the integer image shift that makes r_ij the minimum
image (exact because every height exceeds twice the list cutoff), held constant under
differentiation exactly as the offsets of the host neighbour list are.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax_md import space

from apax_core.data.batch import Batch


def structure(R, idx, Z, box) -> Batch:
    """A one-structure Batch (dense neighbours) from positions and a jax-md Dense ``idx``.

    Args: ``R`` (N, 3) positions (fractional if periodic), ``idx`` (N, K) neighbour slots,
    ``Z`` (N,) atomic numbers, ``box`` (3, 3) lattice vectors as columns (jax-md) or None for
    free space. Empty slots (index N) become masked pairs to atom 0 with zero offset, as the
    Batch contract asks.
    """
    n = R.shape[0]
    mask = idx < n
    idx_j = jnp.where(mask, idx, 0)
    if box is None:
        positions, cell = R, jnp.zeros((3, 3), R.dtype)
        offsets = jnp.zeros(idx.shape + (3,), R.dtype)
    else:
        positions, cell = space.transform(box, R), box.T
        image = jax.lax.stop_gradient(jnp.round(R[idx_j] - R[:, None, :]))
        offsets = jnp.where(mask[..., None], -image @ cell, 0.0)
    return Batch(
        Z=Z,
        positions=positions,
        cell=cell,
        idx_j=idx_j,
        offsets=offsets,
        atom_mask=jnp.ones(n, bool),
        pair_mask=mask,
        n_atoms=jnp.asarray(n, jnp.int32),
        energy=jnp.zeros((), R.dtype),
        forces=jnp.zeros_like(R),
        stress=jnp.zeros((3, 3), R.dtype),
    )


def dynamics_energy(energy_fn, Z, box) -> Callable:
    """``energy(R, neighbor, params, **unused) -> ()`` in eV from an ``energy``-mode predictor
    (the mean member energy: the cheap force of eq. 6, left, biased if UDD is on); jax-md's
    ``params`` keyword carries the model's variables. Args as :func:`structure`.

    ``neighbor`` must be valid for R (the engine guarantees it, see ``build._advancer``).
    """

    def energy(R, neighbor, params, **unused):
        return energy_fn(params, structure(R, neighbor.idx, Z, box))["energy"]

    return energy
