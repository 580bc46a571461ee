"""Selection features of many structures: the predictor's feature modes, batched, optionally
randomly projected batch by batch (only (n_structures, projection_dim) is ever kept)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import jax
import numpy as np

from apax_core.batching import map_batches
from apax_core.config import FeatureMapName
from apax_core.data import Structure
from apax_core.data.batch import two_atoms
from apax_core.model_dir import Model
from apax_core.precision import x64
from apax_core.predictor import compiled, predictor

logger = logging.getLogger(__name__)


def projection_matrix(d_in: int, d_out: int, seed: int) -> np.ndarray:
    """Gaussian random projection (d_in, d_out) with N(0, 1/d_out) entries: squared distances
    are preserved in expectation, to a relative error of order sqrt(8 log(n) / d_out) (JL)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((d_in, d_out)) / np.sqrt(d_out)


def feature_dim(model: Model, kind: FeatureMapName = "last_layer_gradient") -> int:
    """Length D of the feature vector, from shapes only (nothing is evaluated)."""
    example = two_atoms(model.stats.elements[0])
    with x64():
        out = jax.eval_shape(predictor(model, kind), model.variables, example)
    return int(out["features"].shape[0])


def compute_features(
    model: Model,
    structures: Sequence[Structure],
    kind: FeatureMapName = "last_layer_gradient",
    *,
    projection_dim: int | None = None,
    projection_seed: int = 0,
    batch_size: int = 4,
    progress_bar: bool = False,
) -> np.ndarray:
    """Features (n_structures, D) in fp64, optionally randomly projected to ``projection_dim``.

    Projections with the same seed and dimensions are identical, so training and pool features
    computed in separate calls live in the same space.
    """
    d_in, matrix = feature_dim(model, kind), None
    if projection_dim is not None and projection_dim < d_in:
        matrix = projection_matrix(d_in, projection_dim, projection_seed)
    elif projection_dim is not None:
        logger.info(
            "projection_dim %d >= feature dimension %d: not projecting", projection_dim, d_in
        )
    if len(structures) == 0:
        return np.zeros((0, d_in if matrix is None else projection_dim))

    def post(features):
        features = np.asarray(features, np.float64)
        return features if matrix is None else features @ matrix

    batches = map_batches(
        compiled(model, kind),
        model.variables,
        structures,
        model.config.r_max,
        batch_size=batch_size,
        progress_bar=progress_bar,
        desc=kind,
    )
    return np.concatenate([post(out["features"]) for out, _ in batches])
