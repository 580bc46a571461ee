"""Reference labels for the frames of another node (the labellers and the labelling itself
live in apax_core.labelling)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import ase
import zntrack

from apax_core.config import Executor, validate
from apax_core.files import atomic_write

# Graphs built before the labellers moved name them apax_nodes.label.<Labeller> in params.yaml.
from apax_core.labelling import (  # noqa: F401
    EMTLabeller,
    GenericLabeller,
    Labeller,
    LJLabeller,
    XTBLabeller,
    label_frames,
)
from apax_nodes.errors import one_line_errors
from apax_nodes.frames import FramesNode, write_h5
from apax_nodes.paths import checkpoint_dir


@one_line_errors
class Label(FramesNode):
    """Reference labels for ``data``; a structure whose calculation fails is recorded in
    ``failures.json`` with its index and error, never silently dropped. Every frame records
    its labeller in ``atoms.info["labeller"]`` (method, code, version, settings)."""

    data: list[ase.Atoms] = zntrack.deps()
    labeller: Labeller = zntrack.deps()
    executor: dict = zntrack.params(default_factory=lambda: {"kind": "serial"})
    """Where the calculations run: {kind: serial}, {kind: processes, n_workers: 4} or
    {kind: dask, address: ...} (see apax_core.config.executor); results are kept per
    structure as they arrive, so a rerun after a crash computes only what is missing.
    ``threads_per_worker`` (default: cores // n_workers) sets each worker's threads."""
    stress: bool = zntrack.params(True)
    """Label the stress (eV/A^3) of 3D-periodic cells; molecules, slabs and wires never get
    one. False skips it, e.g. for NVT data of a liquid that no stress loss uses."""
    failures_path: Path = zntrack.outs_path(zntrack.nwd / "failures.json")
    metrics: dict = zntrack.metrics()

    def run(self) -> None:
        executor = validate(Executor, self.executor, "executor")
        work = checkpoint_dir(self.name)
        frames, failures = label_frames(
            self.labeller, self.data, executor, work / "labels", self.name, self.stress
        )
        write_h5(self.frames_path, frames)
        atomic_write(self.failures_path, json.dumps(failures, indent=2))
        self.metrics = {"n_labelled": len(frames), "n_failed": len(failures)}
        shutil.rmtree(work, ignore_errors=True)  # outputs complete

    @property
    def failures(self) -> list[dict]:
        with self.state.fs.open(self.failures_path.as_posix()) as fh:
            return json.load(fh)
