"""ASE calculator for apax_core models: single models, shallow and full ensembles, transforms.

Energies, forces and stress go into ``results`` under ASE's standard names; ensembles add
IPSuite's uncertainty keys (standard deviations): ``energy_uncertainty``, ``forces_uncertainty``,
``stress_uncertainty``, ``energy_ensemble`` (M,) and ``forces_ensemble`` (N, 3, M). ASE allows
results beyond ``implemented_properties``; read them from ``calc.results`` after a standard
property was computed. ASE's global property lists are left untouched.

Neighbours come from vesin (correct for cells of any size: an atom sees all its images) with a
skin: the list of pairs within ``r_max + skin`` is reused until an atom has moved more than
``skin / 2``, or numbers, cell or periodicity change. Atoms and neighbour slots are padded up to
bins, so the jitted function recompiles only when a padding bin changes; calculators of the same
model and transforms share their compiled functions.
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
from tqdm.auto import tqdm

from apax_core.config import PadBinned, Padding
from apax_core.data import (
    Batch,
    Dataset,
    Structure,
    collate,
    from_atoms,
    neighbour_list,
    pad_sizes,
    species_index,
)
from apax_core.md.calibration import stored_calibration
from apax_core.md.transforms import UNCERTAINTY_KEYS, Transform, predictor
from apax_core.model_dir import Model, load_model
from apax_core.precision import x64
from apax_core.transforms import batched

logger = logging.getLogger(__name__)

EXTRA_KEYS = UNCERTAINTY_KEYS


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
        padding: Padding | None = None,
        **kwargs,
    ) -> None:
        """``transforms`` (e.g. UDD, GlobalCalibration) apply in order, after the model's stored
        calibration; ``force_uncertainty``
        (ensembles) computes member forces and stresses, else only energies are per member."""
        super().__init__(**kwargs)
        if skin < 0:
            raise ValueError(f"skin must be >= 0, got {skin}")
        self.model = model if isinstance(model, Model) else load_model(model)
        # The calibration stored with the model applies first, as in predict().
        self.transforms = stored_calibration(self.model) + tuple(transforms)
        self.skin = float(skin)
        self.padding = padding or PadBinned()
        self._fn = _jitted(self.model, self.transforms, force_uncertainty)
        self._nl: tuple | None = None  # (key, reference positions, padded Batch)

    # -------------------------------------------------------------------------------- single

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        structure = _structure(self.atoms, self.model)
        batch = self._batch(structure)
        with x64():
            out = jax.tree.map(np.asarray, self._fn(self.model.params, batch))
        self.results = _unpad(out, 0, structure)

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

    # --------------------------------------------------------------------------------- batch

    def batch_eval(
        self, frames: Sequence[ase.Atoms], batch_size: int = 16, progress: bool = True
    ) -> list[ase.Atoms]:
        """Copies of ``frames`` with a SinglePointCalculator holding every result, in order.

        Structures are evaluated ``batch_size`` at a time in padded, jitted batches.
        """
        structures = [from_atoms(a) for a in frames]
        species_index(structures, self.model.stats.elements, source="batch_eval")
        data = Dataset(structures, self.model.config.r_max)
        out: list[ase.Atoms] = []
        batches = data.batches(batch_size, self.padding, shuffle=False, seed=0)
        with x64():
            for batch in tqdm(
                batches, total=data.n_batches(batch_size), disable=not progress, desc="batch_eval"
            ):
                pred = jax.tree.map(np.asarray, self._fn(self.model.params, batch))
                for b in range(int(np.sum(batch.n_atoms > 0))):
                    k = len(out)
                    out.append(_with_results(frames[k], _unpad(pred, b, structures[k])))
        return out


_JITTED: dict[tuple, tuple] = {}
_MAX_JITTED = 8


def _jitted(model: Model, transforms: tuple, force_uncertainty: bool):
    """The jitted batched predictor, shared by calculators of the same model and transforms
    (so a second calculator reuses the compilations of the first)."""
    key = (id(model), tuple(id(t) for t in transforms), force_uncertainty)
    hit = _JITTED.get(key)
    if (
        hit is not None
        and hit[0] is model
        and all(a is b for a, b in zip(hit[1], transforms, strict=True))
    ):
        return hit[2]
    fn = jax.jit(batched(predictor(model, transforms, force_uncertainty=force_uncertainty)))
    if len(_JITTED) >= _MAX_JITTED:
        _JITTED.pop(next(iter(_JITTED)))
    _JITTED[key] = (model, transforms, fn)
    return fn


def _structure(atoms: ase.Atoms, model: Model) -> Structure:
    """The Structure of ``atoms``, rejecting elements the model does not know."""
    structure = from_atoms(atoms)
    species_index(structure.Z, model.stats.elements, source="ApaxCalculator")
    return structure


def _unpad(out: dict, b: int, structure: Structure) -> dict:
    """Results of structure ``b`` of a padded batch, in ASE's shapes (stress in Voigt order)."""
    n = structure.n_atoms
    res: dict = {"energy": float(out["energy"][b]), "forces": out["forces"][b, :n]}
    res["free_energy"] = res["energy"]
    if structure.pbc.any() and "stress" in out:
        res["stress"] = full_3x3_to_voigt_6_stress(out["stress"][b])
    if "energy_uncertainty" in out:
        res["energy_uncertainty"] = float(out["energy_uncertainty"][b])
        res["energy_ensemble"] = out["energy_ensemble"][b]
    if "forces_uncertainty" in out:
        res["forces_uncertainty"] = out["forces_uncertainty"][b, :n]
        res["forces_ensemble"] = out["forces_ensemble"][b, :n]
        if "stress" in res:
            res["stress_uncertainty"] = full_3x3_to_voigt_6_stress(out["stress_uncertainty"][b])
    return res


def _with_results(atoms: ase.Atoms, results: dict) -> ase.Atoms:
    """A copy of ``atoms`` with a SinglePointCalculator holding ``results`` (extra keys too)."""
    copy = atoms.copy()
    standard = {k: v for k, v in results.items() if k not in EXTRA_KEYS}
    copy.calc = SinglePointCalculator(copy, **standard)
    copy.calc.results.update({k: v for k, v in results.items() if k in EXTRA_KEYS})
    return copy
