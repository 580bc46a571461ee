"""ZnTrack nodes for active learning with apax_core. One small file per node; no numerics here."""

from apax_core.labelling import EMTLabeller, GenericLabeller, LJLabeller, XTBLabeller
from apax_nodes.bootstrap import Bootstrap, BoundedBootstrap
from apax_nodes.build_bulk import BuildBulk
from apax_nodes.build_liquid import BuildLiquid
from apax_nodes.calibrate import Calibrate
from apax_nodes.dataset import Dataset
from apax_nodes.evaluate import Evaluate
from apax_nodes.label import Label
from apax_nodes.liquid import LiquidStructure
from apax_nodes.load_data import LoadData
from apax_nodes.md import MD
from apax_nodes.reference_md import ReferenceMD
from apax_nodes.report import Report
from apax_nodes.select import Select
from apax_nodes.split import Split
from apax_nodes.train import Train

__all__ = [
    "Bootstrap",
    "BoundedBootstrap",
    "BuildBulk",
    "BuildLiquid",
    "Calibrate",
    "Dataset",
    "EMTLabeller",
    "Evaluate",
    "GenericLabeller",
    "LJLabeller",
    "Label",
    "LiquidStructure",
    "LoadData",
    "MD",
    "ReferenceMD",
    "Report",
    "Select",
    "Split",
    "Train",
    "XTBLabeller",
]

NODES = [n for n in __all__ if not n.endswith("Labeller")]


def nodes() -> dict[str, list[str]]:
    """The ``zntrack.nodes`` entry point: {module: [node names]}, as IPSuite and mlipx return."""
    return {"apax_nodes": NODES}
