"""Errors of predictions against reference labels, per quantity, defined once for training
(losses and epoch metrics, on padded batches) and evaluation (metrics and UQ, per structure).

Energies count per atom where an error is read; forces and stress count per component. Padded
atoms, padded structures and structures without the label never count.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from apax_core.data.batch import Batch
from apax_core.data.structure import Structure
from apax_core.labels import Label


def per_atom(quantity: Label, value, n_atoms):
    """``value`` of an energy (or of its spread) divided by ``n_atoms``; forces and stress as
    they are. Works on numpy and jax arrays alike."""
    return value / n_atoms if quantity == "energy" else value


def batch_reference(quantity: Label, batch: Batch):
    """(label, mask of its real entries, atom count broadcast to the label) of a padded batch:
    energy (B,), forces (B, N, 3), stress (B, 3, 3); the atom count is fp64 and at least 1."""
    n = jnp.maximum(batch.n_atoms, 1).astype(jnp.float64)
    if quantity == "energy":
        return batch.energy, batch.structure_mask, n
    ref = getattr(batch, quantity)
    real = (
        batch.atom_mask[:, :, None] if quantity == "forces" else batch.structure_mask[:, None, None]
    )
    return ref, jnp.broadcast_to(real, ref.shape), n[:, None, None]


def _labelled(preds: Sequence[dict], structures: Sequence[Structure], quantity: Label):
    """The (prediction, structure) pairs that have ``quantity`` on both sides."""
    pairs = zip(preds, structures, strict=True)
    return [(p, s) for p, s in pairs if getattr(s, quantity) is not None and quantity in p]


def _flat(values: list) -> np.ndarray:
    return np.concatenate([np.ravel(v) for v in values]) if values else np.zeros(0)


def structure_errors(
    preds: Sequence[dict], structures: Sequence[Structure], quantity: Label
) -> np.ndarray:
    """Prediction minus label of ``quantity``, flattened over every structure that carries it
    (energies per atom); empty when none does."""
    pairs = _labelled(preds, structures, quantity)
    return _flat(
        [per_atom(quantity, p[quantity] - getattr(s, quantity), s.n_atoms) for p, s in pairs]
    )


def errors_and_sigmas(
    preds: Sequence[dict], structures: Sequence[Structure], quantity: Label
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`structure_errors` and, entry for entry, the predicted standard deviations
    ``<quantity>_uncertainty`` (energies per atom)."""
    pairs = _labelled(preds, structures, quantity)
    sigmas = [per_atom(quantity, p[f"{quantity}_uncertainty"], s.n_atoms) for p, s in pairs]
    return structure_errors(preds, structures, quantity), _flat(sigmas)
