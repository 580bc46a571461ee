"""The MD engine's neighbour list: two kinds behind one interface, chosen per system.

The engine integrates fractional coordinates s (N, 3) of a cell (3, 3), rows are lattice
vectors (``space.periodic_general``; momenta and forces stay Cartesian). Molecules and slabs
without a vector along an open axis get an invertible cell from
:func:`~apax_core.md.image_neighbours.embedding_cell`, so every system lives in one kind of
space. A :class:`PairList` knows its cell and periodicity and offers what the engine needs:
``allocate``, ``count`` and ``needed`` (host), ``update``, ``rebuilt`` and ``structure`` (jittable),
``error`` and ``overflowed`` (host), ``save`` and ``restore`` (checkpoint).

- :class:`ImageList` (``"images"``, :mod:`apax_core.md.image_neighbours`): any cell down to one
  atom, any periodicity (slabs, wires, molecules); slots carry integer image shifts, positions
  stay unwrapped.
- :class:`MinimumImageList` (``"minimum_image"``): jax-md's Dense list (a cell list where the
  box holds four cells per side), exact where every height is at least 2 (r_max + skin);
  positions are wrapped into the cell, which must be in jax-md's triangular form
  (:func:`standard_frame`). It rebuilds faster than the brute-force image list for large
  cells.

:func:`list_kind` chooses by :func:`~apax_core.md.image_neighbours.recommend`.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar

import ase
import jax
import jax.numpy as jnp
import numpy as np
import vesin

from apax_core.data.batch import Batch
from apax_core.md import image_neighbours as im
from apax_core.md.image_neighbours import heights
from apax_core.md.jax_md_parts import dataclasses, partition, space
from apax_core.md.model_adapter import structure as minimum_image_structure

logger = logging.getLogger(__name__)

IMAGES, MINIMUM_IMAGE = "images", "minimum_image"


def list_kind(atoms: ase.Atoms, cutoff: float) -> str:
    """The list kind for ``atoms`` with list cutoff ``cutoff`` (r_max + skin, A)."""
    return im.recommend(atoms.cell.array, atoms.pbc, len(atoms), cutoff)


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


def pair_list(
    kind: str,
    atoms: ase.Atoms,
    r_max: float,
    skin: float,
    capacity_multiplier: float,
    cell_margin: float = 0.0,
) -> PairList:
    """The list of ``kind`` for ``atoms`` (its cell, periodicity and size), pairs within
    ``r_max + skin`` (A), ``capacity_multiplier`` slots per neighbour at allocation. An image
    list keeps its pairs while the cell's heights shrink by up to ``cell_margin`` (a fraction;
    constant pressure)."""
    cell = im.embedding_cell(atoms.cell.array, atoms.pbc)
    pbc = tuple(bool(p) for p in atoms.pbc)
    if kind == MINIMUM_IMAGE:
        return MinimumImageList(cell, pbc, r_max, skin, capacity_multiplier)
    # The model sees a volume (stress) only where the structure has a cell of its own.
    volume = any(pbc) and np.array_equal(cell, atoms.cell.array)
    return ImageList(cell, pbc, r_max, skin, capacity_multiplier, volume, cell_margin)


@dataclass(frozen=True, eq=False)
class PairList:
    """What the engine asks of a neighbour list. Each kind implements, on the host,
    ``allocate(R, extra) -> list``, ``count(R) -> int`` (the most neighbours of any atom),
    ``needed(list, R) -> int`` (slots that would have held
    what an overflowed list met), ``error(list) -> str | None``, ``overflowed(list) -> bool``,
    ``save(list) -> dict`` of arrays and ``restore(arrays, extra) -> list`` (bitwise), and,
    jittable, ``update(list, R, cell) -> list``, ``rebuilt(old, new) -> () bool`` and
    ``structure(R, list, Z, cell) -> Batch``. ``R`` is (N, 3) fractional, ``Z`` (N,) atomic
    numbers, ``cell`` (3, 3) rows in A (the current cell: constant in NVT)."""

    kind: ClassVar[str]
    wrapped: ClassVar[bool]
    """Positions are wrapped into the cell along its periodic axes at every step."""
    cell: np.ndarray
    """(3, 3) the cell of the fractional coordinates at the start, rows in A."""
    pbc: tuple[bool, bool, bool]
    r_max: float
    skin: float
    capacity_multiplier: float

    def fractional(self, positions: np.ndarray) -> np.ndarray:
        """(N, 3) fractional coordinates of Cartesian ``positions`` (N, 3), wrapped if the list
        needs it."""
        s = np.asarray(positions, float) @ np.linalg.inv(self.cell)
        return np.where(self.pbc, s % 1.0 % 1.0, s) if self.wrapped else s  # -1e-17 -> 0

    def space(self):
        """jax-md (displacement, shift) in fractional coordinates of the cell."""
        return space.periodic_general(
            jnp.asarray(self.cell.T), fractional_coordinates=True, wrapped=self.wrapped
        )

    def wrap(self, R: jax.Array) -> jax.Array:
        """(N, 3) ``R`` wrapped into [0, 1) along the periodic axes (the frames' positions);
        an identity on wrapped positions."""
        return R - jnp.floor(R) * jnp.asarray(self.pbc, R.dtype)


@dataclass(frozen=True, eq=False)
class ImageList(PairList):
    """:mod:`apax_core.md.image_neighbours` behind the engine's interface."""

    kind: ClassVar[str] = IMAGES
    wrapped: ClassVar[bool] = False
    volume: bool = True
    """The structure has a cell volume (periodic, its own invertible cell): stress is
    (1/V) dE/d(strain); else the model's Batch has a zero cell (zero stress), as in the
    calculator."""
    cell_margin: float = 0.0
    """Fraction by which the cell's heights may shrink before pairs could be missed (NPT)."""
    fns: im.ImageListFns = field(init=False, repr=False)

    def __post_init__(self):
        fns = im.image_neighbour_list(
            self.cell, self.pbc, self.r_max, self.skin, self.capacity_multiplier, self.cell_margin
        )
        object.__setattr__(self, "fns", fns)

    def allocate(self, R, extra: int) -> im.ImageNeighbours:
        """A fresh list at ``R`` with ``extra`` spare slots per atom (host)."""
        return self.fns.allocate(jnp.asarray(R), jnp.asarray(self.cell), extra)

    def count(self, R) -> int:
        """The most neighbours of any atom at ``R`` (host)."""
        return self.fns.count(jnp.asarray(R), jnp.asarray(self.cell))

    def needed(self, nbrs: im.ImageNeighbours, R) -> int:
        """Slots per atom that would have held every neighbour ``nbrs`` met (host)."""
        return int(int(nbrs.max_count) * self.capacity_multiplier)

    def update(self, nbrs: im.ImageNeighbours, R, cell) -> im.ImageNeighbours:
        return self.fns.update(nbrs, R, cell)

    def rebuilt(self, old: im.ImageNeighbours, new: im.ImageNeighbours) -> jax.Array:
        return jnp.any(old.reference != new.reference)

    def structure(self, R, nbrs: im.ImageNeighbours, Z, cell) -> Batch:
        return im.structure_with_images(R, nbrs, Z, cell, self.volume)

    def error(self, nbrs: im.ImageNeighbours) -> str | None:
        return im.error_text(nbrs)

    def overflowed(self, nbrs: im.ImageNeighbours) -> bool:
        return bool(int(nbrs.error) & im.OVERFLOW)

    def save(self, nbrs: im.ImageNeighbours) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in nbrs._asdict().items()}

    def restore(self, arrays: dict[str, np.ndarray], extra: int) -> im.ImageNeighbours:
        """The saved list, bitwise (its capacity is the saved one)."""
        return im.ImageNeighbours(**{k: jnp.asarray(arrays[k]) for k in im.ImageNeighbours._fields})


