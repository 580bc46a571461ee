"""A random train/validation/test split."""

from __future__ import annotations

from pathlib import Path

import ase
import zntrack

from apax_core.data.sampling import split_indices
from apax_core.errors import InputError
from apax_nodes.errors import one_line_errors
from apax_nodes.frames import read_h5, write_h5

PARTS = ("train", "val", "test")


@one_line_errors
class Split(zntrack.Node):
    """Random train/validation/test split by fractions (seeded); ``frames`` is the train part."""

    data: list[ase.Atoms] = zntrack.deps()
    fractions: list[float] = zntrack.params(default_factory=lambda: [0.8, 0.1, 0.1])
    seed: int = zntrack.params(0)
    split_dir: Path = zntrack.outs_path(zntrack.nwd / "split")

    def run(self) -> None:
        if len(self.fractions) != len(PARTS):
            raise InputError("fractions must be 3 numbers (train, val, test)")
        frames = self.data
        parts = split_indices(len(frames), self.fractions, self.seed)
        for name, idx in zip(PARTS, parts, strict=True):
            write_h5(self.split_dir / f"{name}.h5", [frames[i] for i in idx])

    def part(self, name: str) -> list[ase.Atoms]:
        return read_h5(self, self.split_dir / f"{name}.h5")

    @property
    def frames(self) -> list[ase.Atoms]:
        return self.part("train")

    @property
    def val_frames(self) -> list[ase.Atoms]:
        return self.part("val")

    @property
    def test_frames(self) -> list[ase.Atoms]:
        return self.part("test")
