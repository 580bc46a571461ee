"""The growing training set: previous dataset + new frames -> one file per iteration, so that
iteration i depends on one output of iteration i-1 and dvc.yaml grows linearly."""

from __future__ import annotations

from pathlib import Path

import ase
import zntrack

from apax_nodes.frames import read_h5, write_h5


class Dataset(zntrack.Node):
    previous: zntrack.Node | None = zntrack.deps(None)
    """A node with ``frames`` (the last Dataset, or the initial split); None: start empty."""
    new: list[ase.Atoms] = zntrack.deps()
    frames_path: Path = zntrack.outs_path(zntrack.nwd / "frames.h5")
    metrics: dict = zntrack.metrics()

    def run(self) -> None:
        old = [] if self.previous is None else self.previous.frames
        new = self.new
        write_h5(self.frames_path, old + new)
        self.metrics = {"n_structures": len(old) + len(new), "n_new": len(new)}

    @property
    def frames(self) -> list[ase.Atoms]:
        return read_h5(self, self.frames_path)
