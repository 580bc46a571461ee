"""The one ``Transform`` protocol: how UDD and calibration plug into every prediction.

A transform has two hooks, both identity by default:

- ``wrap_apply(apply) -> apply`` wraps the atomic-energy function ``(params, dr_vec, Z, idx_j,
  atom_mask, pair_mask) -> (N, M)``. Forces, stress and member forces are derivatives of the
  wrapped function, so a bias acts on the dynamics and on every reported quantity.
- ``results(out) -> out`` post-processes one structure's prediction dict (e.g. rescales
  uncertainties); it is not differentiated through.

Transforms are frozen dataclasses: equal settings hash equal, so compiled predictors are shared.
"""

from __future__ import annotations

from collections.abc import Sequence

UNCERTAINTY_KEYS = (
    "energy_uncertainty",
    "forces_uncertainty",
    "stress_uncertainty",
    "energy_ensemble",
    "forces_ensemble",
)
"""IPSuite's result keys beyond ASE's standard properties (standard deviations, members)."""

PER_ATOM_KEYS = frozenset({"forces", "forces_uncertainty", "forces_ensemble"})
"""Prediction keys with an atom axis (sliced to the real atoms when a batch is unpadded)."""


class Transform:
    """Identity transform; subclasses override one or both hooks."""

    def wrap_apply(self, apply):
        """apply -> apply, both (params, dr_vec (N, K, 3), Z (N,), idx_j (N, K), atom_mask
        (N,), pair_mask (N, K)) -> atomic energies (N, M)."""
        return apply

    def results(self, out: dict) -> dict:
        """One structure's predictions -> the same keys and shapes (see ``member_predictions``)."""
        return out

    def check(self, model) -> None:
        """Raise ValueError before any work if the transform cannot be used with ``model``."""


def wrapped_apply(apply, transforms: Sequence[Transform]):
    """``apply`` wrapped by every transform's energy hook, first transform innermost."""
    for t in transforms:
        apply = t.wrap_apply(apply)
    return apply


def has_energy_hook(transforms: Sequence[Transform]) -> bool:
    return any(type(t).wrap_apply is not Transform.wrap_apply for t in transforms)
