"""Gaussian-moment representation (paper eq. 2-3).

Per pair: learned radial channels R_s(r) (element-pair contractions of a radial basis) times
tensor powers of the unit vector, summed onto the centre atom (Cartesian moments of rank 0-3).
Contracting the moments to rotational invariants gives the descriptor; the eight contraction
groups give 5 + 15 + 15 + 15 + 35 + 75 + 75 + 125 = 360 features for five radial channels.

Shapes: N atoms, K neighbour slots per atom, S radial channels, Q basis functions, A species.
"""

from __future__ import annotations

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from apax_core.config import GMNNConfig
from apax_core.model.basis import bessel_basis, cosine_cutoff, gaussian_basis, masked_pairs


def radial_basis(r, config: GMNNConfig):
    """The configured basis with the 1/sqrt(n_basis) of a Gaussian contraction.
    r: (N, K) distances -> (N, K, n_basis)."""
    if config.basis == "gaussian":
        scale = 1.0 / float(np.sqrt(config.n_basis))
        return scale * gaussian_basis(r, config.n_basis, config.r_min, config.r_max)
    return bessel_basis(r, config.n_basis, config.r_max)


def _pairs(n: int) -> np.ndarray:
    """Index pairs r <= s, as two rows."""
    return np.array([(a, b) for a in range(n) for b in range(a, n)]).T


def _triples(n: int) -> np.ndarray:
    """Index triples r <= s <= t, as three rows."""
    return np.array(list(itertools.combinations_with_replacement(range(n), 3))).T


def _powers2(u):
    """u: (..., 3) unit vectors -> (..., 13): 1, u_y, u_y u_z (flattened y * 3 + z)."""
    u2 = (u[..., :, None] * u[..., None, :]).reshape(*u.shape[:-1], 9)
    return jnp.concatenate([jnp.ones_like(u[..., :1]), u, u2], axis=-1)


def _powers3(u):
    """u: (..., 3) unit vectors -> (..., 40): 1, u_x, u_x u_y, u_x u_y u_z."""
    u3 = u[..., :, None, None] * u[..., None, :, None] * u[..., None, None, :]
    return jnp.concatenate([_powers2(u), u3.reshape(*u.shape[:-1], 27)], axis=-1)


@jax.custom_vjp
def moments(radial, unit):
    """Cartesian moments of rank 0-3 of one environment per atom:
    m_c[n, s] = sum_k R[n, k, s] (u_nk)^c, as m0 (N, S), m1 (N, S, 3), m2 (N, S, 3, 3),
    m3 (N, S, 3, 3, 3), from radial (N, K, S) channels and unit (N, K, 3) pair directions.

    The hand-written VJP contracts the cotangents with the radial weights before touching the
    pair axis, so no (pairs x 40) intermediate is built: a shallow ensemble's M member VJPs
    (vmapped) run ~10x faster than JAX's derived rule, which is what force uncertainties and
    force-CRPS training pay for. Reverse mode only (forces, stress, training, jacrev).
    """
    m = jnp.einsum("nks,nkc->nsc", radial, _powers3(unit))
    n, s = m.shape[:2]
    return (
        m[..., 0],
        m[..., 1:4],
        m[..., 4:13].reshape(n, s, 3, 3),
        m[..., 13:].reshape(n, s, 3, 3, 3),
    )


def _moments_fwd(radial, unit):
    return moments(radial, unit), (radial, unit)


