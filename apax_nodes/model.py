"""What every node that holds a model shares: loading it (here, at another revision, or from
another repository) and the ``get_calculator`` protocol of IPSuite and mlipx."""

from __future__ import annotations

import tempfile
from pathlib import Path

from apax_core.model_dir import Model, load_model
from apax_nodes.frames import fetch


def local_model_dir(node) -> Path:
    """A local path to ``node.model_dir``: the workspace itself, or a fetched copy when the node
    was loaded from another revision or repository (``zntrack.from_rev``)."""
    if node.state.rev is None and node.state.remote is None:
        return Path(node.model_dir)
    return fetch(node, node.model_dir, Path(tempfile.mkdtemp(prefix="apax_model_")) / "model")


class ModelNode:
    """Mixin for nodes with a ``model_dir`` output holding an apax_core model directory."""

    def get_model(self) -> Model:
        return load_model(local_model_dir(self))

    def get_calculator(self, *, directory: str | Path | None = None, **kwargs):
        """An ASE calculator with energy, forces, stress and (ensembles) uncertainties.

        ``directory`` is accepted for the IPSuite protocol; the calculator writes no files.
        """
        from apax_core.calculator import ApaxCalculator

        return ApaxCalculator(self.get_model(), **kwargs)
