"""ASE calculator for apax_core models: single models, shallow and full ensembles, transforms.

Energies, forces and stress go into ``results`` under ASE's standard names; ensembles add
IPSuite's uncertainty keys (standard deviations): ``energy_uncertainty``, ``forces_uncertainty``,
``stress_uncertainty``, ``energy_ensemble`` (M,) and ``forces_ensemble`` (N, 3, M). ASE allows
results beyond ``implemented_properties``; read them from ``calc.results`` after a standard
property was computed. ASE's global property lists are left untouched.

Neighbours come from vesin (correct for cells of any size: an atom sees all its images) with a
skin: the list of pairs within ``r_max + skin`` is reused until an atom has moved more than
``skin / 2``, or numbers, cell or periodicity change. Atoms and neighbour slots are padded up to
bins, so the jitted function recompiles only when a padding bin changes; predictions go through
:func:`apax_core.predictor.compiled`, so calculators of one architecture share compilations
whatever their parameters and calibration.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import ase
import jax
import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress

from apax_core.batching import BINNED, map_structures
from apax_core.config import Padding
from apax_core.data import (
    Batch,
    Structure,
    collate,
    from_atoms,
    neighbour_list,
    pad_sizes,
    species_index,
)
from apax_core.model_dir import Model, load_model
from apax_core.precision import x64
from apax_core.predictor import compiled
from apax_core.transforms import UNCERTAINTY_KEYS, Transform

logger = logging.getLogger(__name__)


class ApaxCalculator(Calculator):
    """ASE calculator for a :class:`Model` (or a model directory path)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(
        self,
        model: Model | str | Path,
        *,
        transforms: Sequence[Transform] = (),
        force_uncertainty: bool = True,
        skin: float = 0.5,
        padding: Padding = BINNED,
        **kwargs,
    ) -> None:
        """``transforms`` (e.g. UDD) apply in order, then the model's stored calibration;
        ``force_uncertainty`` (ensembles) computes member forces and stresses, else only
        energies are per member."""
        super().__init__(**kwargs)
        if skin < 0:
            raise ValueError(f"skin must be >= 0, got {skin}")
        self.model = model if isinstance(model, Model) else load_model(model)
        self.skin, self.padding = float(skin), padding
        mode = "uncertainty" if force_uncertainty else "forces"
        self._fn = compiled(self.model, mode, transforms=tuple(transforms))
        self._nl: tuple | None = None  # (key, reference positions, padded Batch)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        structure = from_atoms(self.atoms)
        species_index(structure.Z, self.model.stats.elements, source="ApaxCalculator")
        with x64():
            out = jax.tree.map(np.asarray, self._fn(self.model.variables, self._batch(structure)))
        pred = {k: v[0] for k, v in out.items()}
        self.results = ase_results(pred, structure.n_atoms, bool(structure.pbc.any()))

    def _batch(self, structure: Structure) -> Batch:
        """The padded one-structure batch. While the skin list is valid (same numbers, cell and
        periodicity, no atom moved more than skin / 2) only the positions are replaced."""
        key = (structure.Z.tobytes(), structure.cell.tobytes(), structure.pbc.tobytes())
        if self._nl is not None and self._nl[0] == key:
            moved = np.linalg.norm(structure.positions - self._nl[1], axis=1)
            if moved.max(initial=0.0) < 0.5 * self.skin:
                template = self._nl[2]
                positions = template.positions.copy()
                positions[0, : structure.n_atoms] = structure.positions
                return template._replace(positions=positions)
        nl = neighbour_list(structure, self.model.config.r_max + self.skin)
        n = structure.n_atoms
        n_pad, k_pad = pad_sizes([n], [nl.max_neighbours(n)], self.padding)
        batch = collate([structure], [nl], n_pad, k_pad)
        self._nl = (key, structure.positions.copy(), batch)
        return batch

    def batch_eval(
        self, frames: Sequence[ase.Atoms], batch_size: int = 16, progress_bar: bool = True
    ) -> list[ase.Atoms]:
        """Copies of ``frames`` with a SinglePointCalculator holding every result, in order,
        evaluated ``batch_size`` at a time in padded, jitted batches."""
        structures = [from_atoms(a) for a in frames]
        species_index(structures, self.model.stats.elements, source="batch_eval")
        preds = map_structures(
            self._fn,
            self.model.variables,
            structures,
            self.model.config.r_max,
            batch_size=batch_size,
            padding=self.padding,
            progress_bar=progress_bar,
            desc="batch_eval",
        )
        return [
            with_results(a, ase_results(p, len(a), bool(a.pbc.any())))
            for a, p in zip(frames, preds, strict=True)
        ]


def ase_results(pred: dict, n: int, periodic: bool) -> dict:
    """One structure's prediction in ASE's names and shapes: per-atom arrays cut to the ``n``
    atoms, stress in Voigt order and only for periodic structures."""
    res: dict = {"energy": float(pred["energy"]), "forces": pred["forces"][:n]}
    res["free_energy"] = res["energy"]
    periodic = periodic and "stress" in pred
    if periodic:
        res["stress"] = full_3x3_to_voigt_6_stress(pred["stress"])
    if "energy_uncertainty" in pred:
        res["energy_uncertainty"] = float(pred["energy_uncertainty"])
        res["energy_ensemble"] = pred["energy_ensemble"]
    for key in ("forces_uncertainty", "forces_ensemble"):
        if key in pred:
            res[key] = pred[key][:n]
    if periodic and "stress_uncertainty" in pred:
        res["stress_uncertainty"] = full_3x3_to_voigt_6_stress(pred["stress_uncertainty"])
    return res


def with_results(atoms: ase.Atoms, results: dict) -> ase.Atoms:
    """A copy of ``atoms`` with a SinglePointCalculator holding ``results`` (extra keys too)."""
    copy = atoms.copy()
    copy.calc = SinglePointCalculator(
        copy, **{k: v for k, v in results.items() if k not in UNCERTAINTY_KEYS}
    )
    copy.calc.results.update({k: v for k, v in results.items() if k in UNCERTAINTY_KEYS})
    return copy
