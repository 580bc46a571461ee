"""ZnTrack nodes for active learning with apax_core. One small file per node; no numerics here."""

import importlib

_HOMES = {
    "EMTLabeller": "apax_core.labelling",
    "GenericLabeller": "apax_core.labelling",
    "LJLabeller": "apax_core.labelling",
    "XTBLabeller": "apax_core.labelling",
    "Bootstrap": "apax_nodes.bootstrap",
    "BoundedBootstrap": "apax_nodes.bootstrap",
    "BuildBulk": "apax_nodes.build_bulk",
    "BuildLiquid": "apax_nodes.build_liquid",
    "Calibrate": "apax_nodes.calibrate",
    "Dataset": "apax_nodes.dataset",
    "Evaluate": "apax_nodes.evaluate",
    "Label": "apax_nodes.label",
    "LiquidStructure": "apax_nodes.liquid",
    "LoadData": "apax_nodes.load_data",
    "MD": "apax_nodes.md",
    "ReferenceMD": "apax_nodes.reference_md",
    "Report": "apax_nodes.report",
    "Select": "apax_nodes.select",
    "Split": "apax_nodes.split",
    "Train": "apax_nodes.train",
}
"""Where each public name lives. Names are imported on first use (PEP 562), so a stage's
process (``zntrack run apax_nodes.split.Split``) imports its own node's dependencies only: a
data stage needs no JAX."""


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'apax_nodes' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))


__all__ = sorted(_HOMES)

NODES = [n for n in __all__ if not n.endswith("Labeller")]


def nodes() -> dict[str, list[str]]:
    """The ``zntrack.nodes`` entry point: {module: [node names]}, as IPSuite and mlipx return."""
    return {"apax_nodes": NODES}
