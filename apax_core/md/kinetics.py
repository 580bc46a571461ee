"""The integrator interface and the momentum bookkeeping that the constant-volume
(:mod:`apax_core.md.integrators`) and constant-pressure (:mod:`apax_core.md.barostats`)
integrators share. ASE units: eV, A, amu.

Degrees of freedom: Maxwell-Boltzmann momenta start with the centre-of-mass motion removed, and
NVE and Nose-Hoover dynamics conserve the total momentum, so the kinetic energy has 3N - 3
degrees of freedom. jax-md's chain counts 3N, which runs a small system 3N / (3N - 3) too hot
(8 atoms: 14 %); our chains are coupled to 3N - 3, and loaded momenta lose their drift first.
Langevin noise thermalises all 3N.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
from ase import units


class Integrator(NamedTuple):
    """``init(key, R, kT, mass, momenta, **kw)`` -> state; ``step(state, kT, pressure=None,
    **kw)`` -> state. R and momenta (N, 3), mass (N,), kT () in eV; ``pressure`` () the target
    in eV/A^3 of constant-pressure integrators (which also take ``box=`` (3, 3) in ``init``),
    ignored by the others."""

    init: Callable
    step: Callable
    conserves_momentum: bool
    """The total momentum is constant (NVE, Nose-Hoover): 3N - 3 kinetic degrees of freedom."""


def kinetic_dof(n_atoms: int, conserves_momentum: bool) -> int:
    """Kinetic degrees of freedom of ``n_atoms`` atoms in 3D."""
    return 3 * n_atoms - 3 if conserves_momentum and n_atoms > 1 else 3 * n_atoms


def without_drift(momenta, mass):
    """``momenta`` (N, 3) less the centre-of-mass motion (``mass`` (N,) or (N, 1)). A
    Nose-Hoover chain coupled to 3N - 3 degrees of freedom would otherwise heat or cool a
    loaded drift as if it were thermal."""
    mass = jnp.reshape(mass, (-1, 1))
    return momenta - mass * jnp.sum(momenta, axis=0) / jnp.sum(mass)


def kinetic_temperature(momentum, mass, conserves_momentum: bool):
    """2 KE / (dof k_B) in K, with the centre-of-mass kinetic energy excluded where the total
    momentum is conserved (it is no thermal motion there). ``momentum`` (N, 3); ``mass`` (N,)
    or (N, 1); returns ()."""
    mass = jnp.reshape(mass, (-1, 1))
    twice_ke = jnp.sum(momentum**2 / mass)
    n = momentum.shape[0]
    if conserves_momentum and n > 1:
        total = jnp.sum(momentum, axis=0)
        twice_ke = twice_ke - jnp.sum(total**2) / jnp.sum(mass)
    return twice_ke / (kinetic_dof(n, conserves_momentum) * units.kB)
