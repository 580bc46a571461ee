"""The parts of jax-md the engine uses (dataclasses, partition, simulate, space), imported
without running jax-md's package ``__init__``.

That ``__init__`` imports every submodule, and ``rigid_body`` and ``energy`` (with e3nn-jax)
run about 120 small XLA programs at import: 4-5 s of every MD process (a stage, a walker, a
test), against 0.03 s for the four modules here (bench/startup.py). The package is stood in
by its bare module object while they load and removed again, so a later ``import jax_md``
(user code, a test) runs the real ``__init__`` and reuses these same module objects.
"""

from __future__ import annotations

import importlib.util
import sys

if "jax_md" in sys.modules:
    from jax_md import dataclasses, partition, simulate, space
else:
    sys.modules["jax_md"] = importlib.util.module_from_spec(importlib.util.find_spec("jax_md"))
    try:
        from jax_md import dataclasses, partition, simulate, space
    finally:
        del sys.modules["jax_md"]

__all__ = ["dataclasses", "partition", "simulate", "space"]
