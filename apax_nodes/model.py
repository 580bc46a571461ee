"""What every node that holds a model shares: loading it (here, at another revision, or from
another repository) and the ``get_calculator`` protocol of IPSuite and mlipx."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

import znflow

from apax_core.labelling import read_labellers
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

    def get_spec(self):
        """mlipx's description of the training data's reference method, from the labellers the
        model directory records (see :func:`mlipx_spec`); None for a model trained before
        they were recorded, or on frames none of which says its labeller."""
        records = read_labellers(local_model_dir(self))
        known = [r for r in records or [] if isinstance(r["labeller"], dict)]
        return _as_mlipx(mlipx_spec(records)) if known else None


MLIPX_CODES = {
    "vasp": "VASP",
    "cp2k": "CP2K",
    "orca": "ORCA",
    "gpaw": "GPAW",
    "espresso": "QuantumEspresso",
    "aims": "FHI-aims",
    "psi4": "PSI4",
}
"""ASE calculator classes (lower case) of the codes mlipx's schema names."""


def mlipx_spec(records: list[dict]) -> dict:
    """An mlipx spec (``{"data": ...}``, mlipx/spec/mlips-schema.json) of labeller records
    with frame counts (``labellers.json``). The schema knows DFT, HF and public datasets, so
    every labeller is ``type: DFT``: a DFT code's class and ``xc`` where it has them, else
    ``code: other`` with the method as the functional (GFN2-xTB, EMT). Data of several
    labellers name all of them ("GFN2-xTB + EMT"), never one; the frame counts and settings
    of each are in the metadata, which mlipx does not compare."""
    known = [r["labeller"] for r in records if isinstance(r["labeller"], dict)]
    functionals = sorted({_functional(r) for r in known})
    codes = {_code(r) for r in known}
    # the version of the package that made the labels, unless it only drives a DFT code
    versions = {f"{r['code']} {r['version']}" for r in known if _code(r) == "other"}
    versions = sorted(v for v in versions if not v.endswith(" None"))
    if len(known) < len(records):
        functionals.append("unknown")
    data = {
        "type": "DFT",
        "code": codes.pop() if len(codes) == 1 else "other",
        "code_version": ", ".join(versions) or None,
        "method": {"functional": " + ".join(functionals)},
    }
    parts = [f"{r['n_frames']} frames: {json.dumps(r['labeller'])}" for r in records]
    kind = "several labellers" if len(records) > 1 else "one labeller"
    return {"data": data, "metadata": {"description": f"{kind}; " + "; ".join(parts)}}


def _functional(record: dict) -> str:
    xc = record.get("settings", {}).get("xc") if _code(record) != "other" else None
    return xc if isinstance(xc, str) else record["method"]


def _code(record: dict) -> str:
    name = record["method"].rpartition(".")[2].lower()
    return MLIPX_CODES.get(name, "other")


def _as_mlipx(spec: dict):
    """mlipx's own object where mlipx is installed (its ``compare_specs`` wants one), else
    the plain dict of the same content."""
    try:
        from mlipx.spec import MLIPSpec
    except ImportError:
        return spec
    return MLIPSpec.model_validate(spec)
