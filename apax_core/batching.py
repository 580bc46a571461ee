"""One batching helper: map a jitted per-batch function over structures of any sizes.

Neighbour lists are computed batch by batch in a background thread (memory stays bounded for
any pool size, and host work overlaps evaluation). Each batch is padded up to its bins, so
mixed sizes compile a handful of shapes; results come back per structure, padding removed, in
input order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from apax_core.config import PadBinned, Padding
from apax_core.data import Batch, DataError, Structure, collate, neighbour_list, pad_sizes, prefetch
from apax_core.errors import InputError
from apax_core.precision import x64
from apax_core.transforms import PER_ATOM_KEYS

BINNED = PadBinned()


def padded_batches(
    structures: Sequence[Structure], cutoff: float, batch_size: int, padding: Padding = BINNED
) -> Iterator[Batch]:
    """Batches of ``batch_size`` in input order (the last one filled with empty structures),
    each padded to the bins (or the exact maximum, PadToMax) of its own structures."""
    for start in range(0, len(structures), batch_size):
        chunk = structures[start : start + batch_size]
        nls = [neighbour_list(s, cutoff) for s in chunk]
        n_pad, k_pad = pad_sizes(
            [s.n_atoms for s in chunk],
            [nl.max_neighbours(s.n_atoms) for s, nl in zip(chunk, nls, strict=True)],
            padding,
        )
        yield collate(chunk, nls, n_pad, k_pad, batch_size=batch_size)


def map_batches(
    fn: Callable,
    variables,
    structures: Sequence[Structure],
    cutoff: float,
    *,
    batch_size: int = 16,
    padding: Padding = BINNED,
    progress_bar: bool = False,
    desc: str = "predict",
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Yield ``fn(variables, batch)`` (e.g. a compiled predictor and ``Model.variables``) as
    host arrays restricted to the real structures, with their atom counts, batch by batch
    (per-atom arrays are still padded on the atom axis)."""
    structures = list(structures)
    if batch_size < 1:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    empty = [k for k, s in enumerate(structures) if s.n_atoms == 0]
    if empty:
        raise DataError(f"structure {empty[0]} has no atoms")
    total = -(-len(structures) // batch_size)
    with x64():
        batches = prefetch(padded_batches(structures, cutoff, batch_size, padding), 2)
        for batch in tqdm(batches, total=total, desc=desc, disable=not progress_bar):
            real = batch.structure_mask
            out = {k: np.asarray(v)[real] for k, v in fn(variables, batch).items()}
            yield out, batch.n_atoms[real]


def unpad(out: dict[str, np.ndarray], n_atoms: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Per-structure dicts of a :func:`map_batches` item, per-atom arrays cut to the atoms."""
    return [
        {k: v[b, :n] if k in PER_ATOM_KEYS else v[b] for k, v in out.items()}
        for b, n in enumerate(n_atoms)
    ]


def map_structures(
    fn: Callable, variables, structures: Sequence[Structure], cutoff: float, **kwargs
) -> list[dict[str, np.ndarray]]:
    """``fn`` of every structure, unpadded, in input order (keywords as :func:`map_batches`)."""
    batches = map_batches(fn, variables, structures, cutoff, **kwargs)
    return [r for out, n in batches for r in unpad(out, n)]