@dataclass(frozen=True, eq=False)
class MinimumImageList(PairList):
    """jax-md's Dense minimum-image list behind the engine's interface."""

    kind: ClassVar[str] = MINIMUM_IMAGE
    wrapped: ClassVar[bool] = True
    fns: partition.NeighborListFns = field(init=False, repr=False)

    def __post_init__(self):
        box = jnp.asarray(self.cell.T)
        fns = neighbour_fns(
            make_space(box)[0], box, self.r_max, self.skin, self.capacity_multiplier
        )
        object.__setattr__(self, "fns", fns)

    def allocate(self, R, extra: int) -> partition.NeighborList:
        """A fresh list at ``R`` with ``extra`` spare slots per atom (host)."""
        return allocate(self.fns, jnp.asarray(R), extra)

    def count(self, R) -> int:
        """The most neighbours of any atom at ``R`` (host; vesin, the cell is periodic)."""
        positions = np.asarray(R, float) @ self.cell
        i = vesin.NeighborList(cutoff=self.r_max + self.skin, full_list=True).compute(
            points=positions, box=self.cell, periodic=True, quantities="i"
        )[0]
        return int(np.bincount(i, minlength=len(positions)).max())

    def needed(self, nbrs: partition.NeighborList, R) -> int:
        """Slots per atom a list allocated at ``R`` (where the chunk ended) gets (host)."""
        if not bool(jnp.all(jnp.isfinite(R))):
            return 0
        return int(self.allocate(R, 0).idx.shape[-1])

    def update(self, nbrs: partition.NeighborList, R, cell) -> partition.NeighborList:
        return nbrs.update(R, box=cell.T)

    def rebuilt(self, old: partition.NeighborList, new: partition.NeighborList) -> jax.Array:
        return jnp.any(old.reference_position != new.reference_position)

    def structure(self, R, nbrs: partition.NeighborList, Z, cell) -> Batch:
        return minimum_image_structure(R, nbrs.idx, Z, cell.T)

    def error(self, nbrs: partition.NeighborList) -> str | None:
        return error_text(nbrs)

    def overflowed(self, nbrs: partition.NeighborList) -> bool:
        return bool(nbrs.did_buffer_overflow)

    def save(self, nbrs: partition.NeighborList) -> dict[str, np.ndarray]:
        return {"idx": np.asarray(nbrs.idx), "reference": np.asarray(nbrs.reference_position)}

    def restore(self, arrays: dict[str, np.ndarray], extra: int) -> partition.NeighborList:
        """The saved list, bitwise: slots ``idx`` (N, K) and reference positions (N, 3)."""
        reference = jnp.asarray(arrays["reference"])
        nbrs = allocate(self.fns, reference, extra)
        idx = jnp.asarray(arrays["idx"], jnp.int32)
        return dataclasses.replace(
            nbrs, idx=idx, reference_position=reference, max_occupancy=int(idx.shape[1])
        )


