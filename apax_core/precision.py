"""Numerical precision policy: fp32 networks, fp64 positions, scale/shift and energy sums.

JAX decides at trace time whether float64 exists. We never flip the global flag at import;
entry points run their work inside :func:`x64`, a scoped switch, so jitted functions are traced
(and cached) with float64 available while the host program around them is left alone. Entering
it also switches on the persistent compilation cache (:mod:`apax_core.compilation_cache`).
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp

from apax_core import compilation_cache

Precision = Literal["fp32", "fp64"]


def x64():
    """Context manager under which float64 arrays exist (scoped, not global)."""
    compilation_cache.enable()
    return jax.enable_x64(True)


def with_x64(fn):
    """Decorator: run ``fn`` inside :func:`x64`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with x64():
            return fn(*args, **kwargs)

    return wrapper


def network_dtype(precision: Precision):
    """The dtype of descriptor and readout computations."""
    return jnp.float64 if precision == "fp64" else jnp.float32
