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

import jax.numpy as jnp

from apax_core.md.transforms import Transform
from apax_core.model_dir import Model
from apax_core.transforms import ENSEMBLE_DDOF


def udd_energy(member_energies, n_atoms, height: float, width: float):
    """E_b of eq. 9 from the (M,) member total energies of one structure of ``n_atoms`` atoms."""
    m = member_energies.shape[-1]
    variance = jnp.var(member_energies, axis=-1, ddof=ENSEMBLE_DDOF)
    return height * (jnp.exp(-variance / (m * n_atoms * width**2)) - 1.0)


class UDD(Transform):
    """Adds the eq. 9 bias to the model energy; needs an ensemble (M >= 2)."""

    def __init__(self, height: float = 1.0, width: float = 1.2) -> None:
        if not (height > 0 and width > 0):
            raise ValueError(f"UDD height and width must be positive, got {height}, {width}")
        self.height, self.width = float(height), float(width)

    def __repr__(self) -> str:
        return f"UDD(height={self.height}, width={self.width})"

    def check(self, model: Model) -> None:
        if model.config.n_members < 2:
            raise ValueError("UDD needs an ensemble model (shallow or full), got a single model")

    def energy(self, apply):
        def biased(params, dr_vec, Z, *rest):
            atomic = apply(params, dr_vec, Z, *rest).astype(jnp.float64)
            atom_mask = Z > 0  # padded atoms have Z == 0 (Batch contract)
            members = jnp.sum(atomic, axis=0)
            n_atoms = jnp.sum(atom_mask)
            bias = udd_energy(members, jnp.maximum(n_atoms, 1), self.height, self.width)
            per_atom = jnp.where(atom_mask, bias / jnp.maximum(n_atoms, 1), 0.0)
            return atomic + per_atom[:, None]

        return biased
