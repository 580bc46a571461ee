"""Uncertainty-driven dynamics (Kulichenko et al. 2023; paper eq. 9) as an energy transform.

    E_b(sigma_E^2) = A [exp(-sigma_E^2 / (M N B^2)) - 1]

with sigma_E the ensemble standard deviation of the total energy (ddof = ENSEMBLE_DDOF, the
same convention as every reported uncertainty), M ensemble members, N atoms, A = ``height``
(eV) the depth of the bias and B = ``width`` (eV) its uncertainty scale. E_b is 0 where the
ensemble agrees and tends to -A where it disagrees, so the biased dynamics drift towards
uncertain configurations. The paper quotes A in eV/atom for its alanine tetrapeptide run; the
formula as printed (and implemented) uses A as the total bias depth in eV.

The bias is added to every member's energy (spread over the atoms), so the ensemble spread and
hence every uncertainty is unchanged, while energy, forces and stress include the bias and its
exact gradient. It is differentiated through the variance (not the standard deviation), which
is smooth where all members agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp

from apax_core.errors import InputError
from apax_core.transforms.base import Transform
from apax_core.transforms.ensemble import ENSEMBLE_DDOF


def udd_energy(member_energies, n_atoms, height: float, width: float):
    """E_b of eq. 9 from the (M,) member total energies of one structure of ``n_atoms`` atoms;
    a scalar ()."""
    m = member_energies.shape[-1]
    variance = jnp.var(member_energies, axis=-1, ddof=ENSEMBLE_DDOF)
    return height * (jnp.exp(-variance / (m * n_atoms * width**2)) - 1.0)


@dataclass(frozen=True)
class UDD(Transform):
    """Adds the eq. 9 bias to the model energy; needs an ensemble (M >= 2). The biased apply
    keeps the shapes: atomic energies (N, M), E_b / N added to every real atom and member."""

    height: float = 1.0
    width: float = 1.2

    def __post_init__(self) -> None:
        if not (self.height > 0 and self.width > 0):
            raise ValueError(f"UDD height and width must be positive, got {self}")

    def check(self, model) -> None:
        if model.config.n_members < 2:
            raise InputError("UDD needs an ensemble model (shallow or full), got a single model")

    def wrap_apply(self, apply):
        def biased(params, dr_vec, Z, *rest):
            atomic = apply(params, dr_vec, Z, *rest).astype(jnp.float64)
            atom_mask = Z > 0  # padded atoms have Z == 0 (Batch contract)
            members = jnp.sum(atomic, axis=0)
            n_atoms = jnp.maximum(jnp.sum(atom_mask), 1)
            bias = udd_energy(members, n_atoms, self.height, self.width)
            return atomic + jnp.where(atom_mask, bias / n_atoms, 0.0)[:, None]

        return biased
