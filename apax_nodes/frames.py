"""Frames on disk: H5MD files written whole, read back through a node's ``state.fs`` so that
nodes loaded with ``zntrack.from_rev`` (another revision, another repository) work too."""

from __future__ import annotations

from pathlib import Path

import ase
import h5py
import znh5md
import zntrack

from apax_core.data.io import write_empty_h5md, write_frames


def write_h5(path: str | Path, frames: list[ase.Atoms]) -> None:
    """H5MD file of ``frames``; an empty list gives a valid H5MD file with zero frames (DVC
    needs the output, and znh5md, ZnDraw or mlipx read it as an empty trajectory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if frames:
        write_frames(path, frames)
    else:
        write_empty_h5md(path)


def read_h5(node, path: str | Path) -> list[ase.Atoms]:
    """All frames of an H5MD output of ``node``, through its (possibly remote) filesystem."""
    with node.state.fs.open(Path(path).as_posix(), "rb") as raw, h5py.File(raw, "r") as fh:
        if "particles" not in fh:  # an empty output of an earlier version
            return []
        return znh5md.IO(file_handle=fh)[:]


def fetch(node, path: str | Path, destination: Path) -> Path:
    """Copy a file or directory output of ``node`` to a local ``destination``."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    node.state.fs.get(Path(path).as_posix(), destination.as_posix(), recursive=True)
    return destination


class FramesNode(zntrack.Node):
    """Base of the nodes whose output is one H5MD file of structures, ``frames_path``, read
    back as ``frames`` through ``state.fs`` (so also from another revision or repository)."""

    frames_path: Path = zntrack.outs_path(zntrack.nwd / "frames.h5")

    @property
    def frames(self) -> list[ase.Atoms]:
        return read_h5(self, self.frames_path)
