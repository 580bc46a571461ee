"""jax-md integrators behind one interface, in ASE units (eV, A, amu; time unit ase.units.fs).

Every option of the config reaches jax-md: the Nose-Hoover chain gets chain_length,
chain_steps, sy_steps and tau (tau * dt), Langevin its friction in 1/fs.

Degrees of freedom: Maxwell-Boltzmann momenta start with the centre-of-mass motion removed, and
NVE and Nose-Hoover dynamics conserve the total momentum, so the kinetic energy has 3N - 3
degrees of freedom. jax-md's chain counts 3N, which runs a small system 3N / (3N - 3) too hot
(8 atoms: 14 %); the chain here is coupled to 3N - 3, and loaded momenta lose their drift
first. Langevin noise thermalises all 3N.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
from ase import units
from jax_md import dataclasses, simulate

from apax_core.config.md import NVE, Dynamics, NVTLangevin, NVTNoseHoover


class Integrator(NamedTuple):
    """``init(key, R, kT, mass, momenta, **kw)`` -> state; ``step(state, kT, **kw)`` -> state.
    R and momenta (N, 3), mass (N,), kT () in eV."""

    init: Callable
    step: Callable
    conserves_momentum: bool
    """The total momentum is constant (NVE, Nose-Hoover): 3N - 3 kinetic degrees of freedom."""


def kinetic_dof(n_atoms: int, conserves_momentum: bool) -> int:
    """Kinetic degrees of freedom of ``n_atoms`` atoms in 3D."""
    return 3 * n_atoms - 3 if conserves_momentum and n_atoms > 1 else 3 * n_atoms


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


def without_drift(momenta, mass):
    """``momenta`` (N, 3) less the centre-of-mass motion (``mass`` (N,) or (N, 1)). A
    Nose-Hoover chain coupled to 3N - 3 degrees of freedom would otherwise heat or cool a
    loaded drift as if it were thermal."""
    mass = jnp.reshape(mass, (-1, 1))
    return momenta - mass * jnp.sum(momenta, axis=0) / jnp.sum(mass)


def kT_of(temperature_K):
    """Thermal energy in eV of a temperature in K (any shape)."""
    return units.kB * temperature_K


def integrator(
    dynamics: Dynamics, energy_fn: Callable, shift_fn: Callable, dt_fs: float, kT0: float
) -> Integrator:
    """jax-md init/step functions for ``dynamics`` with time step ``dt_fs`` (fs).

    ``energy_fn(R, **kwargs)`` receives the step's keyword arguments (neighbour list,
    parameters and ``kT``, which it ignores).
    """
    dt = dt_fs * units.fs
    if isinstance(dynamics, NVE):
        init, step = simulate.nve(energy_fn, shift_fn, dt)

        def init_nve(key, R, kT, mass, momenta=None, **kw):
            return init(key, R, kT, mass=mass, momenta=momenta, **kw)

        return Integrator(init_nve, lambda state, kT, **kw: step(state, kT=kT, **kw), True)
    if isinstance(dynamics, NVTNoseHoover):
        c = dynamics.thermostat
        init, step = simulate.nvt_nose_hoover(
            energy_fn,
            shift_fn,
            dt,
            kT0,
            chain_length=c.chain_length,
            chain_steps=c.chain_steps,
            sy_steps=c.sy_steps,
            tau=c.tau * dt,
        )
    elif isinstance(dynamics, NVTLangevin):
        init, step = simulate.nvt_langevin(
            energy_fn, shift_fn, dt, kT0, gamma=dynamics.friction / units.fs
        )
    else:
        raise TypeError(f"unknown dynamics {dynamics!r}")

    conserves = isinstance(dynamics, NVTNoseHoover)

    def init_thermostat(key, R, kT, mass, momenta=None, **kw):
        if conserves and momenta is not None:
            momenta = without_drift(momenta, mass)
        state = init(key, R, mass=mass, momenta=momenta, kT=kT, **kw)
        if conserves:  # the chain's masses follow from its dof at every step (update_mass)
            dof = kinetic_dof(R.shape[0], True)
            state = state.set(chain=dataclasses.replace(state.chain, degrees_of_freedom=dof))
        return state

    return Integrator(init_thermostat, lambda state, kT, **kw: step(state, kT=kT, **kw), conserves)
