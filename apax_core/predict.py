"""Batch prediction over structures in padded, jitted chunks (shared by eval, tests, nodes)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from tqdm import tqdm

from apax_core.config import PadBinned, Padding
from apax_core.data import Dataset, Structure
from apax_core.model_dir import Model
from apax_core.precision import x64
from apax_core.transforms import batched, energy_forces_stress

BINNED = PadBinned()


def predictor(model: Model, *, stress: bool):
    """Jitted (params, batch) -> {"energy", "forces"[, "stress"]} for padded batches."""
    return jax.jit(batched(lambda p, s: energy_forces_stress(model.apply, p, s, stress=stress)))


def predict(
    model: Model,
    structures: Sequence[Structure],
    *,
    batch_size: int = 16,
    padding: Padding = BINNED,
    stress: bool = True,
    progress: bool = False,
    fn=None,
) -> list[dict[str, np.ndarray]]:
    """Energy, forces (and stress) of each structure, unpadded, in input order.

    ``fn`` reuses a :func:`predictor` across calls (JIT compilation dominates small jobs).
    """
    data = Dataset(list(structures), model.config.r_max)
    fn = fn or predictor(model, stress=stress)
    out: list[dict[str, np.ndarray]] = []
    with x64():
        batches = data.batches(batch_size, padding, shuffle=False, seed=0)
        for batch in tqdm(batches, total=data.n_batches(batch_size), disable=not progress):
            pred = jax.tree.map(np.asarray, fn(model.params, batch))
            for b, n in enumerate(batch.n_atoms[batch.n_atoms > 0]):
                row = {"energy": float(pred["energy"][b]), "forces": pred["forces"][b, :n]}
                if stress:
                    row["stress"] = pred["stress"][b]
                out.append(row)
    return out
