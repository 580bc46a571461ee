"""Rattled and strained copies of seed structures: plain (Bootstrap), or labelled and bounded
by a force ceiling under the reference (BoundedBootstrap)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import ase
import znflow
import zntrack

from apax_core.config import Executor, validate
from apax_core.data.sampling import (
    bootstrap,
    bootstrap_metrics,
    bounded_bootstrap,
    check_bounds,
    check_perturbation,
)
from apax_core.files import atomic_write
from apax_core.labelling import Labeller, record_labeller
from apax_nodes.errors import one_line_errors
from apax_nodes.frames import FramesNode, write_h5
from apax_nodes.paths import checkpoint_dir


def building() -> bool:
    """Whether a graph is being built (params are checked then, before any stage runs)."""
    return znflow.get_graph() is not znflow.empty_graph


@one_line_errors
class Bootstrap(FramesNode):
    """``n`` rattled and strained copies of the input structures (cycled), seeded; no labels.
    For molecules and liquids, BoundedBootstrap keeps the reference forces physical."""

    data: list[ase.Atoms] = zntrack.deps()
    n: int = zntrack.params(10)
    rattle: float | dict[str, float] = zntrack.params(0.05)
    """Standard deviation of the Gaussian displacements in A: a number for every atom, or one
    per element, e.g. {"H": 0.03, "O": 0.05} (every element of ``data`` needs an entry)."""
    strain: float = zntrack.params(0.02)
    """Largest component of the random symmetric strain (dimensionless; periodic cells only)."""
    seed: int = zntrack.params(0)

    def __post_init__(self):
        super().__post_init__()
        if building():
            with znflow.disable_graph():
                check_perturbation(self.rattle, self.strain)

    def run(self) -> None:
        frames = bootstrap(self.data, self.n, self.rattle, self.strain, self.seed)
        write_h5(self.frames_path, frames)


@one_line_errors
class BoundedBootstrap(FramesNode):
    """Bootstrap's copies, labelled by ``labeller``, each with its largest atomic force at
    most ``max_force`` (eV/A): a copy above it has its displacements and strain halved (same
    random direction) and is relabelled, up to ``max_tries`` labels. The frames carry their
    labels (feed them to Split, not to Label); a copy kept at scale 1 equals Bootstrap's copy
    with the same ``n, rattle, strain, seed``. ``copies`` records per copy the scale kept, the
    reference calls and the largest force; a copy that never passed is listed there with its
    error and counted in ``metrics`` (``n_failed``), never silently dropped. For frames of
    thermal motion instead, ReferenceMD runs MD with the reference itself."""

    data: list[ase.Atoms] = zntrack.deps()
    labeller: Labeller = zntrack.deps()
    n: int = zntrack.params(10)
    rattle: float | dict[str, float] = zntrack.params(0.05)
    """Standard deviation of the Gaussian displacements at scale 1 in A: a number for every
    atom, or one per element, e.g. {"H": 0.03, "O": 0.05}."""
    strain: float = zntrack.params(0.02)
    """Largest component of the random symmetric strain at scale 1 (periodic cells only)."""
    seed: int = zntrack.params(0)
    max_force: float = zntrack.params(5.0)
    """Ceiling of the largest atomic force norm of a kept frame in eV/A."""
    max_tries: int = zntrack.params(4)
    """Labels per copy at most, at scales 1, 1/2, 1/4, ..."""
    relax_steps: int = zntrack.params(0)
    """FIRE steps under the reference (at most; to max_force / 2) that relax each seed before
    it is copied: a liquid of randomly placed molecules needs a few tens."""
    executor: dict = zntrack.params(default_factory=lambda: {"kind": "serial"})
    """Where the relaxations and copies run, as Label's ``executor``; each result is kept as it
    arrives, so a rerun after a crash computes only what is missing."""
    copies_path: Path = zntrack.outs_path(zntrack.nwd / "copies.json")
    metrics: dict = zntrack.metrics()
    """Frames kept, copies failed, reference calls, largest kept force (eV/A), shrunk share."""

    def __post_init__(self):
        super().__post_init__()
        if building():
            with znflow.disable_graph():
                check_perturbation(self.rattle, self.strain)
                check_bounds(self.max_force, self.max_tries)

    def run(self) -> None:
        work = checkpoint_dir(self.name)
        frames, records = bounded_bootstrap(
            self.data,
            self.n,
            self.rattle,
            self.strain,
            self.seed,
            labeller=self.labeller,
            max_force=self.max_force,
            max_tries=self.max_tries,
            relax_steps=self.relax_steps,
            executor=validate(Executor, self.executor, "executor"),
            store_dir=work / "copies",
        )
        write_h5(self.frames_path, record_labeller(frames, self.labeller))
        atomic_write(self.copies_path, json.dumps(records, indent=2))
        self.metrics = bootstrap_metrics(records)
        shutil.rmtree(work, ignore_errors=True)  # outputs complete

    @property
    def copies(self) -> list[dict]:
        """One record per copy: index, seed, scale, calls, largest_force (eV/A)[, error]."""
        with self.state.fs.open(self.copies_path.as_posix()) as fh:
            return json.load(fh)
