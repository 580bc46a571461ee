"""Loss terms. Padded atoms, pairs and structures never contribute: every mean is over real
entries only.

Deterministic terms (mse, huber) compare a prediction with the label; for a full ensemble every
member is compared and the penalties are averaged over members (independent members).
Probabilistic terms (nll, crps) score the ensemble mean mu and standard deviation sigma.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy.special import erf

from apax_core.config import LossTerm
from apax_core.data.batch import Batch
from apax_core.residuals import batch_reference

SIGMA_MIN = 1e-6
"""Standard deviations are clipped here so a collapsed ensemble cannot divide by zero."""


def mse(err, sigma, term: LossTerm):
    return err**2


def huber(err, sigma, term: LossTerm):
    """Quadratic below ``huber_delta``, linear above (0.5 x^2 | delta (|x| - delta / 2))."""
    d, a = term.huber_delta, jnp.abs(err)
    return jnp.where(a <= d, 0.5 * err**2, d * (a - 0.5 * d))


def nll(err, sigma, term: LossTerm):
    """Gaussian negative log-likelihood (eq. 7), with its constant: 0.5 log(2 pi s^2) + e^2/2s^2."""
    var = jnp.maximum(sigma, SIGMA_MIN) ** 2
    return 0.5 * (jnp.log(2.0 * jnp.pi * var) + err**2 / var)


def crps(err, sigma, term: LossTerm):
    """Continuous ranked probability score of a Gaussian (eq. 8):
    s [z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)], z = err / s."""
    sigma = jnp.maximum(sigma, SIGMA_MIN)
    z = err / sigma
    cdf = 0.5 * (1.0 + erf(z / jnp.sqrt(2.0)))
    pdf = jnp.exp(-0.5 * z**2) / jnp.sqrt(2.0 * jnp.pi)
    return sigma * (z * (2.0 * cdf - 1.0) + 2.0 * pdf - 1.0 / jnp.sqrt(jnp.pi))


PENALTIES = {"mse": mse, "huber": huber, "nll": nll, "crps": crps}


def masked_mean(values, mask):
    return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def term_loss(term: LossTerm, pred: dict, batch: Batch, *, per_member: bool = False):
    """Mean penalty of one term over the real entries of the batch (unweighted).

    ``per_member``: deterministic terms are applied to ``<quantity>_ensemble`` (members on the
    last axis) and averaged over members, as for a full ensemble.
    """
    q = term.quantity
    ref, mask, n = batch_reference(q, batch)
    norm = n**term.atoms_exponent
    penalty = PENALTIES[term.kind]
    if term.probabilistic:
        err = (pred[q] - ref) / norm
        return masked_mean(penalty(err, pred[f"{q}_uncertainty"] / norm, term), mask)
    if per_member:
        err = (pred[f"{q}_ensemble"] - ref[..., None]) / norm[..., None]
        per = penalty(err, None, term)
        return masked_mean(jnp.mean(per, axis=-1), mask)
    return masked_mean(penalty((pred[q] - ref) / norm, None, term), mask)


def total_loss(terms: list[LossTerm], pred: dict, batch: Batch, *, per_member: bool = False):
    """Weighted sum of the terms."""
    return sum(t.weight * term_loss(t, pred, batch, per_member=per_member) for t in terms)
