"""Structure sources: a file, a crystal built with ASE, rattled/strained copies, a split."""

from __future__ import annotations

from pathlib import Path

import ase
import numpy as np
import zntrack
from ase.build import bulk

from apax_core.data import read_frames
from apax_nodes.frames import read_h5, write_h5


class LoadData(zntrack.Node):
    """Any ASE-readable file or H5MD -> ``frames``."""

    file: str = zntrack.deps_path()
    frames_path: Path = zntrack.outs_path(zntrack.nwd / "frames.h5")

    def run(self) -> None:
        write_h5(self.frames_path, read_frames(self.file))

    @property
    def frames(self) -> list[ase.Atoms]:
        return read_h5(self, self.frames_path)


class BuildBulk(zntrack.Node):
    """A periodic crystal (``ase.build.bulk``), repeated, optionally with vacancies."""

    element: str = zntrack.params("Cu")
    crystal: str = zntrack.params("fcc")
    a: float = zntrack.params(3.61)
    cubic: bool = zntrack.params(True)
    repeat: list[int] = zntrack.params(default_factory=lambda: [2, 2, 2])
    vacancies: int = zntrack.params(0)
    frames_path: Path = zntrack.outs_path(zntrack.nwd / "frames.h5")

    def run(self) -> None:
        atoms = bulk(self.element, self.crystal, a=self.a, cubic=self.cubic).repeat(self.repeat)
        del atoms[list(range(self.vacancies))]
        write_h5(self.frames_path, [atoms])

    @property
    def frames(self) -> list[ase.Atoms]:
        return read_h5(self, self.frames_path)


def perturbed(atoms: ase.Atoms, rng, rattle: float, strain: float) -> ase.Atoms:
    """A copy with a random symmetric strain (|e_ij| <= strain) and Gaussian displacements."""
    out = atoms.copy()
    out.calc = None
    if out.pbc.any() and strain > 0:
        e = rng.uniform(-strain, strain, size=(3, 3))
        out.set_cell(out.cell.array @ (np.eye(3) + 0.5 * (e + e.T)), scale_atoms=True)
    out.positions += rng.normal(scale=rattle, size=out.positions.shape)
    return out


class Bootstrap(zntrack.Node):
    """``n`` rattled and strained copies of the input structures (cycled), seeded."""

    data: list[ase.Atoms] = zntrack.deps()
    n: int = zntrack.params(10)
    rattle: float = zntrack.params(0.05)
    """Standard deviation of the displacements (A)."""
    strain: float = zntrack.params(0.02)
    seed: int = zntrack.params(0)
    frames_path: Path = zntrack.outs_path(zntrack.nwd / "frames.h5")

    def run(self) -> None:
        seeds = self.data
        if not seeds:
            raise ValueError(f"{self.name}: no input structures to bootstrap from")
        rng = np.random.default_rng(self.seed)
        frames = [perturbed(seeds[k % len(seeds)], rng, self.rattle, self.strain)
                  for k in range(self.n)]  # fmt: skip
        write_h5(self.frames_path, frames)

    @property
    def frames(self) -> list[ase.Atoms]:
        return read_h5(self, self.frames_path)


class Split(zntrack.Node):
    """Random train/validation/test split by fractions (seeded); ``frames`` is the train part."""

    data: list[ase.Atoms] = zntrack.deps()
    fractions: list[float] = zntrack.params(default_factory=lambda: [0.8, 0.1, 0.1])
    seed: int = zntrack.params(0)
    split_dir: Path = zntrack.outs_path(zntrack.nwd / "split")

    def run(self) -> None:
        frames, f = self.data, np.asarray(self.fractions, dtype=float)
        if len(f) != 3 or np.any(f < 0) or not np.isclose(f.sum(), 1.0):
            raise ValueError(f"{self.name}.fractions must be 3 non-negative numbers summing to 1")
        order = np.random.default_rng(self.seed).permutation(len(frames))
        n_train, n_val = (np.floor(f[:2] * len(frames))).astype(int)
        parts = np.split(order, [n_train, n_train + n_val])
        for name, idx in zip(("train", "val", "test"), parts, strict=True):
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
