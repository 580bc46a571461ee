"""Where independent tasks run (labelling, MD walkers): see :mod:`apax_core.tasks`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, NonNegativeInt, PositiveInt

from apax_core.config.common import Strict


class Serial(Strict):
    """In this process, one task after another, with the threads this process has."""

    kind: Literal["serial"] = "serial"


class Processes(Strict):
    """A pool of local worker processes."""

    kind: Literal["processes"] = "processes"
    n_workers: PositiveInt = 2
    retries: NonNegativeInt = 2
    """How often the unfinished tasks of a dead worker are resubmitted to a fresh pool."""
    threads_per_worker: PositiveInt | None = None
    """Threads of each worker (OMP_NUM_THREADS, MKL_NUM_THREADS, OPENBLAS_NUM_THREADS, set
    before the worker builds a calculator); None shares the cores out: cores // n_workers,
    at least 1. Workers x threads = cores: more oversubscribes the machine, and an xTB
    worker with more threads than its share runs slower under load, not faster."""


class DaskExecutor(Strict):
    """A dask cluster: a running scheduler, or a LocalCluster of ``n_workers`` for the run.
    For SLURM/PBS, start a dask-jobqueue cluster and give its scheduler address."""

    kind: Literal["dask"] = "dask"
    address: str | None = None
    """Scheduler address (tcp://host:8786); None starts a LocalCluster."""
    n_workers: PositiveInt = 2
    """Workers of the LocalCluster (one task at a time each); ignored with an address."""
    retries: NonNegativeInt = 2
    """Worker deaths a task survives (the LocalCluster's allowed-failures)."""
    threads_per_worker: PositiveInt | None = None
    """Threads of each LocalCluster worker (as for ``processes``; None: cores // n_workers);
    ignored with an address, where the cluster's job script sets them (OMP_NUM_THREADS)."""


Executor = Annotated[Serial | Processes | DaskExecutor, Field(discriminator="kind")]
