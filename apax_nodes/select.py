"""Choose the most informative structures of a pool (batch active learning, paper sec. 2.4)."""

from __future__ import annotations

from pathlib import Path

import ase
import numpy as np
import pandas as pd
import znflow
import zntrack

from apax_core.config import SelectionMethod, validate
from apax_core.data import from_atoms
from apax_core.select import select, write_diagnostics
from apax_core.select.api import select_with_calculator
from apax_nodes.errors import one_line_errors
from apax_nodes.model import require_apax_model


def selection_method(method: dict):
    """The validated selection method of a node's ``method`` param (errors name the field)."""
    return validate(SelectionMethod, method, "method")


@one_line_errors
class Select(zntrack.Node):
    """``n`` structures of ``pool`` chosen by ``method`` (default: greedy max-distance in the
    last-layer-gradient feature space, seeded from the current training data). A pool with
    fewer structures gives them all, an empty one none; ``metrics`` records the shortfall."""

    model: zntrack.Node = zntrack.deps()
    pool: list[ase.Atoms] = zntrack.deps()
    train_data: list[ase.Atoms] = zntrack.deps()
    n: int = zntrack.params(10)
    method: dict = zntrack.params(default_factory=lambda: {"kind": "max_distance"})
    selected_ids: list[int] = zntrack.outs()
    metrics: dict = zntrack.metrics()
    """Pool size, structures selected and the shortfall (``n`` minus selected: a short pool)."""
    distances: pd.DataFrame = zntrack.plots(x="pick", y="distance")
    diagnostics_dir: Path = zntrack.outs_path(zntrack.nwd / "diagnostics")

    def __post_init__(self):
        super().__post_init__()
        with znflow.disable_graph():
            method = self.method
        if isinstance(method, dict) and method.get("kind", "max_distance") == "max_distance":
            require_apax_model(self)  # max distance needs our model's features

    def run(self) -> None:
        method = selection_method(self.method)
        pool = self.pool
        if not hasattr(self.model, "get_model"):  # another package's model: its calculator
            selection = select_with_calculator(self.model.get_calculator(), pool, self.n, method)
        else:
            selection = self._select(method, pool)
        self.selected_ids = [int(i) for i in selection.indices]
        self.metrics = {
            "n_pool": len(pool),
            "n_selected": len(self.selected_ids),
            "shortfall": self.n - len(self.selected_ids),
        }
        self.diagnostics_dir.mkdir(parents=True, exist_ok=True)
        write_diagnostics(selection, self.diagnostics_dir)
        scores = np.asarray(selection.scores, dtype=float)
        self.distances = pd.DataFrame({"pick": np.arange(1, len(scores) + 1), "distance": scores})

    def _select(self, method, pool):
        return select(
            self.model.get_model(),
            [from_atoms(a) for a in self.train_data],
            [from_atoms(a) for a in pool],
            self.n,
            method,
            rank_all=True,
            progress_bar=True,
        )

    @property
    def frames(self) -> list[ase.Atoms]:
        pool = self.pool
        return [pool[i] for i in self.selected_ids]
