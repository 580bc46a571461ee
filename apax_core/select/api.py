"""``select``: choose the pool structures to label next, by a configured method."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from apax_core.config import MaxDistance, MaxUncertainty, RandomSelection, SelectionMethod
from apax_core.data import DataError, Structure, species_index
from apax_core.errors import InputError
from apax_core.frame_predictions import calculator_predictions
from apax_core.model_dir import Model
from apax_core.select.baselines import (
    random_selection,
    spaced_top_k,
    uncertainties,
    uncertainty_scores,
)
from apax_core.select.diagnostics import write_distance_curve, write_pca
from apax_core.select.features import compute_features
from apax_core.select.maxdist import max_distance_selection, n_before_threshold

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Selection:
    """The picks (pool indices, in pick order) with a score each, and what diagnostics need."""

    indices: np.ndarray
    """(k,) int64 indices into the pool, in the order they were picked."""
    scores: np.ndarray
    """(k,) the distance at each pick (max_distance), the uncertainty (max_uncertainty), or NaN
    (random)."""
    method: SelectionMethod
    train_features: np.ndarray | None = None
    """(n_train, D) features (max_distance only)."""
    pool_features: np.ndarray | None = None
    """(n_pool, D) features (max_distance only)."""
    curve: np.ndarray | None = None
    """Distances of a greedy ranking of the whole pool (max_distance with ``rank_all``)."""

    @property
    def score_name(self) -> str:
        if isinstance(self.method, MaxDistance):
            return "distance"
        if isinstance(self.method, MaxUncertainty):
            return f"{self.method.quantity}_uncertainty"
        return "none"

    def to_json(self) -> dict:
        """Indices, scores (non-finite as null) and the method: the content of selection.json."""
        scores = [float(v) if np.isfinite(v) else None for v in self.scores]
        out = {
            "method": self.method.model_dump(mode="json"),
            "indices": [int(i) for i in self.indices],
            "score_name": self.score_name,
            "scores": scores,
        }
        if isinstance(self.method, MaxDistance):
            out["distances"] = scores
        return out


def check_request(model: Model, train: Sequence[Structure], pool: Sequence[Structure], n: int):
    """Fail before any evaluation on a bad ``n`` or an element the model lacks."""
    if n < 1:
        raise InputError(f"n must be at least 1, got {n}")
    for name, structures in (("pool", pool), ("training set", train)):
        empty = [k for k, s in enumerate(structures) if s.n_atoms == 0]
        if empty:
            raise DataError(f"{name}: structure {empty[0]} has no atoms")
        species_index(list(structures), model.stats.elements, name)


def select(
    model: Model,
    train: Sequence[Structure],
    pool: Sequence[Structure],
    n: int,
    config: SelectionMethod | None = None,
    *,
    batch_size: int = 4,
    rank_all: bool = False,
    progress_bar: bool = False,
) -> Selection:
    """Select up to ``n`` pool structures with ``config`` (default: max distance in the
    last-layer-gradient feature space, eq. 11-12). A pool shorter than ``n`` gives all its
    structures (ranked); an empty pool gives none.

    ``train`` matters to max_distance only (distances are seeded from it); the other methods
    just check its elements. ``rank_all`` (max_distance) also ranks the whole pool, for the
    distance curve; the selection is the prefix of that ranking, so the picks are the same.
    """
    config = MaxDistance() if config is None else config
    check_request(model, train, pool, n)
    if isinstance(config, MaxDistance):
        n = _available(n, len(pool))
        return _max_distance(model, train, pool, n, config, batch_size, rank_all, progress_bar)

    def scores(quantity):
        return uncertainties(
            model, pool, quantity, batch_size=batch_size, progress_bar=progress_bar
        )

    return _baseline(len(pool), n, config, scores)


def select_with_calculator(calc, pool: Sequence, n: int, config: SelectionMethod) -> Selection:
    """Random or max-uncertainty selection of ``pool`` frames (ase.Atoms) with the ASE
    calculator of a model of another package (its ``<quantity>_uncertainty`` results); max
    distance needs our model's features."""
    if isinstance(config, MaxDistance):
        raise TypeError("max_distance selection needs an apax model (last-layer features)")
    return _baseline(
        len(pool), n, config, lambda q: uncertainty_scores(calculator_predictions(calc, pool), q)
    )


def _available(n: int, n_pool: int) -> int:
    """``n``, or the pool size (with a warning) when the pool is shorter."""
    if n > n_pool:
        logger.warning("asked for %d structures, the pool has %d: selecting %d", n, n_pool, n_pool)
    return min(n, n_pool)


def _baseline(n_pool: int, n: int, config, scores: Callable[[str], np.ndarray]) -> Selection:
    """Random or max-uncertainty selection of up to ``n`` of ``n_pool`` structures, the one
    core of both entry points; ``scores(quantity)`` gives every pool structure's uncertainty
    (from our model or another package's calculator) and is called only when needed."""
    n = _available(n, n_pool)
    if isinstance(config, RandomSelection) or n == 0:
        indices = random_selection(n_pool, n, getattr(config, "seed", 0))
        return Selection(indices, np.full(len(indices), np.nan), config)
    values = scores(config.quantity)
    indices = spaced_top_k(values, n, config.min_spacing)
    return Selection(indices, values[indices], config)


def _max_distance(model, train, pool, n, config: MaxDistance, batch_size, rank_all, progress_bar):
    if n == 0:  # e.g. MD that stopped before its first frame
        return Selection(np.zeros(0, np.int64), np.zeros(0), config)

    def features(structures):
        return compute_features(
            model,
            structures,
            config.feature_map,
            projection_dim=config.projection_dim,
            projection_seed=config.projection_seed,
            batch_size=batch_size,
            progress_bar=progress_bar,
        )

    train_f, pool_f = features(train), features(pool)
    if not rank_all:
        indices, dists = max_distance_selection(
            train_f, pool_f, n, min_distance=config.min_distance
        )
        return Selection(indices, dists, config, train_f, pool_f)
    ranking, curve = max_distance_selection(train_f, pool_f, len(pool))
    k = n_before_threshold(curve, n, config.min_distance)
    return Selection(ranking[:k], curve[:k], config, train_f, pool_f, curve)


def write_diagnostics(selection: Selection, directory: str | Path) -> list[Path]:
    """The distance curve (if the pool was ranked) and the PCA map (if there are features)."""
    paths: list[Path] = []
    if selection.curve is not None:
        paths += write_distance_curve(selection.curve, directory, len(selection.indices))
    if selection.pool_features is not None:
        paths += write_pca(
            selection.train_features, selection.pool_features, selection.indices, directory
        )
    return paths
