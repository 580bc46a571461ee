"""Structures from a file."""

from __future__ import annotations

import zntrack

from apax_core.data import read_frames
from apax_nodes.errors import one_line_errors
from apax_nodes.frames import FramesNode, write_h5


@one_line_errors
class LoadData(FramesNode):
    """Any ASE-readable file or H5MD -> ``frames``."""

    file: str = zntrack.deps_path()

    def run(self) -> None:
        write_h5(self.frames_path, read_frames(self.file))
