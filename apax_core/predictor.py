"""The one prediction path: what to compute for a model, as one jitted per-structure function.

:func:`predictor` turns a model (any kind: single, shallow or full ensemble) and a mode into a
pure function ``(variables, one padded structure) -> dict``, with the given transforms (e.g.
UDD) and then the calibration applied. ``variables`` is :attr:`Model.variables` (parameters and
calibration factors: inputs, so one compilation serves retrained and recalibrated models). Every
consumer (trainer, predict and evaluate, the ASE calculator, the MD engine, selection) calls it;
none asks which kind of model it has.

Modes:

- ``energy``: the (mean) energy; ensembles add ``energy_ensemble`` and ``energy_uncertainty``.
  A forward pass only.
- ``forces``: plus forces (and stress) from the gradient of the mean energy: the cost of a
  single model (eq. 6, left).
- ``uncertainty``: ensembles compute every member's forces and stress and report their mean
  and spread (eq. 6, right); single models as ``forces``.
- ``last_layer_gradient`` / ``descriptor_mean``: ``{"features": (D,)}`` for selection (eq. 11).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Literal, get_args

import jax
import jax.numpy as jnp

from apax_core.config import FeatureMapName
from apax_core.data.batch import Batch
from apax_core.model_dir import Model, Variables
from apax_core.transforms import (
    Transform,
    batched,
    default_chains,
    energy_forces_stress,
    feature_map,
    has_energy_hook,
    mean_std,
    member_predictions,
    shallow,
    total_energies,
    wrapped_apply,
    zero_strain,
)

Mode = Literal["energy", "forces", "uncertainty"] | FeatureMapName
FEATURE_MODES = frozenset(get_args(FeatureMapName))
Predictor = Callable[[Variables, Batch], dict]


def predictor(
    model: Model,
    mode: Mode = "forces",
    *,
    stress: bool = True,
    transforms: Sequence[Transform] = (),
) -> Predictor:
    """(variables, one structure) -> predictions of ``mode`` (see the module docstring).

    ``transforms`` apply in order (energy hooks innermost first, then results hooks), followed
    by ``variables.calibration``. A full ensemble under an energy transform is evaluated
    through the transformed stacked apply, because a bias couples the members.
    """
    if mode in FEATURE_MODES:
        if transforms:
            raise ValueError(f"feature mode {mode!r} takes no transforms")
        fn = feature_map(model, mode)
        return lambda variables, s: {"features": fn(variables.params, s)}
    if mode not in ("energy", "forces", "uncertainty"):
        raise ValueError(f"unknown prediction mode {mode!r}")
    for t in transforms:
        t.check(model)
    compute = _compute(model, mode, stress, transforms)

    def predict(variables: Variables, s: Batch) -> dict:
        out = compute(variables.params, s)
        for t in transforms:
            out = t.results(out)
        return variables.calibration.results(out, s.Z)  # per-element factors need Z

    return predict


def _compute(model: Model, mode: Mode, stress: bool, chain: Sequence[Transform]) -> Predictor:
    """The raw (untransformed-results) computation of ``mode``."""
    apply = wrapped_apply(model.apply, chain)
    ensemble = model.config.n_members > 1
    if mode == "uncertainty" and ensemble:
        member_apply = None if has_energy_hook(chain) else model.member_apply
        chunk = model.config.member_chunk
        gradients = None
        if not has_energy_hook(chain) and shallow.supports(model):
            gradients = functools.partial(shallow.member_gradients, model, chunk_size=chunk)

        def members(params, s):
            out = member_predictions(
                apply,
                params,
                s,
                member_apply=member_apply,
                chunk_size=chunk,
                gradients=gradients,
            )
            return out if stress else {k: v for k, v in out.items() if not k.startswith("stress")}

        return members

    def mean(params, s):
        if mode == "energy":
            energies = total_energies(apply, params, s.positions, zero_strain(), s)
            out = {"energy": jnp.mean(energies), "energy_ensemble": energies}
        else:
            out = energy_forces_stress(apply, params, s, stress=stress)
        if ensemble:
            out["energy_uncertainty"] = mean_std(out["energy_ensemble"])[1]
        else:
            out.pop("energy_ensemble")
        return out

    return mean


def compiled(
    model: Model,
    mode: Mode = "forces",
    *,
    stress: bool = True,
    transforms: Sequence[Transform] = (),
) -> Callable[[Variables, Batch], dict]:
    """The jitted, batched :func:`predictor`, ``(variables, batch) -> dict``. Parameters and
    calibration are arguments, so one compilation serves every model of the same architecture
    and transforms. On a CPU the batch runs as independent chains (:func:`batched`)."""
    return _compiled(architecture(model), mode, stress, tuple(transforms))


def architecture(model: Model) -> tuple:
    """The hashable part of ``model`` a compiled prediction depends on: the config and the
    statistics (not the parameters or the calibration, which are inputs)."""
    return type(model.config), model.config.model_dump_json(), model.stats


@functools.lru_cache(maxsize=32)
def _compiled(arch: tuple, mode, stress, transforms):
    config_type, config_json, stats = arch
    model = Model(config_type.model_validate_json(config_json), stats, None)
    fn = predictor(model, mode, stress=stress, transforms=transforms)
    return jax.jit(batched(fn, chains=default_chains()))
