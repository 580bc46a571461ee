"""Sampling: the JAX MD engine (jax-md) and its configuration pieces.

``run_md(model, atoms, config, directory) -> MDResult`` and ``read_trajectory(path)`` are the
API the workflow layer uses; the ASE calculator lives in :mod:`apax_core.calculator`, UDD and
calibration in :mod:`apax_core.transforms`. The engine is built in :mod:`apax_core.md.build` and
run by :mod:`apax_core.md.run`, both (and with them jax-md) imported on first use, so importing
this package stays light.
"""

from apax_core.md.io import read_trajectory

__all__ = ["MDResult", "read_trajectory", "run_md"]


def __getattr__(name: str):
    if name in ("run_md", "MDResult"):
        from apax_core.md import run

        return getattr(run, name)
    raise AttributeError(f"module 'apax_core.md' has no attribute {name!r}")
