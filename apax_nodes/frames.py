"""Frames on disk: H5MD files written whole, read back through a node's ``state.fs`` so that
nodes loaded with ``zntrack.from_rev`` (another revision, another repository) work too."""

from __future__ import annotations

from pathlib import Path

import ase
import h5py
import znh5md

from apax_core.data import write_frames

EMPTY = "apax_nodes_empty"


def write_h5(path: str | Path, frames: list[ase.Atoms]) -> None:
    """H5MD file of ``frames``; an empty list gives a marked empty file (DVC needs the output)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if frames:
        write_frames(path, frames)
        return
    tmp = path.with_suffix(".tmp.h5")
    with h5py.File(tmp, "w") as fh:
        fh.attrs[EMPTY] = True
    tmp.replace(path)


def read_h5(node, path: str | Path) -> list[ase.Atoms]:
    """All frames of an H5MD output of ``node``, through its (possibly remote) filesystem."""
    with node.state.fs.open(Path(path).as_posix(), "rb") as raw, h5py.File(raw, "r") as fh:
        if fh.attrs.get(EMPTY, False):
            return []
        return znh5md.IO(file_handle=fh)[:]


def fetch(node, path: str | Path, destination: Path) -> Path:
    """Copy a file or directory output of ``node`` to a local ``destination``."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    node.state.fs.get(Path(path).as_posix(), destination.as_posix(), recursive=True)
    return destination
