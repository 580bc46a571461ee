"""One compact table per loop: a row per iteration, from the metrics of its stages."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import zntrack

from apax_core.plots import loop_png
from apax_nodes.errors import one_line_errors
from apax_nodes.grow import Until, verdict

COLUMNS = {
    "iteration": "iter",
    "n_train": "n_train",
    "n_val": "n_val",
    "test_energy_mae": "E MAE meV/atom",
    "test_forces_mae": "F MAE meV/A",
    "forces_z2": "F z^2",
    "forces_spearman": "F rho",
    "calibration": "cal on",
    "forces_miscal": "F miscal",
    "md": "MD",
    "selected": "selected",
    "labelled": "labelled",
    "failed": "failed",
    "implausible": "implausible",
    "missing": "missing",
}
"""Report keys and their column headers."""


def iteration_row(i: int, train, evaluate, md=None, select=None, label=None) -> dict:
    """The row of iteration ``i`` from its stages (the last iteration has no sampling)."""
    test = evaluate.metrics
    row = {
        "iteration": i,
        "n_train": train.metrics.get("n_train"),
        "n_val": train.metrics.get("n_val"),
        "test_energy_mae": test.get("energy_mae"),
        "test_forces_mae": test.get("forces_mae"),
        "forces_z2": test.get("mean_z2_forces"),
        "forces_miscal": test.get("miscal_area_forces"),
        "forces_spearman": test.get("spearman_forces_per_atom"),
        "calibration": calibration_cell(train.metrics),
        "implausible": train.metrics.get("n_implausible"),
        "missing": train.metrics.get("n_missing"),
    }
    if md is not None:
        row["md"] = md_cell(md.status)
        row["n_md_walkers"] = md.status.get("n_walkers", 1)
        row["n_md_stopped"] = md.status.get("n_stopped", int(md.status.get("stopped", False)))
        picked = select.metrics
        row["selected"] = f"{picked['n_selected']}/{picked['n_selected'] + picked['shortfall']}"
        row["labelled"] = label.metrics["n_labelled"]
        row["failed"] = label.metrics["n_failed"]
    return row


def calibration_cell(metrics: dict) -> str | None:
    """``6 MD`` (the loop's own MD frames) or ``3 val`` (the validation set), followed by the
    calibration family unless it is global; None without a calibration."""
    if "n_calibration" not in metrics:
        return None
    origin = "MD" if metrics.get("calibration_set") == "calibration" else "val"
    family = metrics.get("calibration_family", "global")
    return f"{metrics['n_calibration']} {origin}" + ("" if family == "global" else f" {family}")


def md_cell(status: dict) -> str:
    """``stopped (reason) 840 fs``; with several walkers ``2/4 stopped (reason) 3200 fs``
    (the time summed over walkers)."""
    n, k = status.get("n_walkers", 1), status.get("n_stopped", int(status.get("stopped", 0)))
    if k:
        verb = ("" if n == 1 else f"{k}/{n} ") + f"stopped ({status.get('reason')})"
    else:
        verb = "ran" if n == 1 else f"{n} ran"
    return f"{verb} {status.get('time_fs', 0.0):.0f} fs"


def format_table(rows: list[dict]) -> str:
    """Fixed-width text: one header line, one line per iteration."""
    cells = [[_cell(r.get(k)) for k in COLUMNS] for r in rows]
    widths = [max(len(h), *(len(c[j]) for c in cells)) for j, h in enumerate(COLUMNS.values())]
    lines = ["  ".join(h.rjust(w) for h, w in zip(COLUMNS.values(), widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(cell, widths, strict=True)) for cell in cells]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


@one_line_errors
class Report(zntrack.Node):
    """The loop's progress: ``rows`` (one per iteration), ``metrics`` (the last iteration: what
    ``dvc metrics show`` lists), a dvc-plots table and a PNG of test error and calibrated
    force z^2 against the number of labels. Built by ``build_loop``."""

    trains: list = zntrack.deps()
    evaluates: list = zntrack.deps()
    mds: list = zntrack.deps()
    selects: list = zntrack.deps()
    labels: list = zntrack.deps()
    until: dict | None = zntrack.params(None)
    """When the loop is done (an :class:`apax_nodes.grow.Until`); None: no criterion."""
    metrics: dict = zntrack.metrics()
    progress: pd.DataFrame = zntrack.plots(x="n_labels", y=["test_forces_mae", "forces_z2"])
    plots_dir: Path = zntrack.outs_path(zntrack.nwd / "plots")

    def run(self) -> None:
        rows = [
            iteration_row(i, t, e, *sampling)
            for i, (t, e, *sampling) in enumerate(
                zip(
                    self.trains,
                    self.evaluates,
                    self.mds + [None],
                    self.selects + [None],
                    self.labels + [None],
                    strict=True,
                )
            )
        ]
        table = pd.DataFrame(rows)
        table["n_labels"] = table["n_train"] + table["n_val"].fillna(0)
        self.progress = table
        self.metrics = {k: v for k, v in rows[-1].items() if isinstance(v, int | float)}
        if self.until is not None:
            done, why = verdict(rows, Until.model_validate(self.until))
            self.metrics["done"] = int(done)
        self.plots_dir.mkdir(parents=True, exist_ok=True)
        loop_png(table, self.plots_dir / "progress.png")
        print(format_table(rows))
        if self.until is not None:
            print(why)

    def verdict(self) -> str | None:
        """Why the loop is done or not, by its ``until`` criterion (None without one)."""
        if self.until is None:
            return None
        return verdict(self.rows, Until.model_validate(self.until))[1]

    @property
    def rows(self) -> list[dict]:
        return self.progress.to_dict("records")