def moments_pullback(radial, unit, cotangents):
    """The moments' VJP for cotangents with any leading batch axes B (e.g. the M members of a
    shallow ensemble): radial (N, K, S), unit (N, K, 3), cotangents (d0, d1, d2, d3) shaped
    (*B, N, S), (*B, N, S, 3), (*B, N, S, 3, 3), (*B, N, S, 3, 3, 3) -> d_radial (N, K, *B, S),
    d_unit (N, K, *B, 3). The batch axes come after the pair axes: they are folded into the
    columns of the two per-atom GEMMs (M cotangents cost two GEMMs with M times the columns,
    not M small ones), whose outputs have that layout.
    """
    d0, d1, d2, d3 = cotangents
    lead, (n, s) = d0.shape[:-2], d0.shape[-2:]
    flat = jnp.concatenate(
        [d0[..., None], d1, d2.reshape(*lead, n, s, 9), d3.reshape(*lead, n, s, 27)], -1
    )
    # d m / d u_a: sum over the positions a takes in u_x u_y (u_z), contracted with the cotangent.
    sym2 = d2 + jnp.swapaxes(d2, -1, -2)
    sym3 = d3 + jnp.einsum("...xyz->...yxz", d3) + jnp.einsum("...yzx->...xyz", d3)
    a = jnp.concatenate([d1[..., None], sym2, sym3.reshape(*lead, n, s, 3, 9)], -1)
    rq = radial[..., :, None] * _powers2(unit)[..., None, :]  # (N, K, S, 13)
    if not lead:  # (the fastest layout for one cotangent, measured in the model's backward)
        d_radial = jnp.einsum("nsc,nkc->nks", flat, _powers3(unit))
        a = jnp.swapaxes(a, -1, -2).reshape(n, -1, 3)  # (N, S * 13, 3)
        return d_radial, jnp.einsum("nkj,njx->nkx", rq.reshape(*rq.shape[:2], -1), a)
    b = int(np.prod(lead, dtype=int))
    d_radial = jnp.einsum("nkc,bnsc->nkbs", _powers3(unit), flat.reshape(b, n, s, 40))
    d_unit = jnp.einsum("nksj,bnsxj->nkbx", rq, a.reshape(b, n, s, 3, 13))
    k = radial.shape[1]
    return d_radial.reshape(n, k, *lead, s), d_unit.reshape(n, k, *lead, 3)


def _moments_bwd(residuals, cotangents):
    radial, unit = residuals
    return moments_pullback(radial, unit, cotangents)


moments.defvjp(_moments_fwd, _moments_bwd)


def contractions(m0, m1, m2, m3, n_contr: int):
    """Rotational invariants of the moments of one atom's environment, (N, n_features).

    m0: (N, S), m1: (N, S, 3), m2: (N, S, 3, 3), m3: (N, S, 3, 3, 3). Symmetric index
    combinations are kept once (the contractions are symmetric under those permutations).
    """
    n_s = m0.shape[-1]
    p, t = _pairs(n_s), _triples(n_s)
    groups = [
        lambda: m0,
        lambda: jnp.einsum("nrx,nsx->nrs", m1, m1)[:, p[0], p[1]],
        lambda: jnp.einsum("nrxy,nsxy->nrs", m2, m2)[:, p[0], p[1]],
        lambda: jnp.einsum("nrxyz,nsxyz->nrs", m3, m3)[:, p[0], p[1]],
        lambda: jnp.einsum("nrxy,nsxz,ntyz->nrst", m2, m2, m2)[:, t[0], t[1], t[2]],
        lambda: jnp.einsum("nrx,nsy,ntxy->nrst", m1, m1, m2)[:, p[0], p[1]].reshape(
            m0.shape[0], -1
        ),
        lambda: jnp.einsum("nrxyz,nsxyw,ntzw->nrst", m3, m3, m2)[:, p[0], p[1]].reshape(
            m0.shape[0], -1
        ),
        lambda: jnp.einsum("nrxyz,nsxy,ntz->nrst", m3, m2, m1).reshape(m0.shape[0], -1),
    ]
    return jnp.concatenate([g() for g in groups[:n_contr]], axis=-1)


def group_sizes(n_radial: int, n_contr: int) -> list[int]:
    """Length of each of the first ``n_contr`` contraction groups."""
    n_p, n_t = n_radial * (n_radial + 1) // 2, len(_triples(n_radial)[0])
    sizes = [n_radial, n_p, n_p, n_p, n_t, n_p * n_radial, n_p * n_radial, n_radial**3]
    return sizes[:n_contr]


def descriptor_size(n_radial: int, n_contr: int) -> int:
    """Length of the descriptor for ``n_radial`` channels and the first ``n_contr`` groups."""
    return sum(group_sizes(n_radial, n_contr))


def _weighted_basis(r, pair_mask, config: GMNNConfig):
    """The basis times the cutoff, padded slots zero: (N, K) -> (N, K, Q)."""
    weight = cosine_cutoff(r, config.r_max) * pair_mask
    return radial_basis(r, config) * weight[..., None]


