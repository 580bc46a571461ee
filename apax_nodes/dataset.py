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
    the validation set grows with the data). The validation frames that came as ``new`` (a
    loop's own MD frames, never the bootstrap) also form ``calibration_frames``, newest first:
    what a loop's models are calibrated on."""

    previous: zntrack.Node | None = zntrack.deps(None)
    """A node with ``frames`` and ``val_frames`` (the last Dataset, or the initial Split);
    None: start empty."""
    new: list[ase.Atoms] = zntrack.deps()
    val_fraction: float = zntrack.params(0.0)
    """Share of the new frames that go to the validation set: floor(val_fraction * n_new),
    chosen at random (seeded); the rest go to training."""
    seed: int = zntrack.params(0)
    max_calibration: int | None = zntrack.params(None)
    """Keep at most this many calibration frames (the newest); None: all."""
    val_path: Path = zntrack.outs_path(zntrack.nwd / "val_frames.h5")
    calibration_path: Path = zntrack.outs_path(zntrack.nwd / "calibration_frames.h5")
    metrics: dict = zntrack.metrics()

    def run(self) -> None:
        old = [] if self.previous is None else self.previous.frames
        old_val = [] if self.previous is None else self.previous.val_frames
        new = self.new
        val_idx, train_idx = split_indices(
            len(new), [self.val_fraction, 1 - self.val_fraction], self.seed
        )
        new_val = [new[i] for i in sorted(val_idx)]
        train = old + [new[i] for i in sorted(train_idx)]
        calibration = (new_val + calibration_frames(self.previous))[: self.max_calibration]
        write_h5(self.frames_path, train)
        write_h5(self.val_path, old_val + new_val)
        write_h5(self.calibration_path, calibration)
        self.metrics = {
            "n_train": len(train),
            "n_val": len(old_val) + len(new_val),
            "n_new": len(new),
            "n_calibration": len(calibration),
        }

    @property
    def val_frames(self) -> list[ase.Atoms]:
        return read_h5(self, self.val_path)

    @property
    def calibration_frames(self) -> list[ase.Atoms]:
        return read_h5(self, self.calibration_path)


def calibration_frames(node) -> list[ase.Atoms]:
    """The calibration frames of a Dataset; none for other sources (a Split, the bootstrap)."""
    return [] if node is None else getattr(node, "calibration_frames", [])
