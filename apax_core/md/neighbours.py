"""Simulation space and the on-device neighbour list (jax-md) of the MD engine.

Periodic systems live in fractional coordinates of ``space.periodic_general`` (momenta and
forces stay Cartesian); molecules use ``space.free()``. The list holds pairs within
``r_max + skin`` in jax-md's Dense format, ``idx`` of shape (N, capacity) with N marking empty
slots (the model's dense neighbour layout), and is rebuilt once an atom has moved more than
``skin / 2``. Cell lists are used whenever the box holds at least four cells per side.

jax-md uses the minimum image convention, so every periodic height must exceed twice the list
cutoff; smaller cells are rejected (replicate them first, e.g. ``atoms.repeat``). The ASE
calculator has no such limit.
"""

from __future__ import annotations

import logging
import math
import warnings
from contextlib import contextmanager

import ase
import jax.numpy as jnp
import numpy as np
from jax_md import dataclasses, partition, space

from apax_core.errors import InputError

logger = logging.getLogger(__name__)


def heights(cell: np.ndarray) -> np.ndarray:
    """(3,) perpendicular distances between opposite faces of ``cell`` (3, 3), rows are lattice
    vectors."""
    volume = abs(np.linalg.det(cell))
    areas = [np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)]
    return np.array([volume / a if a > 0 else 0.0 for a in areas])


def check_cell(atoms: ase.Atoms, cutoff: float) -> bool:
    """Validate the periodicity of ``atoms`` for the engine; return whether it is periodic.

    Raises InputError for mixed periodicity, left-handed cells and cells whose height along
    some axis is below ``2 * cutoff`` (the minimum image would miss neighbours).
    """
    pbc = np.asarray(atoms.pbc, bool)
    if not pbc.any():
        return False
    if not pbc.all():
        raise InputError(
            f"the MD engine supports fully periodic or non-periodic systems, got pbc={pbc.tolist()}"
        )
    cell = atoms.cell.array
    if np.linalg.det(cell) <= 0:
        raise InputError("the cell must be right-handed with positive volume (swap two vectors)")
    h = heights(cell)
    if h.min() < 2 * cutoff:
        reps = [max(1, math.ceil(2 * cutoff / x)) for x in h]
        raise InputError(
            f"cell too small for the MD engine: perpendicular heights {np.round(h, 3).tolist()} A "
            f"must all be >= 2 * (r_max + skin) = {2 * cutoff:.3f} A; replicate the structure "
            f"(e.g. atoms.repeat({tuple(reps)})) or use the ASE calculator"
        )
    return True


def standard_frame(atoms: ase.Atoms) -> ase.Atoms:
    """A copy of periodic ``atoms`` rotated so the cell is lower triangular (jax-md's box,
    the transpose, is then upper triangular as its cell list requires); positions, momenta and
    cell rotate together, so the physics is unchanged."""
    atoms = atoms.copy()
    cell = atoms.cell.array
    if np.allclose(cell, np.tril(cell), atol=1e-12) and (np.diag(cell) > 0).all():
        return atoms
    rcell, q = atoms.cell.standard_form()
    momenta = atoms.get_momenta() @ q.T
    atoms.positions = atoms.positions @ q.T
    atoms.set_cell(rcell.array, scale_atoms=False)
    atoms.set_momenta(momenta, apply_constraint=False)
    logger.info("rotated the structure so that its cell is lower triangular (jax-md box form)")
    return atoms


def make_space(box: jnp.ndarray | None):
    """(displacement, shift) in fractional coordinates of ``box`` (3, 3), columns are lattice
    vectors, or free space for ``box is None``."""
    if box is None:
        return space.free()
    return space.periodic_general(box, fractional_coordinates=True, wrapped=True)


def neighbour_fns(
    displacement, box, r_max: float, skin: float, capacity_multiplier: float
) -> partition.NeighborListFns:
    """jax-md neighbour-list functions (Dense format, ``idx`` (N, K)) for cutoff ``r_max`` and
    ``skin``; ``box`` (3, 3) lattice vectors as columns, or None for free space."""
    periodic = box is not None
    cutoff = r_max + skin
    # jax-md builds a cell list only with at least four cells per side; its free-space cell
    # list needs a box, so molecules use all-pairs candidates (fine at molecular sizes).
    use_cells = periodic and float(np.min(heights(np.asarray(box).T))) >= 4 * cutoff
    return partition.neighbor_list(
        displacement,
        box if periodic else jnp.ones(3),
        r_max,
        dr_threshold=skin,
        capacity_multiplier=capacity_multiplier,
        disable_cell_list=not use_cells,
        fractional_coordinates=periodic,
        format=partition.Dense,
    )


@contextmanager
def quiet():
    """jax-md's neighbour list casts int64 into int32 scatters under x64; the values are small
    atom indices, so the FutureWarning is noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="scatter inputs have incompatible types")
        yield


def allocate(fns: partition.NeighborListFns, R, extra_capacity: int) -> partition.NeighborList:
    """A fresh list at positions ``R`` (N, 3) (fractional if periodic) with ``extra_capacity``
    spare slots per atom.

    jax-md stores the cell size as a jax array in a static (metadata) field; comparing two such
    lists inside a trace would stage the comparison and fail, so it becomes a Python float.
    """
    with quiet():
        nbrs = fns.allocate(R, extra_capacity=extra_capacity)
    if nbrs.cell_size is not None:
        nbrs = dataclasses.replace(nbrs, cell_size=float(nbrs.cell_size))
    return nbrs


def restore(fns, idx, reference_position, extra_capacity: int) -> partition.NeighborList:
    """A list exactly as saved (bitwise restart): slots ``idx`` (N, K), ``reference_position``
    (N, 3) and capacity."""
    nbrs = allocate(fns, jnp.asarray(reference_position), extra_capacity)
    idx = jnp.asarray(idx, jnp.int32)
    return dataclasses.replace(
        nbrs,
        idx=idx,
        reference_position=jnp.asarray(reference_position),
        max_occupancy=int(idx.shape[1]),
    )


def error_text(nbrs: partition.NeighborList) -> str | None:
    """None if the list is sound; else jax-md's description of what went wrong.

    jax-md 0.2.29 sets MALFORMED_BOX when the box *is* upper triangular (an inverted test), so
    that bit is ignored; :func:`standard_frame` guarantees the triangular box instead.
    """
    code = int(np.asarray(nbrs.error.code)) & ~int(partition.PartitionErrorCode.MALFORMED_BOX)
    if code == 0:
        return None
    return str(partition.PartitionError(np.asarray(code, np.uint8)))
