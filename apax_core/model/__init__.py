"""Energy models: a representation behind ``(dr_vec, Z, idx) -> per-atom features``, a readout,
per-element scale/shift, optional ZBL."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from apax_core.config import ModelConfig
from apax_core.model.energy import EnergyModel, ModelStatistics
from apax_core.model.gmnn import descriptor_size

__all__ = ["EnergyModel", "ModelStatistics", "build_model", "descriptor_size", "init_params"]


def build_model(config: ModelConfig, stats: ModelStatistics, n_outputs: int = 1) -> EnergyModel:
    """The flax module for ``config``; ``n_outputs > 1`` is a shallow ensemble readout."""
    return EnergyModel(config, stats, n_outputs)


def init_params(model: EnergyModel, key: jax.Array):
    """Fresh parameters (call inside ``precision.x64()`` so scale/shift are fp64)."""
    z = jnp.asarray([model.stats.elements[0]] * 2, dtype=jnp.int32)
    dr = jnp.asarray([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]], dtype=jnp.float64)
    idx_i, idx_j = jnp.asarray([0, 1]), jnp.asarray([1, 0])
    mask = jnp.ones(2, dtype=bool)
    return model.init(key, dr, z, idx_i, idx_j, mask, mask)["params"]
