"""Gaussian-moment representation (paper eq. 2-3).

Per pair: learned radial channels R_s(r) (element-pair contractions of a radial basis) times
tensor powers of the unit vector, summed onto the centre atom (Cartesian moments of rank 0-3).
Contracting the moments to rotational invariants gives the descriptor; the eight contraction
groups give 5 + 15 + 15 + 15 + 35 + 75 + 75 + 125 = 360 features for five radial channels.

Shapes: N atoms, K neighbour slots per atom, S radial channels, Q basis functions, A species.
"""

from __future__ import annotations

import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from apax_core import native
from apax_core.config import GMNNConfig
from apax_core.model.basis import (
    bessel_basis,
    bessel_basis_and_slope,
    cosine_cutoff,
    cosine_cutoff_and_slope,
    gaussian_basis,
    masked_pairs,
)


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


_MONOMIALS = [
    t for rank in range(4) for t in itertools.combinations_with_replacement(range(3), rank)
]
"""The 20 distinct monomials of a unit vector's components up to degree 3, as sorted index
tuples: (), (x,), ..., (x, x), (x, y), ..., (z, z, z). The first 10 are those of degree <= 2."""
_POSITION = {t: c for c, t in enumerate(_MONOMIALS)}
_FULL = np.array(
    [
        _POSITION[tuple(sorted(t))]
        for rank in range(4)
        for t in itertools.product(range(3), repeat=rank)
    ]
)
"""(40,) the monomial behind each component of the flattened tensors 1, u_x, u_x u_y,
u_x u_y u_z."""
_FOLD = np.eye(len(_MONOMIALS), dtype=np.float32)[_FULL]
"""(40, 20) sums the cotangents of a monomial's copies in the full tensors."""


def _slope_table() -> np.ndarray:
    """(20, 3, 10) d monomial_c / d u_x as a combination of the monomials of degree <= 2."""
    table = np.zeros((len(_MONOMIALS), 3, 10), np.float32)
    for c, t in enumerate(_MONOMIALS):
        for x in set(t):
            rest = list(t)
            rest.remove(x)
            table[c, x, _POSITION[tuple(rest)]] = t.count(x)
    return table


_SLOPES = _slope_table()
_SQUARES = np.array([t for t in _MONOMIALS if len(t) == 2]).T
_CUBES = np.array([(_POSITION[t[:2]], t[2]) for t in _MONOMIALS if len(t) == 3]).T


def _monomials(u):
    """u: (..., 3) unit vectors -> (..., 20) their distinct monomials of degree <= 3
    (:data:`_MONOMIALS`)."""
    quadratic = jnp.concatenate(
        [jnp.ones_like(u[..., :1]), u, u[..., _SQUARES[0]] * u[..., _SQUARES[1]]], axis=-1
    )
    return jnp.concatenate([quadratic, quadratic[..., _CUBES[0]] * u[..., _CUBES[1]]], axis=-1)


@jax.custom_vjp
def moments(radial, unit):
    """Cartesian moments of rank 0-3 of one environment per atom:
    m_c[n, s] = sum_k R[n, k, s] (u_nk)^c, as m0 (N, S), m1 (N, S, 3), m2 (N, S, 3, 3),
    m3 (N, S, 3, 3, 3), from radial (N, K, S) channels and unit (N, K, 3) pair directions.

    The pair sums run over the 20 distinct monomials only (the tensors are symmetric); the
    full tensors are copies made per atom. The hand-written VJP contracts the cotangents with
    the radial weights before touching the pair axis, so no (pairs x monomials x members)
    intermediate is built: a shallow ensemble's M member VJPs (vmapped) run ~10x faster than
    JAX's derived rule, which is what force uncertainties and force-CRPS training pay for.
    Against the 40 components of the full tensors, energy + forces cost ~10 % less
    (bench/force_uncertainty.py). Reverse mode only (forces, stress, training, jacrev).
    """
    return full_moments(_pair_sums(radial, unit))


def _pair_sums(radial, unit):
    """(N, S, 20): the radial channels times the distinct monomials, summed over the pairs."""
    return jnp.einsum("nks,nkc->nsc", radial, _monomials(unit))


def full_moments(sums):
    """The distinct sums (N, S, 20) copied into the full tensors m0..m3 (see :func:`moments`)."""
    m = sums[..., _FULL]
    n, s = m.shape[:2]
    return (
        m[..., 0],
        m[..., 1:4],
        m[..., 4:13].reshape(n, s, 3, 3),
        m[..., 13:].reshape(n, s, 3, 3, 3),
    )


def _moments_fwd(radial, unit):
    return moments(radial, unit), (radial, unit)


