"""Temperature and pressure schedules as pure functions of the simulation time, traceable inside
jit."""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

from apax_core.config.md import (
    ConstantPressure,
    ConstantTemperature,
    OscillatingTemperature,
    PiecewisePressure,
    PiecewiseTemperature,
    PressureSchedule,
    TemperatureSchedule,
)

TemperatureFn = Callable[[jnp.ndarray], jnp.ndarray]
PressureFn = Callable[[jnp.ndarray], jnp.ndarray]


def temperature_fn(schedule: TemperatureSchedule) -> TemperatureFn:
    """time (fs) -> target temperature (K), both () float64."""
    if isinstance(schedule, ConstantTemperature):
        return lambda t: jnp.full_like(jnp.asarray(t, jnp.float64), schedule.T)
    if isinstance(schedule, PiecewiseTemperature):
        times = jnp.asarray(schedule.times, jnp.float64)
        temps = jnp.asarray(schedule.temperatures, jnp.float64)
        return lambda t: jnp.interp(jnp.asarray(t, jnp.float64), times, temps)
    if isinstance(schedule, OscillatingTemperature):
        lo, hi, period = schedule.T_low, schedule.T_high, schedule.period

        def oscillating(t):
            phase = 2.0 * jnp.pi * jnp.asarray(t, jnp.float64) / period
            return lo + (hi - lo) * 0.5 * (1.0 - jnp.cos(phase))

        return oscillating
    raise TypeError(f"unknown temperature schedule {schedule!r}")


def pressure_fn(schedule: PressureSchedule) -> PressureFn:
    """time (fs) -> target pressure (bar), both () float64."""
    if isinstance(schedule, ConstantPressure):
        return lambda t: jnp.full_like(jnp.asarray(t, jnp.float64), schedule.P)
    if isinstance(schedule, PiecewisePressure):
        times = jnp.asarray(schedule.times, jnp.float64)
        pressures = jnp.asarray(schedule.pressures, jnp.float64)
        return lambda t: jnp.interp(jnp.asarray(t, jnp.float64), times, pressures)
    raise TypeError(f"unknown pressure schedule {schedule!r}")
