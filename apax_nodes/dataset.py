"""The growing training and validation sets: previous sets + new frames -> one file each per
iteration, so that iteration i depends on one output of iteration i-1 and dvc.yaml grows
linearly."""

from __future__ import annotations

from pathlib import Path

import ase
import zntrack

from apax_core.data.sampling import split_indices
from apax_nodes.errors import one_line_errors
from apax_nodes.frames import FramesNode, read_h5, write_h5


@one_line_errors
class Dataset(FramesNode):
    """``previous`` plus ``new`` frames, of which ``val_fraction`` join the validation set (so
    the validation set grows with the data and every model is calibrated on the new regime)."""

    previous: zntrack.Node | None = zntrack.deps(None)
    """A node with ``frames`` and ``val_frames`` (the last Dataset, or the initial Split);
    None: start empty."""
    new: list[ase.Atoms] = zntrack.deps()
    val_fraction: float = zntrack.params(0.0)
    """Share of the new frames that go to the validation set: floor(val_fraction * n_new),
    chosen at random (seeded); the rest go to training."""
    seed: int = zntrack.params(0)
    val_path: Path = zntrack.outs_path(zntrack.nwd / "val_frames.h5")
    metrics: dict = zntrack.metrics()

    def run(self) -> None:
        old = [] if self.previous is None else self.previous.frames
        old_val = [] if self.previous is None else self.previous.val_frames
        new = self.new
        val_idx, train_idx = split_indices(
            len(new), [self.val_fraction, 1 - self.val_fraction], self.seed
        )
        train = old + [new[i] for i in sorted(train_idx)]
        val = old_val + [new[i] for i in sorted(val_idx)]
        write_h5(self.frames_path, train)
        write_h5(self.val_path, val)
        self.metrics = {"n_train": len(train), "n_val": len(val), "n_new": len(new)}

    @property
    def val_frames(self) -> list[ase.Atoms]:
        return read_h5(self, self.val_path)
