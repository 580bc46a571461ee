"""Structures from a file."""

from __future__ import annotations

from pathlib import Path

import ase
import zntrack

from apax_core.data import read_frames
from apax_nodes.errors import one_line_errors
from apax_nodes.frames import read_h5, write_h5


@one_line_errors
class LoadData(zntrack.Node):
    """Any ASE-readable file or H5MD -> ``frames``."""

    file: str = zntrack.deps_path()
    frames_path: Path = zntrack.outs_path(zntrack.nwd / "frames.h5")

    def run(self) -> None:
        write_h5(self.frames_path, read_frames(self.file))

    @property
    def frames(self) -> list[ase.Atoms]:
        return read_h5(self, self.frames_path)