def make_space(box: jnp.ndarray):
    """(displacement, shift) in wrapped fractional coordinates of ``box`` (3, 3), columns are
    lattice vectors."""
    return space.periodic_general(box, fractional_coordinates=True, wrapped=True)


def neighbour_fns(
    displacement, box, r_max: float, skin: float, capacity_multiplier: float
) -> partition.NeighborListFns:
    """jax-md minimum-image neighbour-list functions (Dense format, ``idx`` (N, K)) for cutoff
    ``r_max`` and ``skin``; ``box`` (3, 3) lattice vectors as columns. A cell list is used
    where the box holds at least four cells per side (jax-md's condition)."""
    cutoff = r_max + skin
    use_cells = float(np.min(heights(np.asarray(box).T))) >= 4 * cutoff
    return partition.neighbor_list(
        displacement,
        box,
        r_max,
        dr_threshold=skin,
        capacity_multiplier=capacity_multiplier,
        disable_cell_list=not use_cells,
        fractional_coordinates=True,
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
    """A fresh jax-md list at positions ``R`` (N, 3) (fractional) with ``extra_capacity``
    spare slots per atom.

    jax-md stores the cell size as a jax array in a static (metadata) field; comparing two such
    lists inside a trace would stage the comparison and fail, so it becomes a Python float.
    """
    with quiet():
        nbrs = fns.allocate(R, extra_capacity=extra_capacity)
    if nbrs.cell_size is not None:
        nbrs = dataclasses.replace(nbrs, cell_size=float(nbrs.cell_size))
    return nbrs


def error_text(nbrs: partition.NeighborList) -> str | None:
    """None if the jax-md list is sound; else jax-md's description of what went wrong.

    jax-md 0.2.29 sets MALFORMED_BOX when the box *is* upper triangular (an inverted test), so
    that bit is ignored; :func:`standard_frame` guarantees the triangular box instead.
    """
    code = int(np.asarray(nbrs.error.code)) & ~int(partition.PartitionErrorCode.MALFORMED_BOX)
    if code == 0:
        return None
    return str(partition.PartitionError(np.asarray(code, np.uint8)))
