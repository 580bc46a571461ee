"""The MD checkpoint: everything a run needs to continue bit for bit.

Integrator state (positions, momenta, forces, thermostat chain, Langevin key), the neighbour
list (slots, reference positions, capacity), step, frames written and a fingerprint of the
settings. One .npz written whole (temp + rename) after each chunk's frames were appended.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from apax_core.files import atomic_write

CHECKPOINT = "md_checkpoint.npz"


@dataclass(frozen=True)
class Checkpoint:
    state_leaves: list[np.ndarray]
    nbr_idx: np.ndarray
    nbr_reference: np.ndarray
    meta: dict
    """step, n_frames, stopped, reason, extra_capacity, fingerprint."""


def save(directory: Path, state, nbrs, meta: dict) -> None:
    leaves = [np.asarray(x) for x in jax.tree.leaves(state)]
    arrays = {f"state_{k}": x for k, x in enumerate(leaves)}
    arrays["nbr_idx"] = np.asarray(nbrs.idx)
    arrays["nbr_reference"] = np.asarray(nbrs.reference_position)
    arrays["meta"] = np.asarray(json.dumps(meta))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(directory / CHECKPOINT, buf.getvalue())


def load(directory: Path) -> Checkpoint | None:
    path = directory / CHECKPOINT
    if not path.is_file():
        return None
    with np.load(path) as data:
        n = sum(1 for k in data.files if k.startswith("state_"))
        return Checkpoint(
            state_leaves=[data[f"state_{k}"] for k in range(n)],
            nbr_idx=data["nbr_idx"],
            nbr_reference=data["nbr_reference"],
            meta=json.loads(str(data["meta"])),
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
