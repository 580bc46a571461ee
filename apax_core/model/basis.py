"""Radial basis functions and the smooth cutoff, as pure functions of the pair distance.

Shapes: N atoms, K neighbour slots per atom (dense layout, see data/batch.py); the basis
functions take distances of any shape (...) and append a basis axis.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def masked_pairs(dr_vec, pair_mask, dtype):
    """dr_vec (N, K, 3), pair_mask (N, K) -> pair vectors (N, K, 3) in ``dtype`` and their
    lengths (N, K); padded slots get the harmless vector (1, 1, 1), so that no NaN reaches a
    gradient (their weights are zero)."""
    dr = jnp.where(pair_mask[..., None], dr_vec, 1.0).astype(dtype)
    return dr, jnp.linalg.norm(dr, axis=-1)


_PI_HI, _PI_LO = np.float32(3.140625), np.float32(np.pi - 3.140625)
"""pi in two parts (Cody and Waite): n * _PI_HI is exact in float32 for |n| < 2^15."""
_SIN = tuple((-1.0) ** j / math.factorial(2 * j + 1) for j in range(6))
_COS = tuple((-1.0) ** j / math.factorial(2 * j) for j in range(7))


def _horner(z2, coefficients):
    out = coefficients[-1]
    for c in coefficients[-2::-1]:
        out = out * z2 + c
    return out


def _reduced(y):
    """y = z + n pi with z in [-pi/2, pi/2]: (z, z^2, (-1)^n)."""
    n = jnp.round(y * (1.0 / np.pi))
    z = (y - n * _PI_HI) - n * _PI_LO
    odd = n - 2.0 * jnp.floor(0.5 * n)  # 0 or 1
    return z, z * z, 1.0 - 2.0 * odd


@jax.custom_jvp
def _sin32(y):
    z, z2, sign = _reduced(y)
    return sign * z * _horner(z2, _SIN)


@_sin32.defjvp
def _sin32_jvp(primals, tangents):
    z, z2, sign = _reduced(primals[0])
    return sign * z * _horner(z2, _SIN), sign * _horner(z2, _COS) * tangents[0]


@jax.custom_jvp
def _cos32(y):
    _, z2, sign = _reduced(y)
    return sign * _horner(z2, _COS)


@_cos32.defjvp
def _cos32_jvp(primals, tangents):
    z, z2, sign = _reduced(primals[0])
    return sign * _horner(z2, _COS), -sign * z * _horner(z2, _SIN) * tangents[0]


def sin_cos(y, cos: bool = False):
    """sin(y) (or cos(y)) elementwise. In float32: one reduction to z = y - n pi in
    [-pi/2, pi/2] and Taylor polynomials of degree 11 (12), |error| < 2.5e-7 for |y| < 1e4,
    the derivative from the same reduction (the other polynomial: the backward pass reuses z
    instead of differentiating the reduction); in float64: jnp.sin / jnp.cos. XLA's CPU sin
    costs 15x this (5.6 against 0.37 ns, bench/basis_speed.py), and a Bessel basis evaluates
    Q + 1 of them per pair."""
    if y.dtype != jnp.float32:
        return jnp.cos(y) if cos else jnp.sin(y)
    return _cos32(y) if cos else _sin32(y)


def sines_and_cosines(y):
    """(sin(y), cos(y)) elementwise from one range reduction (float32, as :func:`sin_cos`);
    jnp.sin and jnp.cos in float64."""
    if y.dtype != jnp.float32:
        return jnp.sin(y), jnp.cos(y)
    z, z2, sign = _reduced(y)
    return sign * z * _horner(z2, _SIN), sign * _horner(z2, _COS)


def cosine_cutoff(r, r_max):
    """0.5 (cos(pi r / r_max) + 1) inside r_max, 0 outside: continuous with a continuous slope.
    r: (...) distances -> (...)."""
    return jnp.where(r < r_max, 0.5 * (sin_cos(jnp.pi * r / r_max, cos=True) + 1.0), 0.0)


def cosine_cutoff_and_slope(r, r_max):
    """:func:`cosine_cutoff` and its derivative by r, (...) -> two (...) arrays."""
    s, c = sines_and_cosines((np.pi / r_max) * r)
    inside = r < r_max
    return jnp.where(inside, 0.5 * (c + 1.0), 0.0), jnp.where(
        inside, (-0.5 * np.pi / r_max) * s, 0.0
    )


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
    Each function and its slope vanish at r_max. The n_basis + 1 sines sin(k pi r / r_max)
    are shared by neighbouring functions (:func:`sin_cos`); r > 0 (pair distances and the
    padding's sqrt(3), see :func:`masked_pairs`).
    """
    prefactor = _bessel_prefactor(n_basis, r_max, r.dtype)
    k = np.arange(1, n_basis + 2).astype(r.dtype)
    theta = (np.pi / r_max) * r[..., None]
    sinc = sin_cos(theta * k) / (theta * k)  # sinc(k r / r_max), k = 1 .. n_basis + 1
    return prefactor * (sinc[..., :-1] + sinc[..., 1:])


def _bessel_prefactor(n_basis: int, r_max: float, dtype):
    n = np.arange(n_basis)
    return (
        (-1.0) ** n
        * np.sqrt(2.0)
        * np.pi
        / r_max**1.5
        * (n + 1)
        * (n + 2)
        / np.sqrt((n + 1) ** 2 + (n + 2) ** 2)
    ).astype(dtype)


def bessel_basis_and_slope(r, n_basis: int, r_max: float):
    """:func:`bessel_basis` and its derivative by r, two (..., n_basis) arrays, from one
    evaluation of the n_basis + 1 sines and cosines: with x = k pi r / r_max,
    d sinc / dr = (cos x - sin x / x) / r."""
    k = np.arange(1, n_basis + 2).astype(r.dtype)
    x = ((np.pi / r_max) * r)[..., None] * k
    s, c = sines_and_cosines(x)
    sinc = s / x
    dsinc = (c - sinc) / r[..., None]
    prefactor = _bessel_prefactor(n_basis, r_max, r.dtype)
    pairs = lambda a: prefactor * (a[..., :-1] + a[..., 1:])  # noqa: E731
    return pairs(sinc), pairs(dsinc)