@jax.custom_vjp
def moment_sums(radial, unit):
    """The moments as their 20 distinct pair sums (N, S, 20) (the compiled contractions take
    these), with :func:`moments`' VJP."""
    return _pair_sums(radial, unit)


def _moment_sums_fwd(radial, unit):
    return moment_sums(radial, unit), (radial, unit)


def _moment_sums_bwd(residuals, g):
    d_radial, d_unit = monomials_pullback(*residuals, g[:, None])
    return d_radial[:, :, 0], d_unit[:, :, 0]


def monomials_pullback(radial, unit, g):
    """The moments' VJP from the cotangents of the distinct monomials' pair sums, for any batch
    axes B after the atoms' (e.g. the M members of a shallow ensemble): radial (N, K, S),
    unit (N, K, 3), g (N, *B, S, 20) -> d_radial (N, K, *B, S), d_unit (N, K, *B, 3). In
    float32 on a CPU by the compiled kernel (:func:`apax_core.native.monomials_pullback`),
    else by XLA (:func:`xla_monomials_pullback`)."""
    n, lead, s = g.shape[0], g.shape[1:-2], g.shape[-2]
    b = int(np.prod(lead, dtype=int))
    g = g.reshape(n, b, s, 20)
    compiled = native.applies(radial.dtype) and s <= 16  # the kernel keeps S channels in registers
    fn = native.monomials_pullback if compiled else xla_monomials_pullback
    d_radial, d_unit = fn(radial, unit, g)
    k = radial.shape[1]
    return d_radial.reshape(n, k, *lead, s), d_unit.reshape(n, k, *lead, 3)


def xla_monomials_pullback(radial, unit, g):
    """:func:`monomials_pullback` by XLA for one batch axis, g (N, B, S, 20): the batch is
    folded into the columns of two per-atom GEMMs (M cotangents cost two GEMMs with M times
    the columns, not M small ones)."""
    n, b, s = g.shape[:3]
    # d_unit[n, k, x] = sum_{s, j} R[n, k, s] q_j(u_nk) a[n, s, j, x], q the 10 of degree <= 2
    a = jnp.einsum("nbsc,cxj->nbsjx", g, _SLOPES).reshape(n, b, s * 10, 3)
    p = _monomials(unit)
    rq = (radial[..., :, None] * p[..., None, :10]).reshape(n, -1, s * 10)  # (N, K, S * 10)
    d_radial = jnp.einsum("nkc,nbsc->nkbs", p, g)
    d_unit = jnp.einsum("nkj,nbjx->nkbx", rq, a)
    return d_radial, d_unit


def _fold(cotangents):
    """Cotangents of the full tensors m0..m3 -> (N, S, 20) those of the distinct monomials."""
    d0, d1, d2, d3 = cotangents
    n, s = d0.shape
    flat = jnp.concatenate([d0[..., None], d1, d2.reshape(n, s, 9), d3.reshape(n, s, 27)], -1)
    return flat @ _FOLD


def _moments_bwd(residuals, cotangents):
    radial, unit = residuals
    d_radial, d_unit = monomials_pullback(radial, unit, _fold(cotangents)[:, None])
    return d_radial[:, :, 0], d_unit[:, :, 0]


moments.defvjp(_moments_fwd, _moments_bwd)
moment_sums.defvjp(_moment_sums_fwd, _moment_sums_bwd)


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


_FOLD2, _FOLD3 = _FOLD[4:13, 4:10], _FOLD[13:, 10:]
"""(9, 6) and (27, 10): :data:`_FOLD`'s blocks for the rank-2 and rank-3 components."""


def _cotangent_tensor(g, n_s: int, group: int):
    """A contraction group's cotangents (..., size) -> (..., S, S[, S]) over every index tuple
    of its moments, zero where the group keeps a tuple once (:func:`contractions`)."""
    if group == 7:  # every (r, s, t)
        return g.reshape(*g.shape[:-1], n_s, n_s, n_s)
    p, t = _pairs(n_s), _triples(n_s)
    rank = 2 if group < 4 else 3
    position = np.full((n_s,) * rank, g.shape[-1])  # the zero slot appended below
    if group < 4:
        position[p[0], p[1]] = np.arange(len(p[0]))
    elif group == 4:
        position[t[0], t[1], t[2]] = np.arange(len(t[0]))
    else:  # (pair r <= s, any t)
        position[p[0], p[1]] = np.arange(len(p[0]))[:, None] * n_s + np.arange(n_s)
    g = jnp.concatenate([g, jnp.zeros_like(g[..., :1])], -1)
    return g[..., position.reshape(-1)].reshape(*g.shape[:-1], *(n_s,) * rank)


