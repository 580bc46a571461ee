"""A loop that runs until it is done: append an iteration, ``dvc repro``, judge, repeat.

A user of a new system does not know how many iterations it needs. :class:`Until` states when
the loop is done; the loop's Report judges every iteration against it (:func:`verdict`), and
:func:`grow` builds the graph for one more iteration (the stages ``build_loop`` writes for that
number, so a grown loop is the loop built with that many iterations) until the Report says done
or the maximum is reached.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class Until(BaseModel):
    """When a loop is done: for ``patience`` consecutive iterations every MD walker ran to its
    end (no stop check fired) and the test force MAE of the next model changed by less than
    ``force_change_percent``; at the latest after ``max_iterations``."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    patience: int = Field(2, ge=1)
    """Consecutive quiet iterations needed."""
    force_change_percent: float = Field(5.0, ge=0.0)
    """Largest relative change (%) of the test force MAE from one model to the next that
    counts as converged."""
    max_iterations: int = Field(10, ge=1)
    """``grow`` stops here whether or not the criterion holds."""


def quiet(rows: list[dict], j: int, until: Until) -> tuple[bool, str]:
    """Whether iteration ``j`` of the Report ``rows`` was quiet, and why (not)."""
    row, after = rows[j], rows[j + 1]
    stopped, n = row.get("n_md_stopped"), row.get("n_md_walkers")
    if stopped is None:
        return False, f"iteration {j}: no MD status"
    if stopped:
        return False, f"iteration {j}: {int(stopped)}/{int(n)} walkers stopped early"
    before, now = row.get("test_forces_mae"), after.get("test_forces_mae")
    change = 100.0 * abs(now - before) / before
    if change >= until.force_change_percent:
        return False, (
            f"iteration {j}: test F MAE changed {change:.1f} % "
            f"(>= {until.force_change_percent:g} %)"
        )
    return True, f"iteration {j}: walkers ran to the end, test F MAE changed {change:.1f} %"


def verdict(rows: list[dict], until: Until) -> tuple[bool, str]:
    """(done, why) for a loop whose Report has ``rows`` (one per iteration, the last without
    MD): done when its last ``patience`` iterations with MD were all quiet."""
    n = len(rows) - 1  # iterations with MD
    if n < until.patience:
        return False, f"not done: {n} iterations, {until.patience} quiet ones needed"
    judged = [quiet(rows, j, until) for j in range(n - until.patience, n)]
    if all(ok for ok, _ in judged):
        return True, "done: " + "; ".join(why for _, why in judged)
    first = next(why for ok, why in judged if not ok)
    if n >= until.max_iterations:
        return False, f"stopped at the maximum of {until.max_iterations} iterations ({first})"
    return False, f"not done ({first})"


def grow(
    build_graph: Callable[[int], None],
    *,
    start: int = 1,
    report: str = "Report",
    repro: Callable[[], None] | None = None,
) -> tuple[int, str]:
    """Build the graph with ``start``, ``start`` + 1, ... iterations and ``dvc repro`` each,
    until the loop's Report (the stage ``report``) says done or the criterion's
    ``max_iterations`` is built; returns the number of iterations and the Report's verdict.
    The criterion is the Report's ``until`` (``build_loop(until=...)``): one place."""
    import zntrack

    repro = repro or dvc_repro
    n = start
    while True:
        build_graph(n)
        repro()
        node = zntrack.from_rev(report)
        until = Until.model_validate(node.until or {})
        done, why = verdict(node.rows, until)
        print(f"grow: {n} iterations: {why}", flush=True)
        if done or n >= until.max_iterations:
            return n, why
        n += 1


def dvc_repro() -> None:
    """``dvc repro`` in the working directory; its failure stops ``grow`` with its exit code."""
    subprocess.run(["dvc", "repro"], check=True)


def script_builder(script: Path) -> Callable[[int], None]:
    """A graph builder from a project script that takes ``--iterations N`` (as
    ``example_project/main.py`` does)."""

    def build_graph(n: int) -> None:
        subprocess.run([sys.executable, str(script), "--iterations", str(n)], check=True)

    return build_graph
