"""The energy model (paper eq. 1, 4): representation, readout, scale/shift -> atomic energies.

The module maps pair vectors to per-atom energies; everything else (sums, forces, stress,
ensemble statistics) is a function transformation in :mod:`apax_core.transforms`.
Parameter tree: ``representation`` (radial coefficients), ``readout`` (MLP), ``scale_shift``.

Shapes: N atoms, K neighbour slots per atom, F features per atom, M outputs (1, or the members
of a shallow ensemble).
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from ase.data import chemical_symbols

from apax_core.config import EquivMPConfig, GMNNConfig, ModelConfig
from apax_core.model.gmnn import GaussianMoments
from apax_core.model.readout import Readout
from apax_core.model.zbl import zbl_pair_energy
from apax_core.precision import network_dtype


@dataclass(frozen=True)
class ModelStatistics:
    """Data-derived constants of a model, computed once from the training set and stored with it."""

    elements: tuple[int, ...]
    """Atomic numbers the model knows, ascending; species index = position in this tuple."""
    shift: tuple[float, ...]
    """Initial per-element energy shift (eV/atom), from a least-squares fit."""
    scale: tuple[float, ...]
    """Initial per-element energy scale (eV), the RMS force."""

    @property
    def symbols(self) -> list[str]:
        return [chemical_symbols[z] for z in self.elements]

    def species_table(self) -> np.ndarray:
        """Lookup Z -> species index (padding and unknown Z map to 0; unknown Z are rejected
        on the host before any evaluation)."""
        table = np.zeros(119, dtype=np.int32)
        table[list(self.elements)] = np.arange(len(self.elements), dtype=np.int32)
        return table


def representation(config: ModelConfig, n_species: int, dtype) -> nn.Module:
    """The representation module of a model kind: (dr_vec, species, idx_j, pair_mask) ->
    per-atom features (N, F), zero for padded atoms. The one place that maps kinds to modules."""
    if isinstance(config, GMNNConfig):
        return GaussianMoments(config, n_species, dtype, name="representation")
    if isinstance(config, EquivMPConfig):
        from apax_core.model.equivmp import EquivMP  # e3nn-jax: seconds of import, EquivMP only

        return EquivMP(config, n_species, dtype, name="representation")
    raise TypeError(f"no representation for model kind {config.kind!r}")


def _constant(values):
    def init(key, shape, dtype):
        return jnp.asarray(values, dtype=dtype).reshape(shape)

    return init


class EnergyModel(nn.Module):
    """(dr_vec, Z, idx_j, atom_mask, pair_mask) -> atomic energies (N, n_outputs), fp64.

    Dense neighbours: dr_vec (N, K, 3), Z and atom_mask (N,), idx_j and pair_mask (N, K) (see
    data/batch.py).
    """

    config: ModelConfig
    stats: ModelStatistics
    n_outputs: int = 1

    @nn.compact
    def __call__(self, dr_vec, Z, idx_j, atom_mask, pair_mask):
        cfg, stats = self.config, self.stats
        dtype = network_dtype(cfg.precision)
        n_species = len(stats.elements)
        species = jnp.asarray(stats.species_table())[Z]

        features = representation(cfg, n_species, dtype)(dr_vec, species, idx_j, pair_mask)
        out = Readout(cfg.hidden, cfg.activation, self.n_outputs, dtype, name="readout")(features)

        scale_shift = ScaleShift(stats.scale, stats.shift, name="scale_shift")
        energies = scale_shift(out.astype(jnp.float64), species)

        if cfg.zbl is not None:
            r = jnp.linalg.norm(jnp.where(pair_mask[..., None], dr_vec, 1.0), axis=-1)
            z = Z.astype(jnp.float64)
            pair = zbl_pair_energy(r, z[:, None], z[idx_j], cfg.zbl.r_max) * pair_mask
            energies = energies + 0.5 * jnp.sum(pair, axis=1)[:, None]  # each pair counted twice
        return energies * atom_mask[:, None]


class ScaleShift(nn.Module):
    """E_i = scale[Z_i] * NN_i + shift[Z_i] (eq. 4), parameters in fp64.
    x: (N, M) readout outputs, species: (N,) -> (N, M) atomic energies."""

    scale: tuple[float, ...]
    shift: tuple[float, ...]

    @nn.compact
    def __call__(self, x, species):
        n = len(self.scale)
        scale = self.param("scale", _constant(self.scale), (n,), jnp.float64)
        shift = self.param("shift", _constant(self.shift), (n,), jnp.float64)
        return scale[species][:, None] * x + shift[species][:, None]
