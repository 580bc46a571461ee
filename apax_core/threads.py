"""Threads of a worker process: how many, and setting them before its libraries start.

OpenMP (tblite's xTB), MKL and OpenBLAS read their thread counts from the environment when
they are loaded, so a worker sets these variables first, before it builds a calculator. This
module imports nothing heavy: a spawned worker imports it before anything else.
"""

from __future__ import annotations

import os

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def cores() -> int:
    """CPU cores this process may run on (its affinity where the OS says, else all)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def threads_per_worker(n_workers: int, threads: int | None) -> int:
    """``threads``, or the cores shared out so that workers x threads = cores (at least 1)."""
    return threads if threads is not None else max(1, cores() // n_workers)


def thread_environment(threads: int) -> dict[str, str]:
    """The variables that give a process ``threads`` threads in every numerical library."""
    return {name: str(threads) for name in THREAD_VARIABLES}


def set_threads(threads: int) -> None:
    """Worker initializer: ``threads`` threads for every library this process loads later."""
    os.environ.update(thread_environment(threads))