def _contract(basis, onehot, neighbour_onehot, coeffs):
    """R[n, k, s] = sum_q c[Z_n, Z_j, s, q] basis[n, k, q]: pick Z_j, contract q, pick Z_n."""
    per_j = jnp.einsum("nkb,nkq,absq->nkas", neighbour_onehot, basis, coeffs)
    return jnp.einsum("na,nkas->nks", onehot, per_j)


def _radial(r, coeffs, onehot, neighbour_onehot, pair_mask, config: GMNNConfig):
    """The radial channels (N, K, S) as a plain function (see :func:`radial_channels`)."""
    return _contract(_weighted_basis(r, pair_mask, config), onehot, neighbour_onehot, coeffs)


def radial_and_slope(r, onehot, neighbour_onehot, coeffs, pair_mask, config: GMNNConfig):
    """The radial channels (N, K, S) and their derivative d R / d r (N, K, S), from one
    forward-mode pass (the basis' sines and their cosines share one evaluation)."""

    def radial_of(r):
        return _radial(r, coeffs, onehot, neighbour_onehot, pair_mask, config)

    return jax.jvp(radial_of, (r,), (jnp.ones_like(r),))


def radial_channels(r, onehot, neighbour_onehot, coeffs, pair_mask, config: GMNNConfig):
    """The learned radial channels (N, K, S), R[n, k, s] = sum_q c[Z_n, Z_j, s, q] g_q(r_nk)
    w(r_nk), from distances r (N, K), one-hot species of the centres (N, A) and of their
    neighbours (N, K, A), coefficients (A, A, S, Q) and the pair mask (N, K).

    Its VJP keeps d R / d r (N, K, S) from the forward pass (:func:`radial_and_slope`), so the
    distances' cotangent is one product, where JAX's derived rule stored and re-traversed the
    basis polynomial's (N, K, Q + 1) intermediates: the GMNN's backward pass ran ~25 % faster
    (bench/profile_md.py). The basis is kept for the coefficients' cotangent only (training;
    XLA drops it where no parameter gradient is taken). Reverse mode only, like
    :func:`moments`; the species and the mask get no cotangent.
    """

    @jax.custom_vjp
    def channels(r, coeffs, onehot, neighbour_onehot, pair_mask):
        return _radial(r, coeffs, onehot, neighbour_onehot, pair_mask, config)

    def fwd(r, coeffs, onehot, neighbour_onehot, pair_mask):
        radial, slope = radial_and_slope(r, onehot, neighbour_onehot, coeffs, pair_mask, config)
        basis = _weighted_basis(r, pair_mask, config)
        return radial, (slope, basis, coeffs, onehot, neighbour_onehot)

    def bwd(residuals, g):
        slope, basis, coeffs, onehot, neighbour_onehot = residuals
        _, coeffs_vjp = jax.vjp(lambda c: _contract(basis, onehot, neighbour_onehot, c), coeffs)
        return jnp.sum(g * slope, axis=-1), coeffs_vjp(g)[0], None, None, None

    channels.defvjp(fwd, bwd)
    return channels(r, coeffs, onehot, neighbour_onehot, pair_mask)


def _symmetric_uniform(key, shape, dtype):
    """U(-1, 1) initial radial coefficients."""
    return jax.random.uniform(key, shape, dtype, -1.0, 1.0)


class GaussianMoments(nn.Module):
    """(dr_vec, species, idx_j, pair_mask) -> per-atom features (N, n_features).

    Dense neighbours: dr_vec (N, K, 3), species (N,), idx_j and pair_mask (N, K); moments are
    sums over the K axis. Element-pair coefficients are selected by one-hot contractions, so
    the backward pass has no scatter into the small coefficient table.
    """

    config: GMNNConfig
    n_species: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, dr_vec, species, idx_j, pair_mask):
        cfg = self.config
        dr, r = masked_pairs(dr_vec, pair_mask, self.dtype)
        unit = dr / r[..., None]

        coeffs = self.param(
            "radial_coeffs",
            _symmetric_uniform,
            (self.n_species, self.n_species, cfg.n_radial, cfg.n_basis),
            self.dtype,
        )
        onehot = jax.nn.one_hot(species, self.n_species, dtype=self.dtype)  # (N, A)
        radial = radial_channels(r, onehot, onehot[idx_j], coeffs, pair_mask, cfg)

        return contractions(*moments(radial, unit), cfg.n_contr)
