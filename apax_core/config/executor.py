"""Where independent tasks run (labelling, MD walkers): see :mod:`apax_core.tasks`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, NonNegativeInt, PositiveInt

from apax_core.config.common import Strict


class Serial(Strict):
    """In this process, one task after another."""

    kind: Literal["serial"] = "serial"


class Processes(Strict):
    """A pool of local worker processes."""

    kind: Literal["processes"] = "processes"
    n_workers: PositiveInt = 2
    retries: NonNegativeInt = 2
    """How often the unfinished tasks of a dead worker are resubmitted to a fresh pool."""


class DaskExecutor(Strict):
    """A dask cluster: a running scheduler, or a LocalCluster of ``n_workers`` for the run.
    For SLURM/PBS, start a dask-jobqueue cluster and give its scheduler address."""

    kind: Literal["dask"] = "dask"
    address: str | None = None
    """Scheduler address (tcp://host:8786); None starts a LocalCluster."""
    n_workers: PositiveInt = 2
    """Workers of the LocalCluster (one thread each); ignored with an address."""
    retries: NonNegativeInt = 2
    """Worker deaths a task survives (the LocalCluster's allowed-failures)."""


Executor = Annotated[Serial | Processes | DaskExecutor, Field(discriminator="kind")]
