"""XLA's CPU library fusions switched off for our workloads, before JAX starts its backend.

jaxlib 0.10's CPU backend hands fusions to YNNPACK (``ynn_fusion`` ops in a profile): dots
with their element-wise neighbours, element-wise ops, reductions. On our programs that is
slower where the fused work per element is small: in a GMNN force call the pair-level
pull-back (a few flops per pair, reductions over 3 or 5 components) ran as one such fusion of
5-10 ms at 864 atoms. With ``--xla_cpu_experimental_ynn_fusion_type=`` (no YNNPACK fusions;
XLA's own loops and dot emitters instead), measured by bench/xla_flags.py in alternating
processes (medians of 3): one force evaluation at 864 atoms 0.69x, a training step 0.85x,
EquivMP MD 0.84x, GMNN MD 0.88-0.96x (within its noise), the shallow force uncertainty 1.0x.

:func:`tune` adds the flag to ``XLA_FLAGS`` when this jaxlib knows it and neither the user's
``XLA_FLAGS`` sets it nor ``APAX_XLA_TUNING=off``. XLA reads ``XLA_FLAGS`` when JAX creates
its backend (the first array or computation), so importing apax_core after that changes
nothing; an unknown flag would abort XLA, hence the check. No JAX import here.
"""

from __future__ import annotations

import importlib.util
import mmap
import os
from pathlib import Path

FLAG = "xla_cpu_experimental_ynn_fusion_type"


def tune() -> None:
    """Add ``--{FLAG}=`` (no fusion type) to ``XLA_FLAGS`` where it applies (module docstring)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if FLAG in flags or os.environ.get("APAX_XLA_TUNING", "").strip().lower() in {"off", "0"}:
        return
    if _jaxlib_knows(FLAG.encode()):
        os.environ["XLA_FLAGS"] = f"{flags} --{FLAG}=".strip()


def _jaxlib_knows(name: bytes) -> bool:
    """Whether one of jaxlib's shared libraries contains ``name``."""
    spec = importlib.util.find_spec("jaxlib")
    if spec is None or not spec.submodule_search_locations:
        return False
    for path in Path(next(iter(spec.submodule_search_locations))).glob("*.so"):
        try:
            with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
                if m.find(name) >= 0:
                    return True
        except (OSError, ValueError):  # unreadable, or empty (mmap of 0 bytes)
            continue
    return False
