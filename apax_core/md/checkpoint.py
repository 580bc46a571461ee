"""The MD checkpoint: everything a run needs to continue bit for bit.

Integrator state (positions, momenta, forces, thermostat chain, Langevin key), the neighbour
list (its arrays as its kind saves them: slots, reference positions, image shifts) and the
:class:`RunState` (step, frames written, stop, capacity, run identity). One .npz written whole
(temp + rename) after each chunk's frames were appended.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from apax_core.files import atomic_write

CHECKPOINT = "md_checkpoint.npz"


class RunState(NamedTuple):
    """Where a run stands between chunks: each chunk's host handling returns a new one."""

    step: int
    """Integrator steps done."""
    n_frames: int
    """Frames in the trajectory."""
    stopped: bool
    """A stop check fired (the run is over before its duration)."""
    reason: str | None
    """What stopped it (a check's kind, or "nan")."""
    extra_capacity: int
    """Spare neighbour slots per atom the list is allocated with (grows on overflow)."""
    fingerprint: dict
    """The run identity (settings, system, start, model) a continuation must match."""
    stop_detail: dict | None = None
    """What stopped it, with units (:func:`apax_core.md.checks.stop_detail`)."""


@dataclass(frozen=True)
class Checkpoint:
    state_leaves: list[np.ndarray]
    """The integrator state's leaves, in the tree order of a fresh start."""
    nbrs: dict[str, np.ndarray]
    """The neighbour list's arrays by name (``PairList.save``), e.g. ``idx`` (N, K) slots."""
    run: RunState


def save(directory: Path, state, nbrs: dict[str, np.ndarray], run: RunState) -> None:
    """Write the integrator ``state``, the neighbour list's arrays ``nbrs`` and ``run`` whole."""
    leaves = [np.asarray(x) for x in jax.tree.leaves(state)]
    arrays = {f"state_{k}": x for k, x in enumerate(leaves)}
    arrays |= {f"nbr_{k}": np.asarray(x) for k, x in nbrs.items()}
    arrays["meta"] = np.asarray(json.dumps(run._asdict()))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(directory / CHECKPOINT, buf.getvalue())


def load(directory: Path) -> Checkpoint | None:
    """The checkpoint in ``directory``, or None if there is none."""
    path = directory / CHECKPOINT
    if not path.is_file():
        return None
    with np.load(path) as data:
        n = sum(1 for k in data.files if k.startswith("state_"))
        return Checkpoint(
            state_leaves=[data[f"state_{k}"] for k in range(n)],
            nbrs={k.removeprefix("nbr_"): data[k] for k in data.files if k.startswith("nbr_")},
            run=RunState(**json.loads(str(data["meta"]))),
        )


def restore_state(template, leaves: list[np.ndarray]):
    """``leaves`` in the tree structure of ``template`` (e.g. from jax.eval_shape of init)."""
    flat, treedef = jax.tree.flatten(template)
    if len(flat) != len(leaves):
        raise ValueError(f"checkpoint has {len(leaves)} state arrays, expected {len(flat)}")
    for t, x in zip(flat, leaves, strict=True):
        if tuple(t.shape) != x.shape:
            raise ValueError(f"checkpoint array of shape {x.shape}, expected {tuple(t.shape)}")
    return jax.tree.unflatten(treedef, [jax.numpy.asarray(x) for x in leaves])
