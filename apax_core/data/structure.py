"""One labelled structure as plain numpy arrays, and the checks that run before any heavy work."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import ase
import numpy as np
from ase.data import chemical_symbols

from apax_core.data.io import DataError
from apax_core.labels import LABELS

_MAX_LISTED = 10


def _frozen(a: np.ndarray) -> np.ndarray:
    """``a`` made read-only, so a frozen Structure cannot be mutated through its arrays."""
    a.setflags(write=False)
    return a


def voigt_to_matrix(stress: np.ndarray) -> np.ndarray:
    """(3, 3) symmetric stress from ASE Voigt order (xx, yy, zz, yz, xz, xy), a 3x3 or 9-vector."""
    s = np.asarray(stress, dtype=np.float64)
    if s.shape == (6,):
        xx, yy, zz, yz, xz, xy = s
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    if s.size == 9:
        return s.reshape(3, 3).copy()
    raise DataError(f"stress must have 6 (Voigt) or 9 components, got shape {s.shape}")


@dataclasses.dataclass(frozen=True, eq=False)
class Structure:
    """Atoms, cell and optional reference labels; arrays are coerced to the Batch dtypes.

    ``cell`` rows are lattice vectors and are zero when no axis is periodic. Labels are
    ``None`` when absent; ``stress`` is the full (3, 3) tensor in eV/A^3 (ASE sign convention).
    """

    Z: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None

    def __post_init__(self) -> None:
        z = np.asarray(self.Z, dtype=np.int32).reshape(-1)
        n = len(z)
        fields = {
            "Z": z,
            "positions": np.asarray(self.positions, dtype=np.float64).reshape(n, 3),
            "cell": np.asarray(self.cell, dtype=np.float64).reshape(3, 3),
            "pbc": np.asarray(self.pbc, dtype=bool).reshape(3),
            "energy": None if self.energy is None else float(self.energy),
            "forces": None
            if self.forces is None
            else np.asarray(self.forces, dtype=np.float64).reshape(n, 3),
            "stress": None if self.stress is None else voigt_to_matrix(self.stress),
        }
        for name, value in fields.items():
            if isinstance(value, np.ndarray):
                value = _frozen(value.copy())  # own the data: callers keep theirs writable
            object.__setattr__(self, name, value)
        if not (_finite(self.positions) and _finite(self.cell)):
            raise DataError("non-finite positions or cell")
        for axis in np.flatnonzero(self.pbc):
            if not np.any(self.cell[axis]):
                raise DataError(f"periodic along axis {axis} but cell vector {axis} is zero")

    @property
    def n_atoms(self) -> int:
        return len(self.Z)

    def has(self, label: str) -> bool:
        """Whether the reference ``label`` ("energy", "forces" or "stress") is present."""
        if label not in LABELS:
            raise ValueError(f"unknown label {label!r}; expected one of {LABELS}")
        return getattr(self, label) is not None


def _label(atoms: ase.Atoms, key: str):
    """``key`` from the attached calculator's results, else from ``info``/``arrays``, else None."""
    results = getattr(atoms.calc, "results", None) or {}
    if results.get(key) is not None:
        return results[key]
    if atoms.info.get(key) is not None:
        return atoms.info[key]
    return atoms.arrays.get(key)


def from_atoms(atoms: ase.Atoms) -> Structure:
    """Convert an ASE Atoms (labels from a SinglePointCalculator or info/arrays) to a Structure."""
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = atoms.cell.array if pbc.any() else np.zeros((3, 3))
    return Structure(
        Z=atoms.numbers,
        positions=atoms.positions,
        cell=cell,
        pbc=pbc,
        energy=_label(atoms, "energy"),
        forces=_label(atoms, "forces"),
        stress=_label(atoms, "stress"),
    )


def _indices_text(indices: list[int]) -> str:
    """'structure 3' or 'structures 1, 4, ... (12 in total)'."""
    if len(indices) == 1:
        return f"structure {indices[0]}"
    shown = ", ".join(str(i) for i in indices[:_MAX_LISTED])
    more = f", ... ({len(indices)} in total)" if len(indices) > _MAX_LISTED else ""
    return f"structures {shown}{more}"


def _finite(value) -> bool:
    return bool(np.all(np.isfinite(value)))


def check_labels(structures: Sequence[Structure], labels: Sequence[str], source: str) -> None:
    """Raise one DataError listing every structure that lacks, or has non-finite, ``labels``.

    Runs before neighbour lists are built, so a bad file fails in seconds, not after minutes.
    """
    problems = []
    for label in labels:
        if label not in LABELS:
            raise ValueError(f"unknown label {label!r}; expected one of {LABELS}")
        values = [getattr(s, label) for s in structures]
        missing = [i for i, v in enumerate(values) if v is None]
        bad = [i for i, v in enumerate(values) if v is not None and not _finite(v)]
        if missing:
            verb = "has" if len(missing) == 1 else "have"
            problems.append(f"{_indices_text(missing)} {verb} no {label}")
        if bad:
            verb = "has" if len(bad) == 1 else "have"
            problems.append(f"{_indices_text(bad)} {verb} non-finite {label}")
    if problems:
        raise DataError(f"{source}: " + "; ".join(problems))


def _symbol(z: int) -> str:
    return chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}"


def _check_known(z: np.ndarray, owner: np.ndarray, elements: Sequence[int], source: str | None):
    """Raise DataError naming every element of ``z`` not in ``elements`` and where it first is."""
    unknown = ~np.isin(z, elements)
    if not unknown.any():
        return
    first: dict[int, int] = {}
    for z_, i in zip(z[unknown].tolist(), owner[unknown].tolist(), strict=True):
        first.setdefault(z_, i)
    parts = [f"element {_symbol(z_)} (first in structure {i})" for z_, i in first.items()]
    known = ", ".join(_symbol(z_) for z_ in elements)
    prefix = f"{source}: " if source else ""
    raise DataError(f"{prefix}{'; '.join(parts)} not among the model elements [{known}]")


def species_index(
    data: Sequence[Structure] | np.ndarray, elements: Sequence[int], source: str | None = None
) -> np.ndarray:
    """Position of each atomic number in ``elements`` (int32), as the model's embedding index.

    ``data`` is a sequence of Structures (result: all atoms concatenated, structure order), or
    a Z array: 1-D for one structure, or (B, N) with 0 for padding (padding maps to index 0;
    the atom mask decides what is real). Unknown elements raise DataError naming each symbol
    and the first structure index that contains it (prefixed with ``source`` if given).
    """
    if isinstance(data, np.ndarray):
        z = np.atleast_2d(data).astype(np.int64)
        real = z != 0
        owner = np.broadcast_to(np.arange(len(z))[:, None], z.shape)
        _check_known(z[real], owner[real], elements, source)
    else:
        z = np.concatenate([s.Z for s in data]) if data else np.zeros(0, np.int64)
        real = np.ones(z.shape, bool)
        _check_known(
            z, np.repeat(np.arange(len(data)), [s.n_atoms for s in data]), elements, source
        )
    order = np.argsort(elements)
    out = np.zeros(z.shape, dtype=np.int32)
    out[real] = order[np.searchsorted(np.asarray(elements)[order], z[real])]
    return out.reshape(np.shape(data)) if isinstance(data, np.ndarray) else out
