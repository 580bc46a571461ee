"""Sampling: the JAX MD engine (jax-md), its configuration pieces, UDD and calibration.

``run_md(model, atoms, config, directory) -> MDResult`` and ``read_trajectory(path)`` are the
API the workflow layer uses; the ASE calculator lives in :mod:`apax_core.calculator`. The
engine (and with it jax-md) is imported on first use, so importing the calculator or the
transforms stays light.
"""

from apax_core.md.calibration import GlobalCalibration
from apax_core.md.io import read_status, read_trajectory
from apax_core.md.transforms import Transform, predictor
from apax_core.md.udd import UDD, udd_energy

__all__ = [
    "GlobalCalibration",
    "MDResult",
    "Transform",
    "UDD",
    "predictor",
    "read_status",
    "read_trajectory",
    "run_md",
    "udd_energy",
]


def __getattr__(name: str):
    if name in ("run_md", "MDResult"):
        from apax_core.md import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'apax_core.md' has no attribute {name!r}")
