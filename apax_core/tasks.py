"""Independent tasks (reference calculations, MD walkers) on one of three executors, with every
result stored as it arrives: a rerun after a crash computes only what is missing.

- serial: in this process, one after another;
- processes: a local pool of N worker processes (spawned: no fork of a JAX process);
- dask: a running scheduler (``address``) or a LocalCluster of N workers started for the run.

Pool and LocalCluster workers get their thread count (OMP_NUM_THREADS and the like) before
they run a task: by default the cores shared out, so that workers x threads = cores.

A worker that dies mid-task (killed, out of memory) has its task retried on a fresh worker;
a task that keeps killing workers is reported as lost, never silently dropped. Results come
back in input order whichever executor ran them.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import pickle
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from apax_core.config import DaskExecutor, Executor, Processes
from apax_core.files import atomic_write
from apax_core.threads import set_threads, thread_environment, threads_per_worker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lost:
    """The result of a task whose workers kept dying."""

    error: str


class TaskStore:
    """One pickle per finished task in ``directory``, named by the task's key, written whole
    (temp + rename): a half-written result never counts as done."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.pkl"

    def has(self, key: str) -> bool:
        return self._path(key).is_file()

    def get(self, key: str):
        return pickle.loads(self._path(key).read_bytes())

    def put(self, key: str, result) -> None:
        atomic_write(self._path(key), pickle.dumps(result))


def run_tasks(
    fn: Callable,
    items: Sequence,
    keys: Sequence[str],
    executor: Executor,
    store: TaskStore,
    desc: str = "tasks",
) -> list:
    """``[fn(item) for item in items]`` on ``executor``; results already in ``store`` (same
    key) are not recomputed, new ones are stored as they arrive. ``fn`` and the items must be
    picklable for processes and dask (a top-level function)."""
    if len(set(keys)) != len(keys):
        raise ValueError("task keys must be unique")
    todo = {i: items[i] for i, k in enumerate(keys) if not store.has(k)}
    if len(todo) < len(items):
        logger.info("%s: %d of %d results stored already", desc, len(items) - len(todo), len(items))
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=desc, unit="task")
    for i, result in _dispatch(fn, todo, executor):
        store.put(keys[i], result)
        bar.update()
    bar.close()
    return [store.get(k) for k in keys]


def _dispatch(fn, todo: dict, executor: Executor) -> Iterator[tuple[int, object]]:
    if not todo:
        return iter(())
    if isinstance(executor, Processes):
        return _processes(fn, todo, executor)
    if isinstance(executor, DaskExecutor):
        return _dask(fn, todo, executor)
    return ((i, fn(item)) for i, item in todo.items())


def _processes(fn, todo: dict, config: Processes) -> Iterator[tuple[int, object]]:
    """A spawned pool whose workers set their threads first; when a worker dies the pool
    breaks, and the unfinished tasks go to a fresh pool, at most ``retries`` times."""
    todo, context = dict(todo), multiprocessing.get_context("spawn")
    threads = threads_per_worker(config.n_workers, config.threads_per_worker)
    for attempt in range(config.retries + 1):
        try:
            with ProcessPoolExecutor(
                min(config.n_workers, len(todo)),
                mp_context=context,
                initializer=set_threads,
                initargs=(threads,),
            ) as pool:
                futures = {pool.submit(fn, item): i for i, item in todo.items()}
                for future in as_completed(futures):
                    i = futures[future]
                    result = future.result()
                    del todo[i]
                    yield i, result
            return
        except BrokenProcessPool:
            logger.warning("a worker died; %d tasks left (attempt %d)", len(todo), attempt + 1)
    for i in list(todo):
        yield i, Lost(f"worker died {config.retries + 1} times")


def _dask(fn, todo: dict, config: DaskExecutor) -> Iterator[tuple[int, object]]:
    """Futures on a dask cluster; the scheduler reschedules the task of a dead worker (up to
    ``distributed.scheduler.allowed-failures`` times) before it reports KilledWorker."""
    import dask
    from distributed import Client, KilledWorker, LocalCluster
    from distributed import as_completed as dask_completed

    allowed = {"distributed.scheduler.allowed-failures": config.retries}
    with dask.config.set(allowed), contextlib.ExitStack() as stack:
        target = config.address
        if target is None:  # closed with the stack, also when a task raises
            target = stack.enter_context(
                LocalCluster(
                    n_workers=config.n_workers,
                    threads_per_worker=1,  # dask's task threads; the libraries' are in env
                    processes=True,
                    dashboard_address=None,
                    env=thread_environment(
                        threads_per_worker(config.n_workers, config.threads_per_worker)
                    ),
                )
            )
        client = stack.enter_context(Client(target))
        futures = {client.submit(fn, item, pure=False): i for i, item in todo.items()}
        for future in dask_completed(list(futures)):
            try:
                result = future.result()
            except KilledWorker as err:
                result = Lost(f"worker died: {err}")
            yield futures[future], result
