"""Predictions of a model for many structures: the one predictor mapped by the one batcher."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from apax_core.batching import BINNED, map_structures
from apax_core.config import Padding
from apax_core.data import Structure, species_index
from apax_core.model_dir import Model
from apax_core.predictor import Mode, compiled


def predict(
    model: Model,
    structures: Sequence[Structure],
    *,
    mode: Mode = "forces",
    stress: bool = True,
    batch_size: int = 16,
    padding: Padding = BINNED,
    progress: bool = False,
) -> list[dict[str, np.ndarray]]:
    """``mode`` predictions (calibrated) of each structure, unpadded, in input order.

    Elements the model does not know are rejected before anything is evaluated.
    """
    species_index(list(structures), model.stats.elements, source="predict")
    fn = compiled(model, mode, stress=stress)
    return map_structures(
        fn,
        model.params,
        structures,
        model.config.r_max,
        batch_size=batch_size,
        padding=padding,
        progress=progress,
        desc=mode,
    )
