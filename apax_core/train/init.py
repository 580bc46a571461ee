"""Data-dependent initialisation: descriptor group scales from the training structures."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from apax_core.config import ModelConfig, PadToMax
from apax_core.data import Dataset
from apax_core.model import ModelStatistics
from apax_core.model.gmnn import GaussianMoments, group_sizes
from apax_core.precision import network_dtype
from apax_core.transforms import pair_vectors


def feature_scales(
    config: ModelConfig, stats: ModelStatistics, params, data: Dataset, n_structures: int = 32
) -> tuple[float, ...]:
    """1 / RMS of each contraction group over the atoms of (up to) ``n_structures`` structures,
    with the initial radial coefficients."""
    rep = GaussianMoments(config, len(stats.elements), None, network_dtype(config.precision))
    table = jnp.asarray(stats.species_table())

    @jax.jit
    def descriptor(p, s):
        dr = pair_vectors(s.positions, s.offsets, s.idx_j, jnp.zeros((3, 3)))
        return rep.apply({"params": p}, dr, table[s.Z], s.idx_j, s.pair_mask)

    rep_params = params["representation"]
    if config.ensemble is not None and config.ensemble.kind == "full":
        rep_params = jax.tree.map(lambda x: x[0], rep_params)  # members share the statistics
    sample = data.subset(range(min(n_structures, len(data))))
    squares = []
    for batch in sample.batches(1, PadToMax(), shuffle=False, seed=0):
        s = jax.tree.map(lambda x: x[0], batch)
        f = np.asarray(descriptor(rep_params, s), dtype=np.float64)
        squares.append(f[np.asarray(s.atom_mask)] ** 2)
    sq = np.concatenate(squares)
    sizes = group_sizes(config.n_radial, config.n_contr)
    bounds = np.cumsum([0, *sizes])
    rms = [np.sqrt(np.mean(sq[:, a:b])) for a, b in itertools.pairwise(bounds)]
    return tuple(float(1.0 / max(r, 1e-6)) for r in rms)
