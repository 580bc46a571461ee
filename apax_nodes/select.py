"""Choose the most informative structures of a pool (batch active learning, paper sec. 2.4)."""

from __future__ import annotations

from pathlib import Path

import ase
import numpy as np
import pandas as pd
import zntrack
from pydantic import TypeAdapter

from apax_core.config import SelectionMethod
from apax_core.data import from_atoms
from apax_core.select import select, write_diagnostics


def selection_method(method: dict):
    """The validated selection method of a node's ``method`` param (errors name the field)."""
    return TypeAdapter(SelectionMethod).validate_python(method)


class Select(zntrack.Node):
    """``n`` structures of ``pool`` chosen by ``method`` (default: greedy max-distance in the
    last-layer-gradient feature space, seeded from the current training data)."""

    model: zntrack.Node = zntrack.deps()
    pool: list[ase.Atoms] = zntrack.deps()
    train_data: list[ase.Atoms] = zntrack.deps()
    n: int = zntrack.params(10)
    method: dict = zntrack.params(default_factory=lambda: {"kind": "max_distance"})
    selected_ids: list[int] = zntrack.outs()
    distances: pd.DataFrame = zntrack.plots(x="pick", y="distance")
    diagnostics_dir: Path = zntrack.outs_path(zntrack.nwd / "diagnostics")

    def run(self) -> None:
        method = selection_method(self.method)
        pool = self.pool
        if len(pool) < self.n:
            raise ValueError(
                f"{self.name}: asked for {self.n} structures, the pool has {len(pool)}"
            )
        selection = select(
            self.model.get_model(),
            [from_atoms(a) for a in self.train_data],
            [from_atoms(a) for a in pool],
            self.n,
            method,
            rank_all=True,
            progress=True,
        )
        self.selected_ids = [int(i) for i in selection.indices]
        self.diagnostics_dir.mkdir(parents=True, exist_ok=True)
        write_diagnostics(selection, self.diagnostics_dir)
        scores = np.asarray(selection.scores, dtype=float)
        self.distances = pd.DataFrame({"pick": np.arange(1, len(scores) + 1), "distance": scores})

    @property
    def frames(self) -> list[ase.Atoms]:
        pool = self.pool
        return [pool[i] for i in self.selected_ids]
