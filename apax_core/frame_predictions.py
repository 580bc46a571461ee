"""Predictions for many structures: the one predictor mapped by the one batcher (or, for
models of other packages, their ASE calculator)."""

from __future__ import annotations

from collections.abc import Sequence

import ase
import numpy as np
from ase.stress import voigt_6_to_full_3x3_stress

from apax_core.batching import BINNED, map_structures
from apax_core.config import Padding
from apax_core.data import Structure, species_index
from apax_core.model_dir import Model
from apax_core.predictor import Mode, compiled
from apax_core.transforms import UNCERTAINTY_KEYS


def calculator_predictions(calc, frames: Sequence[ase.Atoms]) -> list[dict[str, np.ndarray]]:
    """Energy, forces, stress (3x3, fully periodic cells) and any uncertainty keys of an ASE
    calculator for each frame, in the form :func:`predict` returns (for foreign models)."""
    out = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = calc
        pred = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if atoms.pbc.all():
            pred["stress"] = voigt_6_to_full_3x3_stress(atoms.get_stress())
        pred |= {k: np.asarray(v) for k, v in calc.results.items() if k in UNCERTAINTY_KEYS}
        out.append(pred)
    return out


def predict(
    model: Model,
    structures: Sequence[Structure],
    *,
    mode: Mode = "forces",
    stress: bool = True,
    batch_size: int = 16,
    padding: Padding = BINNED,
    progress_bar: bool = False,
) -> list[dict[str, np.ndarray]]:
    """``mode`` predictions (calibrated) of each structure, unpadded, in input order.

    Elements the model does not know are rejected before anything is evaluated.
    """
    species_index(list(structures), model.stats.elements, source="predict")
    fn = compiled(model, mode, stress=stress)
    return map_structures(
        fn,
        model.variables,
        structures,
        model.config.r_max,
        batch_size=batch_size,
        padding=padding,
        progress_bar=progress_bar,
        desc=mode,
    )
