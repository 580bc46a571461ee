"""Composable prediction transforms (UDD bias, calibration) and the per-structure predictor.

A transform has two hooks, both identity by default:

- ``energy(apply) -> apply``: wraps the atomic-energy function ``(params, dr_vec, Z, idx_i,
  idx_j, atom_mask, pair_mask) -> (N, M)``. Forces, stress and member forces are derivatives of
  the wrapped function, so a bias acts on the dynamics and on every reported quantity.
- ``results(out) -> out``: post-processes one structure's prediction dict (e.g. rescales
  uncertainties); it is not differentiated through.

The same composed predictor serves the ASE calculator and the kept frames of the JAX engine,
so both report identical numbers for the same structure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from apax_core.data.batch import Batch
from apax_core.model_dir import Model
from apax_core.transforms import energy_forces_stress, ensemble_predict

Predictor = Callable[[dict, Batch], dict]

UNCERTAINTY_KEYS = (
    "energy_uncertainty",
    "forces_uncertainty",
    "stress_uncertainty",
    "energy_ensemble",
    "forces_ensemble",
)
"""IPSuite's result keys beyond ASE's standard properties (standard deviations, members)."""


class Transform:
    """Identity transform; subclasses override one or both hooks."""

    def energy(self, apply):
        return apply

    def results(self, out: dict) -> dict:
        return out

    def check(self, model: Model) -> None:
        """Raise ValueError before any work if the transform cannot be used with ``model``."""


def transformed_apply(model: Model, transforms: Sequence[Transform]):
    """``model.apply`` wrapped by every transform's energy hook, first transform innermost."""
    apply = model.apply
    for t in transforms:
        apply = t.energy(apply)
    return apply


def has_energy_hook(transforms: Sequence[Transform]) -> bool:
    return any(type(t).energy is not Transform.energy for t in transforms)


def predictor(
    model: Model,
    transforms: Sequence[Transform] = (),
    *,
    force_uncertainty: bool = True,
    stress: bool = True,
) -> Predictor:
    """(params, one structure) -> energy, forces[, stress] and, for ensembles, the uncertainty keys.

    Single models give no uncertainty keys. Ensembles give ``energy_uncertainty`` and
    ``energy_ensemble`` always and, with ``force_uncertainty``, the member forces and stresses
    with their standard deviations. A full ensemble under an energy transform is evaluated
    through the transformed stacked apply (its member jacobian then costs M x more), because a
    bias couples the members and cannot run member by member.
    """
    for t in transforms:
        t.check(model)
    apply = transformed_apply(model, transforms)
    ensemble = model.config.n_members > 1
    member_apply = None if has_energy_hook(transforms) else model.member_apply
    chunk = getattr(model.config.ensemble, "chunk_size", None)

    def predict(params, s: Batch) -> dict:
        if not ensemble:
            out = energy_forces_stress(apply, params, s, stress=stress)
            out.pop("energy_ensemble")
        else:
            out = ensemble_predict(
                apply,
                params,
                s,
                member_apply=member_apply,
                chunk_size=chunk,
                force_uncertainty=force_uncertainty,
                stress=stress,
            )
            if not stress:
                out = {k: v for k, v in out.items() if not k.startswith("stress")}
        for t in transforms:
            out = t.results(out)
        return out

    return predict
