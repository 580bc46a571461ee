"""JAX's persistent compilation cache, on unless switched off.

Every stage of a DVC loop is a new process, and each would compile the same train step,
predictor and MD engine again: seconds each on a CPU, most of a warm start's time. With the
cache, a program whose compiled form (HLO) was seen before is loaded from disk instead.

``APAX_COMPILATION_CACHE`` names the directory (default ``$XDG_CACHE_HOME/apax_core/xla``,
else ``~/.cache/apax_core/xla``); ``off`` disables it. A directory set through JAX's own
``JAX_COMPILATION_CACHE_DIR`` or ``jax.config`` takes precedence. The cache is trusted
code: keep it private to the user.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

ENV = "APAX_COMPILATION_CACHE"
MIN_COMPILE_S = 0.25
"""Compilations faster than this are not worth a file."""


def cache_dir() -> Path | None:
    """The directory this process should use, or None where the cache is off."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in {"off", "0", "false", "none"}:
        return None
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "apax_core" / "xla"


def enable() -> None:
    """Point JAX at :func:`cache_dir` unless a directory is already set (idempotent)."""
    if jax.config.jax_compilation_cache_dir:
        return
    path = cache_dir()
    if path is None:
        return
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_S)
