"""The model as seen by the engine: one-structure Batches built from the device list.

The engine integrates fractional positions R of a cell. Cartesian positions are
``space.transform(box, R)``, whose custom derivative passes gradients through unchanged, so
the gradient of any energy of them with respect to R is the Cartesian gradient jax-md expects.
Image offsets are integer shifts times the cell, held constant under differentiation exactly as
the offsets of the host neighbour list are. The image list builds its Batch itself
(:func:`~apax_core.md.image_neighbours.structure_with_images`); :func:`structure` is the
minimum-image one.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from apax_core.data.batch import Batch
from apax_core.md.jax_md_parts import space


def structure(R, idx, Z, box) -> Batch:
    """A one-structure Batch (dense neighbours) from positions and a jax-md Dense ``idx``,
    each listed neighbour j of atom i at its minimum image (exact because every height exceeds
    twice the list cutoff).

    Args: ``R`` (N, 3) fractional positions, ``idx`` (N, K) neighbour slots, ``Z`` (N,) atomic
    numbers, ``box`` (3, 3) lattice vectors as columns (jax-md). Empty slots (index N) become
    masked pairs to atom 0 with zero offset, as the Batch contract asks.
    """
    n = R.shape[0]
    mask = idx < n
    idx_j = jnp.where(mask, idx, 0)
    cell = box.T
    image = jax.lax.stop_gradient(jnp.round(R[idx_j] - R[:, None, :]))
    return Batch(
        Z=Z,
        positions=space.transform(box, R),
        cell=cell,
        idx_j=idx_j,
        offsets=jnp.where(mask[..., None], -image @ cell, 0.0),
        atom_mask=jnp.ones(n, bool),
        pair_mask=mask,
        n_atoms=jnp.asarray(n, jnp.int32),
        energy=jnp.zeros((), R.dtype),
        forces=jnp.zeros_like(R),
        stress=jnp.zeros((3, 3), R.dtype),
    )


def dynamics_energy(energy_fn, structure_fn, cell) -> Callable:
    """``energy(R, neighbor, params, box=None, **unused) -> ()`` in eV from an ``energy``-mode
    predictor (the mean member energy: the cheap force of eq. 6, left, biased if UDD is on);
    jax-md's ``params`` keyword carries the model's variables. ``structure_fn(R, neighbor,
    cell)`` is the list's Batch builder (``PairList.structure`` with Z bound), ``cell`` (3, 3)
    rows in A; a constant-pressure integrator passes the current ``box`` (3, 3), lattice
    vectors as columns (jax-md), instead. The energy depends on the box only through
    ``box @ R`` and the image offsets, so its box derivative is the strain derivative.

    ``neighbor`` must be valid for R (the engine guarantees it, see ``build._advancer``).
    """

    def energy(R, neighbor, params, box=None, **unused):
        current = cell if box is None else box.T
        return energy_fn(params, structure_fn(R, neighbor, cell=current))["energy"]

    return energy
