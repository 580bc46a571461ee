"""Baselines for batch selection: uniformly random, and the most uncertain structures.

Taking the top-k uncertainties of a trajectory tends to pick neighbouring frames (paper sec. 2.4);
``min_spacing`` keeps picks apart in index, the usual remedy for trajectory pools.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from apax_core.data import Structure
from apax_core.model_dir import Model
from apax_core.select.features import map_structures
from apax_core.transforms import batched, ensemble_predict, mean_std, total_energies

logger = logging.getLogger(__name__)

Quantity = Literal["energy", "forces"]


def random_selection(n_pool: int, n: int, seed: int) -> np.ndarray:
    """``n`` distinct pool indices, uniformly at random; a pure function of the seed."""
    return np.random.default_rng(seed).choice(n_pool, size=n, replace=False).astype(np.int64)


def spaced_top_k(scores: np.ndarray, n: int, min_spacing: int = 1) -> np.ndarray:
    """Up to ``n`` indices of the largest scores (descending; ties: lower index first), no two
    closer than ``min_spacing`` indices. Fewer if the spacing leaves no room."""
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    if min_spacing < 1:
        raise ValueError(f"min_spacing must be >= 1, got {min_spacing}")
    blocked = np.zeros(len(scores), dtype=bool)
    picks: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if len(picks) == n:
            break
        if blocked[i]:
            continue
        picks.append(int(i))
        blocked[max(0, i - min_spacing + 1) : i + min_spacing] = True
    if len(picks) < n:
        logger.warning("only %d of %d picks fit with min_spacing %d in a pool of %d",
                       len(picks), n, min_spacing, len(scores))  # fmt: skip
    return np.asarray(picks, dtype=np.int64)


def uncertainty_score(model: Model, quantity: Quantity):
    """Per-structure uncertainty (params, s) -> scalar: the energy standard deviation over the
    members (eV), or the largest norm of an atom's force standard deviations (eV/A)."""
    if model.config.ensemble is None:
        raise ValueError("uncertainty needs an ensemble model (config.model.ensemble)")
    chunk = getattr(model.config.ensemble, "chunk_size", None)

    def score(params, s):
        if quantity == "energy":  # a forward pass: member energies only
            strain = jnp.zeros((3, 3), dtype=jnp.float64)
            return mean_std(total_energies(model.apply, params, s.positions, strain, s))[1]
        out = ensemble_predict(
            model.apply, params, s, member_apply=model.member_apply, chunk_size=chunk
        )
        per_atom = jnp.linalg.norm(out["forces_uncertainty"], axis=-1) * s.atom_mask
        return jnp.max(per_atom)

    return score


def uncertainties(
    model: Model,
    structures: Sequence[Structure],
    quantity: Quantity = "energy",
    *,
    batch_size: int = 4,
    progress: bool = False,
) -> np.ndarray:
    """:func:`uncertainty_score` of each structure, (n_structures,), in jitted batches."""
    fn = jax.jit(batched(uncertainty_score(model, quantity)))
    return map_structures(
        fn, model.params, structures, model.config.r_max,
        batch_size=batch_size, progress=progress, desc=f"{quantity} uncertainty",
    )  # fmt: skip
