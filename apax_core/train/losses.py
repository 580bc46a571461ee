"""Loss terms. Padded atoms, pairs and structures never contribute: every mean is over real
entries only."""

from __future__ import annotations

import jax.numpy as jnp

from apax_core.config import LossTerm
from apax_core.data.batch import Batch


def mse(x, term: LossTerm):
    return x**2


def huber(x, term: LossTerm):
    """Quadratic below ``huber_delta``, linear above (0.5 x^2 | delta (|x| - delta / 2))."""
    d, a = term.huber_delta, jnp.abs(x)
    return jnp.where(a <= d, 0.5 * x**2, d * (a - 0.5 * d))


PENALTIES = {"mse": mse, "huber": huber}


def errors_and_mask(quantity: str, pred: dict, batch: Batch, atoms_exponent: float):
    """Prediction errors of one quantity, divided by n_atoms**p, with the mask of real entries."""
    n = jnp.maximum(batch.n_atoms, 1).astype(jnp.float64) ** atoms_exponent
    real = batch.n_atoms > 0
    if quantity == "energy":
        return (pred["energy"] - batch.energy) / n, real
    if quantity == "forces":
        err = (pred["forces"] - batch.forces) / n[:, None, None]
        return err, jnp.broadcast_to(batch.atom_mask[:, :, None], err.shape)
    err = (pred["stress"] - batch.stress) / n[:, None, None]
    return err, jnp.broadcast_to(real[:, None, None], err.shape)


def masked_mean(values, mask):
    return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def term_loss(term: LossTerm, pred: dict, batch: Batch):
    """Mean penalty of one term over the real entries of the batch (unweighted)."""
    err, mask = errors_and_mask(term.quantity, pred, batch, term.atoms_exponent)
    return masked_mean(PENALTIES[term.kind](err, term), mask)


def total_loss(terms: list[LossTerm], pred: dict, batch: Batch):
    """Weighted sum of the terms."""
    return sum(t.weight * term_loss(t, pred, batch) for t in terms)
