"""jax-md integrators behind one interface, in ASE units (eV, A, amu; time unit ase.units.fs).

Every option of the config reaches jax-md: the Nose-Hoover chain gets chain_length,
chain_steps, sy_steps and tau (tau * dt), Langevin its friction in 1/fs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from ase import units
from jax_md import simulate

from apax_core.config.md import NVE, Dynamics, NVTLangevin, NVTNoseHoover


class Integrator(NamedTuple):
    """``init(key, R, kT, mass, momenta, **kw)`` -> state; ``step(state, kT, **kw)`` -> state."""

    init: Callable
    step: Callable


def kT_of(temperature_K):
    """Thermal energy in eV."""
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

        return Integrator(init_nve, lambda state, kT, **kw: step(state, kT=kT, **kw))
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

    def init_thermostat(key, R, kT, mass, momenta=None, **kw):
        return init(key, R, mass=mass, momenta=momenta, kT=kT, **kw)

    return Integrator(init_thermostat, lambda state, kT, **kw: step(state, kT=kT, **kw))
