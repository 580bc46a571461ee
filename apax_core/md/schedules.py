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


def _constant(value: float) -> Callable:
    """time (fs) -> ``value``, () float64."""
    return lambda t: jnp.full_like(jnp.asarray(t, jnp.float64), value)


def _piecewise(times: list[float], values: list[float]) -> Callable:
    """time (fs) -> linear interpolation of ``values`` at ``times``, constant outside them."""
    t_points, v_points = jnp.asarray(times, jnp.float64), jnp.asarray(values, jnp.float64)
    return lambda t: jnp.interp(jnp.asarray(t, jnp.float64), t_points, v_points)


def temperature_fn(schedule: TemperatureSchedule) -> TemperatureFn:
    """time (fs) -> target temperature (K), both () float64."""
    if isinstance(schedule, ConstantTemperature):
        return _constant(schedule.T)
    if isinstance(schedule, PiecewiseTemperature):
        return _piecewise(schedule.times, schedule.temperatures)
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
        return _constant(schedule.P)
    if isinstance(schedule, PiecewisePressure):
        return _piecewise(schedule.times, schedule.pressures)
    raise TypeError(f"unknown pressure schedule {schedule!r}")
