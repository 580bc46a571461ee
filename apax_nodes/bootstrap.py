"""Rattled and strained copies of seed structures."""

from __future__ import annotations

import ase
import zntrack

from apax_core.data.sampling import bootstrap
from apax_nodes.errors import one_line_errors
from apax_nodes.frames import FramesNode, write_h5


@one_line_errors
class Bootstrap(FramesNode):
    """``n`` rattled and strained copies of the input structures (cycled), seeded."""

    data: list[ase.Atoms] = zntrack.deps()
    n: int = zntrack.params(10)
    rattle: float = zntrack.params(0.05)
    """Standard deviation of the displacements (A)."""
    strain: float = zntrack.params(0.02)
    """Largest strain component of the random symmetric strain."""
    seed: int = zntrack.params(0)

    def run(self) -> None:
        frames = bootstrap(self.data, self.n, self.rattle, self.strain, self.seed)
        write_h5(self.frames_path, frames)
