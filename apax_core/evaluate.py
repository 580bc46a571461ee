"""Error metrics of a model on labelled structures (meV/atom, meV/A, meV/A^3)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from apax_core.data import Structure
from apax_core.frame_predictions import predict
from apax_core.labels import LABELS
from apax_core.model_dir import Model
from apax_core.residuals import structure_errors


def error_metrics(preds: list[dict], structures: Sequence[Structure]) -> dict[str, float]:
    """MAE and RMSE of every label present in the reference structures (and the predictions)."""
    out: dict[str, float] = {"n_structures": len(structures)}
    for q in LABELS:
        err = structure_errors(preds, structures, q)
        if err.size:
            out[f"{q}_mae"] = 1000.0 * float(np.mean(np.abs(err)))
            out[f"{q}_rmse"] = 1000.0 * float(np.sqrt(np.mean(err**2)))
    return out


def evaluate(
    model: Model,
    structures: Sequence[Structure],
    *,
    batch_size: int = 16,
    progress_bar: bool = False,
) -> dict[str, float]:
    stress = any(s.stress is not None for s in structures)
    preds = predict(
        model, structures, batch_size=batch_size, stress=stress, progress_bar=progress_bar
    )
    return error_metrics(preds, structures)
