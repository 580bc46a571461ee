"""Energy models: a representation behind ``(dr_vec, Z, idx) -> per-atom features``, a readout,
per-element scale/shift, optional ZBL; single models and shallow or full ensembles."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from apax_core.config import FullEnsemble, ModelConfig, ShallowEnsemble
from apax_core.data.batch import two_atoms
from apax_core.model.gmnn import descriptor_size
from apax_core.model.potential import EnergyModel, ModelStatistics

__all__ = [
    "EnergyModel",
    "ModelStatistics",
    "build_model",
    "descriptor_size",
    "init_params",
    "make_apply",
    "make_member_apply",
]


def build_model(config: ModelConfig, stats: ModelStatistics) -> EnergyModel:
    """The flax module; a shallow ensemble is a readout with ``n_members`` outputs."""
    shallow = isinstance(config.ensemble, ShallowEnsemble)
    return EnergyModel(config, stats, config.ensemble.n_members if shallow else 1)


def is_full(config: ModelConfig) -> bool:
    return isinstance(config.ensemble, FullEnsemble)


def init_params(model: EnergyModel, key: jax.Array):
    """Fresh parameters (call inside ``precision.x64()`` so scale/shift are fp64).

    A full ensemble gets M independently initialised parameter sets stacked on axis 0.
    """
    s = two_atoms(model.stats.elements[0])
    dr = jnp.asarray(s.positions[s.idx_j] - s.positions[:, None, :] + s.offsets)

    def init(k):
        return model.init(k, dr, s.Z, s.idx_j, s.atom_mask, s.pair_mask)["params"]

    # jitted: run eagerly, initialisation dispatches every small op on its own (seconds)
    if is_full(model.config):
        return jax.jit(jax.vmap(init))(jax.random.split(key, model.config.ensemble.n_members))
    return jax.jit(init)(key)


def make_member_apply(model: EnergyModel):
    """Single-member apply on unstacked parameters for a full ensemble, (params, dr_vec, Z,
    idx_j, atom_mask, pair_mask) -> (N, 1); None otherwise."""
    if not is_full(model.config):
        return None
    return lambda params, *args: model.apply({"params": params}, *args)


def make_apply(model: EnergyModel):
    """(params, dr_vec, Z, idx_j, atom_mask, pair_mask) -> atomic energies (N, M).

    M is 1 for a single model and the member count for either kind of ensemble.
    """

    def apply(params, *args):
        return model.apply({"params": params}, *args)

    if not is_full(model.config):
        return apply

    def apply_full(params, *args):
        return jnp.transpose(jax.vmap(lambda p: apply(p, *args)[:, 0])(params))

    return apply_full
