"""Baselines for batch selection: uniformly random, and the most uncertain structures.

Taking the top-k uncertainties of a trajectory tends to pick neighbouring frames (paper sec. 2.4);
``min_spacing`` keeps picks apart in index, the usual remedy for trajectory pools.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from apax_core.batching import map_structures
from apax_core.config import UncertaintyQuantity
from apax_core.data import Structure
from apax_core.errors import InputError
from apax_core.model_dir import Model
from apax_core.predictor import compiled

logger = logging.getLogger(__name__)


def random_selection(n_pool: int, n: int, seed: int) -> np.ndarray:
    """``n`` distinct pool indices, uniformly at random; a pure function of the seed."""
    return np.random.default_rng(seed).choice(n_pool, size=n, replace=False).astype(np.int64)


def spaced_top_k(scores: np.ndarray, n: int, min_spacing: int = 1) -> np.ndarray:
    """Up to ``n`` indices of the largest scores (descending; ties: lower index first), no two
    closer than ``min_spacing`` indices. Fewer if the spacing leaves no room."""
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    if min_spacing < 1:
        raise InputError(f"min_spacing must be >= 1, got {min_spacing}")
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
        logger.warning(
            "only %d of %d picks fit with min_spacing %d in a pool of %d",
            len(picks),
            n,
            min_spacing,
            len(scores),
        )
    return np.asarray(picks, dtype=np.int64)


def uncertainties(
    model: Model,
    structures: Sequence[Structure],
    quantity: UncertaintyQuantity = "energy",
    *,
    batch_size: int = 4,
    progress_bar: bool = False,
) -> np.ndarray:
    """Per-structure uncertainty, (n_structures,): the energy standard deviation over the
    members (eV; a forward pass), or the largest norm of an atom's force standard deviations
    (eV/A; member forces). Calibrated: a global calibration rescales without reordering, a
    per-element or power-law one (``calibration_family``) may reorder them."""
    if model.config.n_members < 2:
        raise InputError("uncertainty needs an ensemble model (config.model.ensemble)")
    mode = "energy" if quantity == "energy" else "uncertainty"
    preds = map_structures(
        compiled(model, mode, stress=False),
        model.variables,
        structures,
        model.config.r_max,
        batch_size=batch_size,
        progress_bar=progress_bar,
        desc=f"{quantity} uncertainty",
    )
    return uncertainty_scores(preds, quantity)


def uncertainty_scores(preds: Sequence[dict], quantity: UncertaintyQuantity) -> np.ndarray:
    """The per-structure score of :func:`uncertainties` from prediction dicts (any source)."""
    key = f"{quantity}_uncertainty"
    missing = [k for k, p in enumerate(preds) if key not in p]
    if missing:
        raise InputError(f"no {key} in the predictions (structure {missing[0]}): not an ensemble")
    if quantity == "energy":
        return np.array([float(p[key]) for p in preds])
    return np.array([np.max(np.linalg.norm(p[key], axis=-1)) for p in preds])
