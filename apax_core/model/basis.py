"""Radial basis functions and the smooth cutoff, as pure functions of the pair distance.

Shapes: N atoms, K neighbour slots per atom (dense layout, see data/batch.py); the basis
functions take distances of any shape (...) and append a basis axis.
"""

from __future__ import annotations

import jax.numpy as jnp


def masked_pairs(dr_vec, pair_mask, dtype):
    """dr_vec (N, K, 3), pair_mask (N, K) -> pair vectors (N, K, 3) in ``dtype`` and their
    lengths (N, K); padded slots get the harmless vector (1, 1, 1), so that no NaN reaches a
    gradient (their weights are zero)."""
    dr = jnp.where(pair_mask[..., None], dr_vec, 1.0).astype(dtype)
    return dr, jnp.linalg.norm(dr, axis=-1)


def cosine_cutoff(r, r_max):
    """0.5 (cos(pi r / r_max) + 1) inside r_max, 0 outside: continuous with a continuous slope.
    r: (...) distances -> (...)."""
    return jnp.where(r < r_max, 0.5 * (jnp.cos(jnp.pi * r / r_max) + 1.0), 0.0)


def gaussian_basis(r, n_basis: int, r_min: float, r_max: float):
    """Normalised Gaussians with equally spaced centres in [r_min, r_max).
    r: (...) distances -> (..., n_basis)."""
    centres = r_min + (r_max - r_min) * jnp.arange(n_basis, dtype=r.dtype) / n_basis
    beta = (n_basis / r_max) ** 2
    norm = (2.0 * beta / jnp.pi) ** 0.25
    return norm * jnp.exp(-beta * (r[..., None] - centres) ** 2)


def bessel_basis(r, n_basis: int, r_max: float):
    """Kocer et al.'s smooth combinations of spherical Bessel functions, r: (...) distances ->
    (..., n_basis). These are the functions before their orthogonalisation, so they are not
    orthogonal.

    g_n(r) = (-1)^n sqrt(2) pi / r_max^1.5 * (n+1)(n+2) / sqrt((n+1)^2 + (n+2)^2)
             * [sinc((n+1) r / r_max) + sinc((n+2) r / r_max)],  sinc(x) = sin(pi x) / (pi x).
    Each function and its slope vanish at r_max.
    """
    n = jnp.arange(n_basis, dtype=r.dtype)
    prefactor = (
        (-1.0) ** n
        * jnp.sqrt(2.0)
        * jnp.pi
        / r_max**1.5
        * (n + 1)
        * (n + 2)
        / jnp.sqrt((n + 1) ** 2 + (n + 2) ** 2)
    )
    x = r[..., None] / r_max
    return prefactor * (jnp.sinc((n + 1) * x) + jnp.sinc((n + 2) * x))
