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
from apax_core.transforms import batched, calibrate, energy_forces_stress, ensemble_predict

BINNED = PadBinned()


def predictor(model: Model, *, stress: bool, uncertainty: bool = False):
    """Jitted (params, batch) -> predictions for padded batches.

    With ``uncertainty`` (ensembles only) every member's forces are computed and the calibrated
    uncertainty keys are added.
    """
    if not (uncertainty and model.config.ensemble is not None):
        return jax.jit(batched(lambda p, s: energy_forces_stress(model.apply, p, s, stress=stress)))
    cal, chunk = model.calibration, getattr(model.config.ensemble, "chunk_size", None)

    def fn(p, s):
        out = ensemble_predict(model.apply, p, s, member_apply=model.member_apply,
                               chunk_size=chunk, force_uncertainty=True)  # fmt: skip
        return calibrate(out, cal.energy, cal.forces)

    return jax.jit(batched(fn))


PER_ATOM = ("forces", "forces_uncertainty", "forces_ensemble")


def predict(
    model: Model,
    structures: Sequence[Structure],
    *,
    batch_size: int = 16,
    padding: Padding = BINNED,
    stress: bool = True,
    uncertainty: bool = False,
    progress: bool = False,
    fn=None,
) -> list[dict[str, np.ndarray]]:
    """Energy, forces (and stress, and uncertainties) of each structure, unpadded, in input order.

    ``fn`` reuses a :func:`predictor` across calls (JIT compilation dominates small jobs).
    """
    data = Dataset(list(structures), model.config.r_max)
    fn = fn or predictor(model, stress=stress, uncertainty=uncertainty)
    out: list[dict[str, np.ndarray]] = []
    with x64():
        batches = data.batches(batch_size, padding, shuffle=False, seed=0)
        for batch in tqdm(batches, total=data.n_batches(batch_size), disable=not progress):
            pred = jax.tree.map(np.asarray, fn(model.params, batch))
            for b, n in enumerate(batch.n_atoms[batch.n_atoms > 0]):
                out.append({k: v[b, :n] if k in PER_ATOM else v[b] for k, v in pred.items()
                            if stress or not k.startswith("stress")})  # fmt: skip
    return out
