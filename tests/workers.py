"""Task functions for the executor tests, in a module with no heavy imports: every spawned
process or dask worker that runs them imports only this."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def die_once(marker: str) -> str:
    """Kill the worker the first time (a node lost mid-task), succeed when retried."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return marker


def always_die(_) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def thread_settings(_) -> dict[str, str | None]:
    """The thread variables the worker that runs this sees."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    return {name: os.environ.get(name) for name in names}
