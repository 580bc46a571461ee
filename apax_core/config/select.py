"""Batch selection configuration: which structures of a pool to label next (paper sec. 2.4)."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, PositiveInt

from apax_core.config.common import Strict

FeatureMapName = Literal["last_layer_gradient", "descriptor_mean"]
"""The per-structure feature maps (eq. 11); also the feature modes of the predictor."""

UncertaintyQuantity = Literal["energy", "forces"]


class MaxDistance(Strict):
    """Greedy max-min distance in a feature space (eq. 12), seeded from the training set."""

    kind: Literal["max_distance"] = "max_distance"
    feature_map: FeatureMapName = "last_layer_gradient"
    """last_layer_gradient: gradient of the energy w.r.t. the last readout layer (eq. 11);
    descriptor_mean: the descriptor averaged over the atoms of a structure."""
    projection_dim: PositiveInt | None = None
    """Project features onto this many Gaussian random directions (None: no projection)."""
    projection_seed: int = 0
    """Seed of the random projection."""
    min_distance: float | None = Field(None, ge=0.0)
    """Stop early once the farthest remaining structure is closer than this (feature units)."""


class RandomSelection(Strict):
    """Uniformly random structures: the baseline every other method has to beat."""

    kind: Literal["random"] = "random"
    seed: int = 0
    """Seed of the random choice."""


class MaxUncertainty(Strict):
    """The most uncertain structures (ensemble spread), kept ``min_spacing`` indices apart."""

    kind: Literal["max_uncertainty"] = "max_uncertainty"
    quantity: UncertaintyQuantity = "energy"
    """energy: the energy standard deviation; forces: the largest per-atom force spread."""
    min_spacing: PositiveInt = 1
    """No two picks closer than this many pool indices (1: no constraint), for trajectories."""


SelectionMethod = Annotated[
    MaxDistance | RandomSelection | MaxUncertainty, Field(discriminator="kind")
]

SELECTION_METHODS: dict[str, type[Strict]] = {
    cls.model_fields["kind"].default: cls for cls in get_args(get_args(SelectionMethod)[0])
}
"""Each selection method's spec by its ``kind``, in the order of the union; the first
(max_distance) is the default of ``select`` and of the command line."""
