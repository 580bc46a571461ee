"""Reading and writing structure files: ASE formats and H5MD, with errors that name the file."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import ase
import ase.io
import numpy as np
from ase.io.formats import UnknownFileTypeError, filetype, ioformats

from apax_core.errors import InputError
from apax_core.files import atomic_write

logger = logging.getLogger(__name__)

H5MD_SUFFIXES = frozenset({".h5", ".h5md", ".hdf5"})


class DataError(InputError):
    """Bad input data (missing file, unreadable file, missing labels, unknown elements)."""


def is_h5md(path: str | os.PathLike) -> bool:
    """Whether ``path`` is treated as H5MD (decided by suffix, case-insensitive)."""
    return Path(path).suffix.lower() in H5MD_SUFFIXES


def _read_any(path: Path) -> list[ase.Atoms]:
    """All frames of ``path`` without error translation."""
    if is_h5md(path):
        import znh5md  # deferred: h5py import is slow and only needed for H5MD

        return list(znh5md.IO(path)[:])
    frames = ase.io.read(path, index=":")
    return [frames] if isinstance(frames, ase.Atoms) else list(frames)


def read_frames(path: str | os.PathLike) -> list[ase.Atoms]:
    """Every structure in ``path``; raise DataError naming the file on any problem."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: contains no structures")
    try:
        frames = _read_any(path)
    except Exception as err:  # any reader failure becomes one error type naming the file
        raise DataError(f"{path}: cannot read ({type(err).__name__}: {err})") from err
    if not frames:
        raise DataError(f"{path}: contains no structures")
    bad = [k for k, a in enumerate(frames) if not np.all(np.isfinite(a.positions))]
    if bad:
        raise DataError(f"{path}: structure {bad[0]} has non-finite positions ({len(bad)} in all)")
    logger.info("read %d structures from %s", len(frames), path)
    return frames


def _ase_format(path: Path) -> str:
    """The ASE format implied by the file name, extxyz when the name implies none ASE knows."""
    try:
        fmt = filetype(path, read=False)
    except UnknownFileTypeError:
        return "extxyz"
    return fmt if fmt in ioformats else "extxyz"


def _write_any(tmp: Path, frames: list[ase.Atoms], h5md: bool, fmt: str | None) -> None:
    """Write ``frames`` to ``tmp`` (a fresh path) as H5MD or in the ASE format ``fmt``."""
    if h5md:
        import znh5md

        znh5md.IO(tmp).extend(frames)
    else:
        ase.io.write(tmp, frames, format=fmt)


def write_frames(path: str | os.PathLike, frames: Sequence[ase.Atoms]) -> None:
    """Write all ``frames`` to ``path`` atomically (temp file in the same directory, then rename).

    H5MD for .h5/.h5md/.hdf5; otherwise the ASE format of the name (extxyz for .xyz/.extxyz).
    A reader never sees a half-written file, and an interrupted write leaves the old file intact.
    """
    path = Path(path)
    frames = list(frames)
    if not frames:
        raise DataError(f"{path}: no structures to write")
    h5md = is_h5md(path)
    fmt = None if h5md else _ase_format(path)
    try:
        atomic_write(path, lambda tmp: _write_any(tmp, frames, h5md, fmt))
    except Exception as err:  # e.g. an info entry the format cannot store
        raise DataError(f"{path}: cannot write ({type(err).__name__}: {err})") from err
    logger.info("wrote %d structures to %s", len(frames), path)


def write_empty_h5md(path: str | os.PathLike) -> None:
    """A valid H5MD file with zero frames, whole (temp + rename): znh5md and H5MD readers see
    an empty trajectory, and znh5md can extend it. Made by writing one placeholder frame and
    cutting every per-frame dataset to length 0."""
    import znh5md

    def write(tmp: Path) -> None:
        znh5md.IO(tmp).extend([ase.Atoms("H", positions=[[0.0, 0.0, 0.0]])])
        truncate_h5md(tmp, 0)

    atomic_write(path, write)


def truncate_h5md(path: str | os.PathLike, n: int) -> None:
    """Cut every per-frame dataset of the H5MD file ``path`` to its first ``n`` frames, in
    place (an MD restart drops the frames written after its checkpoint). Raises DataError if
    the file is missing or holds fewer than ``n`` frames."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: H5MD file not found (expected at least {n} frames)")

    def cut(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.ndim >= 1 and obj.maxshape[0] is None:
            if obj.shape[0] > n:
                obj.resize(n, axis=0)
            elif obj.shape[0] < n and name.endswith("value"):
                raise DataError(f"{path}: dataset {name} has {obj.shape[0]} < {n} frames")

    with h5py.File(path, "a") as fh:
        fh.visititems(cut)
