"""What every node that holds a model shares: loading it (here, at another revision, or from
another repository) and the ``get_calculator`` protocol of IPSuite and mlipx."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import znflow

from apax_core.model_dir import Model, load_model
from apax_nodes.frames import fetch

_FETCHED: dict[tuple, Path] = {}
"""Model directories fetched from other revisions or repositories, once each per process."""


def _fetch_root() -> Path:
    """One temporary directory per process for fetched models, removed when it exits."""
    if "root" not in _FETCHED:
        _FETCHED["root"] = Path(tempfile.mkdtemp(prefix="apax_models_"))
        atexit.register(shutil.rmtree, _FETCHED["root"], True)
    return _FETCHED["root"]


def local_model_dir(node) -> Path:
    """A local path to ``node.model_dir``: the workspace itself, or a copy fetched once per
    (repository, revision, node) when the node was loaded with ``zntrack.from_rev``."""
    if node.state.rev is None and node.state.remote is None:
        return Path(node.model_dir)
    key = (node.state.remote, node.state.rev, node.name)
    if key not in _FETCHED:
        destination = _fetch_root() / str(len(_FETCHED)) / "model"
        _FETCHED[key] = fetch(node, node.model_dir, destination)
    return _FETCHED[key]


def require_apax_model(node, field: str = "model") -> None:
    """TypeError when the graph is built if ``node.<field>`` is a model of another package (a
    node with ``get_calculator`` only): the JAX MD engine and warm starts need our model.
    Evaluate and Label take any ``get_calculator`` node."""
    if znflow.get_graph() is znflow.empty_graph:
        return  # loading a built node (zntrack run, from_rev): checked when it was built
    with znflow.disable_graph():
        model = getattr(node, field)
    model = model.instance if isinstance(model, znflow.Connection) else model
    if model is not None and not hasattr(model, "get_model"):
        raise TypeError(
            f"{type(node).__name__}.{field}: needs an apax model node (Train, Calibrate); "
            f"{type(model).__name__} only offers get_calculator"
        )


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

    @property
    def available(self) -> bool:
        """mlipx's question before it builds a stage: can ``get_calculator`` work in this
        environment (the JAX engine imports)? The model itself may not be trained yet."""
        try:
            import apax_core.calculator  # noqa: F401
        except ImportError:
            return False
        return True

    def get_spec(self) -> None:
        """mlipx's description of the training data's reference method (DFT functional, basis,
        dataset). A model directory does not record which labeller made its data, so there is
        none to give; mlipx then compares no specs for this model."""
        return None
