"""Sampling: the JAX MD engine (jax-md) and its configuration pieces.

``run_md(model, atoms, config, directory) -> MDResult`` and ``read_trajectory(path)`` are the
API the workflow layer uses; the ASE calculator lives in :mod:`apax_core.calculator`, UDD and
calibration in :mod:`apax_core.transforms`. The engine (and with it jax-md) is imported on first
use, so importing this package stays light.
"""

from apax_core.md.io import read_trajectory

__all__ = ["MDResult", "read_trajectory", "run_md"]


def __getattr__(name: str):
    if name in ("run_md", "MDResult"):
        from apax_core.md import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'apax_core.md' has no attribute {name!r}")
