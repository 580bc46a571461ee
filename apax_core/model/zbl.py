"""Ziegler-Biersack-Littmark screened nuclear repulsion: a fixed physical prior at short range."""

from __future__ import annotations

import jax.numpy as jnp

from apax_core.model.basis import cosine_cutoff

COULOMB = 14.399645  # e^2 / (4 pi eps0) in eV * Angstrom
_PHI_C = (0.18175, 0.50986, 0.28022, 0.02817)
_PHI_D = (3.19980, 0.94229, 0.40290, 0.20162)


def zbl_pair_energy(r, z_i, z_j, r_max: float):
    """ZBL energy of each pair (eV), smoothly switched off at ``r_max``.
    r: (N, K) distances, z_i: (N, 1) and z_j: (N, K) atomic numbers -> (N, K)."""
    a = 0.46850 / (z_i**0.23 + z_j**0.23)
    x = r / a
    phi = sum(c * jnp.exp(-d * x) for c, d in zip(_PHI_C, _PHI_D, strict=True))
    return COULOMB * z_i * z_j / r * phi * cosine_cutoff(r, r_max)
