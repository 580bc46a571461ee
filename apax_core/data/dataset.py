"""A dataset with precomputed neighbour lists, reproducible batching, and background prefetch."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from tqdm.auto import tqdm

from apax_core.data.batch import Batch
from apax_core.data.io import DataError
from apax_core.data.neighbours import NeighbourList, neighbour_list
from apax_core.data.padding import collate, pad_sizes
from apax_core.data.structure import Structure

if TYPE_CHECKING:
    from apax_core.config import PadBinned, PadToMax

logger = logging.getLogger(__name__)

PROGRESS_MIN = 50
"""Show a progress bar for neighbour lists of more structures than this."""

T = TypeVar("T")


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of epoch ``epoch``: a pure function of (seed, epoch).

    Resumed training therefore sees exactly the batches an uninterrupted run would. Negative
    seeds are mapped to their unsigned 64-bit two's complement (numpy needs non-negative seeds).
    """
    rng = np.random.default_rng((seed % 2**64, epoch))
    return rng.permutation(n)


class Dataset:
    """Structures plus their neighbour lists, computed once at construction."""

    def __init__(
        self,
        structures: Sequence[Structure],
        cutoff: float,
        *,
        neighbour_lists: Sequence[NeighbourList] | None = None,
    ) -> None:
        """Build from ``structures``; pass ``neighbour_lists`` only if computed for ``cutoff``."""
        self.structures: tuple[Structure, ...] = tuple(structures)
        self.cutoff = float(cutoff)
        empty = [k for k, s in enumerate(self.structures) if s.n_atoms == 0]
        if empty:
            raise DataError(f"structure {empty[0]} has no atoms")
        if neighbour_lists is None:
            neighbour_lists = self._compute_neighbour_lists()
        elif len(neighbour_lists) != len(self.structures):
            raise ValueError(
                f"{len(neighbour_lists)} neighbour lists for {len(self.structures)} structures"
            )
        self.neighbour_lists: tuple[NeighbourList, ...] = tuple(neighbour_lists)
        self.n_atoms = np.array([s.n_atoms for s in self.structures], dtype=np.int64)
        self.n_neighbours = np.array(
            [
                nl.max_neighbours(s.n_atoms)
                for s, nl in zip(self.structures, self.neighbour_lists, strict=True)
            ],
            dtype=np.int64,
        )

    def _compute_neighbour_lists(self) -> list[NeighbourList]:
        items = tqdm(
            self.structures,
            desc=f"neighbour lists (cutoff {self.cutoff:g} A)",
            unit="structure",
            disable=len(self.structures) <= PROGRESS_MIN,
        )
        nls = [neighbour_list(s, self.cutoff) for s in items]
        if nls:
            pairs = np.array([nl.n_pairs for nl in nls])
            logger.info(
                "neighbour lists for %d structures: %d to %d pairs (mean %.1f)",
                len(nls),
                pairs.min(),
                pairs.max(),
                pairs.mean(),
            )
        return nls

    def __len__(self) -> int:
        return len(self.structures)

    def subset(self, indices: Sequence[int] | np.ndarray) -> Dataset:
        """The structures at ``indices`` (in that order), reusing their neighbour lists."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return Dataset(
            [self.structures[k] for k in idx],
            self.cutoff,
            neighbour_lists=[self.neighbour_lists[k] for k in idx],
        )

    def n_batches(self, batch_size: int, drop_last: bool = False) -> int:
        """Batches per epoch."""
        _check_batch_size(batch_size)
        full, rest = divmod(len(self), batch_size)
        return full if drop_last or rest == 0 else full + 1

    def batches(
        self,
        batch_size: int,
        padding: PadToMax | PadBinned,
        *,
        shuffle: bool,
        seed: int,
        epoch: int = 0,
        drop_last: bool = False,
    ) -> Iterator[Batch]:
        """Yield one epoch of fixed-size batches (B == ``batch_size``).

        With ``shuffle`` the order depends only on (seed, epoch). Without ``drop_last`` the last
        short batch is filled with empty padding structures (n_atoms 0, masks False).
        """
        n_batches = self.n_batches(batch_size, drop_last)
        order = epoch_order(len(self), seed, epoch) if shuffle else np.arange(len(self))
        whole = None  # PadToMax: one shape for the dataset; PadBinned: a shape per batch
        if padding.kind == "max":
            whole = pad_sizes(self.n_atoms, self.n_neighbours, padding)
        for b in range(n_batches):
            idx = order[b * batch_size : (b + 1) * batch_size]
            n_pad, k_pad = whole or pad_sizes(self.n_atoms[idx], self.n_neighbours[idx], padding)
            yield collate(
                [self.structures[k] for k in idx],
                [self.neighbour_lists[k] for k in idx],
                n_pad,
                k_pad,
                batch_size=batch_size,
            )


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")


_END = object()
_POLL = 0.05
"""Seconds between checks of the stop flag while the worker waits for queue space."""
_JOIN_TIMEOUT = 5.0


class _Failure:
    """An exception raised in the worker, carried through the queue to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _fill(source: Iterable[T], out: queue.Queue, stop: threading.Event) -> None:
    """Worker: put items of ``source`` into ``out`` until exhausted, failed, or told to stop."""
    it = iter(source)
    try:
        for item in it:
            if not _put(out, item, stop):
                return
        _put(out, _END, stop)
    except Exception as err:  # handed to the consumer, which re-raises it
        _put(out, _Failure(err), stop)
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


def _put(out: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put ``item`` once there is room; False if the consumer asked to stop meanwhile."""
    while not stop.is_set():
        try:
            out.put(item, timeout=_POLL)
            return True
        except queue.Full:
            continue
    return False


def prefetch(iterator: Iterable[T], size: int) -> Iterator[T]:
    """Yield the items of ``iterator``, produced up to ``size`` ahead in a daemon thread.

    Overlaps host-side batch preparation with device compute. ``size == 0`` yields in the
    calling thread. A worker exception is re-raised in the consumer; when the consumer stops
    early (break, close, garbage collection) the worker is stopped and joined.
    """
    if size < 0:
        raise ValueError(f"prefetch size must be >= 0, got {size}")
    if size == 0:
        yield from iterator
        return
    out: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    worker = threading.Thread(
        target=_fill, args=(iterator, out, stop), daemon=True, name="apax-prefetch"
    )
    worker.start()
    try:
        while True:
            item = out.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        worker.join(timeout=_JOIN_TIMEOUT)
        if worker.is_alive():
            logger.warning("prefetch worker did not stop within %.0f s", _JOIN_TIMEOUT)