def _partners(m1, m2, m3, n_contr: int) -> dict:
    """Per (group, rank of the moment differentiated): the products of a contraction's other
    factors, (N, J, C) over J index pairs and the C distinct components of that rank; they do
    not depend on the cotangent, so a shallow ensemble's members share them."""
    n = m1.shape[0]
    f2 = lambda x: x.reshape(n, -1, 9) @ _FOLD2  # noqa: E731
    f3 = lambda x: x.reshape(n, -1, 27) @ _FOLD3  # noqa: E731
    terms = {
        (1, 1): lambda: m1,
        (2, 2): lambda: f2(m2),
        (3, 3): lambda: f3(m3),
        (4, 2): lambda: f2(jnp.einsum("naxz,nbzy->nabxy", m2, m2)),
        (5, 1): lambda: jnp.einsum("ntxy,nsy->nstx", m2, m1).reshape(n, -1, 3),
        (5, 2): lambda: f2(jnp.einsum("nrx,nsy->nrsxy", m1, m1)),
        (6, 2): lambda: f2(jnp.einsum("nrxyz,nsxyw->nrszw", m3, m3)),
        (6, 3): lambda: f3(jnp.einsum("nsxyw,ntzw->nstxyz", m3, m2)),
        (7, 1): lambda: jnp.einsum("nrxyz,nsxy->nrsz", m3, m2).reshape(n, -1, 3),
        (7, 2): lambda: f2(jnp.einsum("nrxyz,ntz->nrtxy", m3, m1)),
        (7, 3): lambda: f3(jnp.einsum("nsxy,ntz->nstxyz", m2, m1)),
    }
    return {key: f() for key, f in terms.items() if key[0] < n_contr}


def _weights(gf: dict, n_s: int) -> dict:
    """Per (group, rank): the cotangent tensors (..., S, J) paired with :func:`_partners`.

    A group's contraction is sum_rst G[r, s, t] x_r y_s z_t (tensor indices implied), so
    d/dx_q = sum_st G[q, s, t] (y_s z_t): each factor pairs a permutation of G with the product
    of the other two. Factors whose partner products coincide (the moments are symmetric)
    are summed first."""
    swap = lambda x, a, b: jnp.swapaxes(x, a, b)  # noqa: E731
    last_first = lambda x: jnp.moveaxis(x, -1, -3)  # noqa: E731
    terms = {
        (1, 1): lambda g: g + swap(g, -1, -2),
        (2, 2): lambda g: g + swap(g, -1, -2),
        (3, 3): lambda g: g + swap(g, -1, -2),
        (4, 2): lambda g: g + swap(g, -3, -2) + last_first(g),
        (5, 1): lambda g: g + swap(g, -3, -2),
        (5, 2): last_first,
        (6, 2): last_first,
        (6, 3): lambda g: g + swap(g, -3, -2),
        (7, 1): last_first,
        (7, 2): lambda g: swap(g, -3, -2),
        (7, 3): lambda g: g,
    }
    out = {}
    for (group, rank), term in terms.items():
        if group in gf:
            w = term(gf[group])
            out[group, rank] = w.reshape(*w.shape[: -(2 if group < 4 else 3)], n_s, -1)
    return out


def contractions_pullback(m: tuple, d_features, n_contr: int):
    """The VJP of :func:`contractions` for B cotangents at once, as the cotangents of the
    distinct monomials' pair sums (what :func:`monomials_pullback` takes): moments m (full
    tensors, symmetric as :func:`moments` makes them), d_features (B, N, F) -> (N, B, S, 20).

    Hand-derived: the products of each contraction's other factors are formed once per atom
    (:func:`_partners`) and folded to distinct components, and each member's share is one
    batched GEMM per (group, rank) over those products (:func:`_weights`). For a shallow
    ensemble's 8 members at 864 atoms this runs ~15 % faster than JAX's VJP vmapped over the
    members in blocks of atoms, and the whole force uncertainty ~25 % faster
    (bench/force_uncertainty.py)."""
    m0 = m[0]
    n, n_s = m0.shape
    d = jnp.moveaxis(d_features, 0, 1)  # (N, B, F): atoms lead, as in the GEMMs below
    groups = jnp.split(d, np.cumsum(group_sizes(n_s, n_contr))[:-1], axis=-1)
    gf = {k: _cotangent_tensor(groups[k], n_s, k) for k in range(1, n_contr)}
    weights, partners = _weights(gf, n_s), _partners(*m[1:], n_contr)
    out = [groups[0][..., None]]
    for rank, size in ((1, 3), (2, 6), (3, 10)):
        acc = jnp.zeros((n, d.shape[1], n_s, size), d.dtype)
        for key, w in weights.items():
            if key[1] == rank:
                acc = acc + jnp.einsum("nbqj,njc->nbqc", w, partners[key])
        out.append(acc)
    return jnp.concatenate(out, -1)


