"""A crystal built with ASE."""

from __future__ import annotations

import zntrack
from ase.build import bulk

from apax_nodes.errors import one_line_errors
from apax_nodes.frames import FramesNode, write_h5


@one_line_errors
class BuildBulk(FramesNode):
    """A periodic crystal (``ase.build.bulk``), repeated, optionally with vacancies."""

    element: str = zntrack.params("Cu")
    crystal: str = zntrack.params("fcc")
    a: float = zntrack.params(3.61)
    cubic: bool = zntrack.params(True)
    repeat: list[int] = zntrack.params(default_factory=lambda: [2, 2, 2])
    vacancies: int = zntrack.params(0)

    def run(self) -> None:
        atoms = bulk(self.element, self.crystal, a=self.a, cubic=self.cubic).repeat(self.repeat)
        del atoms[list(range(self.vacancies))]
        write_h5(self.frames_path, [atoms])
