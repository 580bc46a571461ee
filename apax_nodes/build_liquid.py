"""A molecular liquid built from scratch."""

from __future__ import annotations

import zntrack

from apax_core.data.liquids import molecular_box
from apax_nodes.errors import one_line_errors
from apax_nodes.frames import FramesNode, write_h5


@one_line_errors
class BuildLiquid(FramesNode):
    """``n_molecules`` randomly placed and rotated copies of ``molecule`` (an
    ``ase.build.molecule`` name) in a cubic periodic box at ``density`` (g/cm^3), molecules
    at least ``min_distance`` (A) apart: a start structure for NPT or NVT sampling."""

    molecule: str = zntrack.params("H2O")
    n_molecules: int = zntrack.params(16)
    density: float = zntrack.params(0.997)
    """g/cm^3 (water at 298 K and 1 bar: 0.997)."""
    min_distance: float = zntrack.params(1.8)
    """Closest approach in A of atoms of different molecules."""
    seed: int = zntrack.params(0)

    def run(self) -> None:
        atoms = molecular_box(
            self.molecule, self.n_molecules, self.density, self.seed, self.min_distance
        )
        write_h5(self.frames_path, [atoms])