def features_and_moments(radial, unit, n_contr: int):
    """The descriptor (N, F) of radial (N, K, S) channels and unit (N, K, 3) pair directions,
    and the full moments it contracts: in float32 on a CPU by the compiled contractions
    (:func:`apax_core.native.contractions`, an MD step ~1.3-1.6x faster), else by XLA's."""
    if native.applies(radial.dtype):
        sums = moment_sums(radial, unit)
        return native.contractions(sums, n_contr), full_moments(sums)
    m = moments(radial, unit)
    return contractions(*m, n_contr), m


def _weighted_basis(r, pair_mask, config: GMNNConfig):
    """The basis times the cutoff, padded slots zero: (N, K) -> (N, K, Q)."""
    weight = cosine_cutoff(r, config.r_max) * pair_mask
    return radial_basis(r, config) * weight[..., None]


def _gaussian_basis_and_slope(r, config: GMNNConfig):
    """The Gaussian :func:`radial_basis` and its derivative by r, two (N, K, Q) arrays."""
    basis = radial_basis(r, config)
    step = (config.r_max - config.r_min) / config.n_basis
    centres = (config.r_min + step * np.arange(config.n_basis)).astype(r.dtype)
    beta = (config.n_basis / config.r_max) ** 2
    return basis, basis * (-2.0 * beta) * (r[..., None] - centres)


def weighted_basis_and_slope(r, pair_mask, config: GMNNConfig):
    """:func:`_weighted_basis` and its derivative by r, (N, K) -> two (N, K, Q) arrays: a
    Bessel basis in float32 on a CPU by the compiled kernel
    (:func:`apax_core.native.bessel_basis_and_slope`: XLA recomputes the basis' polynomials
    inside each of its consumers), else from one evaluation of the sines and cosines."""
    if config.basis == "bessel" and native.applies(r.dtype):
        mask = jnp.broadcast_to(pair_mask, r.shape).astype(r.dtype)
        return native.bessel_basis_and_slope(r, mask, config.n_basis, config.r_max)
    if config.basis == "bessel":
        return xla_bessel_basis_and_slope(r, pair_mask, config.n_basis, config.r_max)
    basis, d_basis = _gaussian_basis_and_slope(r, config)
    return _weighted(basis, d_basis, r, pair_mask, config.r_max)


def xla_bessel_basis_and_slope(r, pair_mask, n_basis: int, r_max: float):
    """The weighted Bessel basis and its slope by XLA (see :func:`weighted_basis_and_slope`)."""
    basis, d_basis = bessel_basis_and_slope(r, n_basis, r_max)
    return _weighted(basis, d_basis, r, pair_mask, r_max)


def _weighted(basis, d_basis, r, pair_mask, r_max: float):
    """basis * w * mask and its derivative by r, w the cosine cutoff."""
    weight, d_weight = cosine_cutoff_and_slope(r, r_max)
    weight, d_weight = (w[..., None] * pair_mask[..., None] for w in (weight, d_weight))
    return basis * weight, d_basis * weight + basis * d_weight


def _contract(basis, onehot, neighbour_onehot, coeffs):
    """R[n, k, s] = sum_q c[Z_n, Z_j, s, q] basis[n, k, q]: pick Z_j, contract q, pick Z_n."""
    per_j = jnp.einsum("nkb,nkq,absq->nkas", neighbour_onehot, basis, coeffs)
    return jnp.einsum("na,nkas->nks", onehot, per_j)


def _radial(r, coeffs, onehot, neighbour_onehot, pair_mask, config: GMNNConfig):
    """The radial channels (N, K, S) as a plain function (see :func:`radial_channels`)."""
    return _contract(_weighted_basis(r, pair_mask, config), onehot, neighbour_onehot, coeffs)


def radial_and_slope(r, onehot, neighbour_onehot, coeffs, pair_mask, config: GMNNConfig):
    """The radial channels (N, K, S), their derivative d R / d r (N, K, S) and the weighted
    basis (N, K, Q) they contract, from one evaluation of the basis and its slope."""
    basis, slope = weighted_basis_and_slope(r, pair_mask, config)
    contract = functools.partial(
        _contract, onehot=onehot, neighbour_onehot=neighbour_onehot, coeffs=coeffs
    )
    return contract(basis), contract(slope), basis


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
        radial, slope, basis = radial_and_slope(
            r, onehot, neighbour_onehot, coeffs, pair_mask, config
        )
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
        return features_and_moments(radial, unit, cfg.n_contr)[0]
