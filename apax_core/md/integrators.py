"""jax-md integrators behind one interface (:class:`~apax_core.md.kinetics.Integrator`), in ASE
units (eV, A, amu; time unit ase.units.fs); the constant-pressure ones are built by
:mod:`apax_core.md.barostats`.

Every option of the config reaches jax-md: the Nose-Hoover chain gets chain_length,
chain_steps, sy_steps and tau (tau * dt), Langevin its friction in 1/fs. Degrees of freedom:
see :mod:`apax_core.md.kinetics` (chains are coupled to 3N - 3).
"""

from __future__ import annotations

from collections.abc import Callable

from ase import units

from apax_core.config.md import (
    NVE,
    Dynamics,
    NPTMartynaTobiasKlein,
    NPTStochasticCellRescaling,
    NVTLangevin,
    NVTNoseHoover,
)
from apax_core.md.barostats import mtk, scr
from apax_core.md.jax_md_parts import dataclasses, simulate
from apax_core.md.kinetics import Integrator, kinetic_dof, without_drift


def kT_of(temperature_K):
    """Thermal energy in eV of a temperature in K (any shape)."""
    return units.kB * temperature_K


def integrator(
    dynamics: Dynamics, energy_fn: Callable, shift_fn: Callable, dt_fs: float, kT0: float
) -> Integrator:
    """jax-md init/step functions for ``dynamics`` with time step ``dt_fs`` (fs); ``kT0`` (eV)
    sets the initial chain (and MTK box) masses.

    ``energy_fn(R, **kwargs)`` receives the step's keyword arguments (neighbour list,
    parameters and ``kT``, which it ignores; ``box`` under constant pressure).
    """
    if isinstance(dynamics, NPTStochasticCellRescaling):
        return scr(energy_fn, shift_fn, dt_fs, dynamics)
    if isinstance(dynamics, NPTMartynaTobiasKlein):
        return mtk(energy_fn, shift_fn, dt_fs, kT0, dynamics)
    dt = dt_fs * units.fs
    if isinstance(dynamics, NVE):
        init, step = simulate.nve(energy_fn, shift_fn, dt)

        def init_nve(key, R, kT, mass, momenta=None, **kw):
            return init(key, R, kT, mass=mass, momenta=momenta, **kw)

        return Integrator(init_nve, _constant_volume(step), True)
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

    return Integrator(init_thermostat, _constant_volume(step), conserves)


def _constant_volume(step: Callable) -> Callable:
    """jax-md's ``step(state, kT=kT, **kw)`` as ``step(state, kT, pressure=None, **kw)``."""

    def constant_volume(state, kT, pressure=None, **kw):
        return step(state, kT=kT, **kw)

    return constant_volume
