"""An MD spec as LAMMPS commands: the LAMMPS engine of MD walkers (:mod:`apax_core.lammps_md`).

Pure translation (no LAMMPS, no JAX), so a graph checks an MD node's ``engine`` and spec when
it is built. Units metal (ps, bar): the spec's fs become ps here. Every setting LAMMPS cannot
honour is an InputError naming the field, before LAMMPS starts:

- dynamics: ``nve`` -> fix nve; ``langevin`` -> fix nve + fix langevin (damp = 1 / friction);
  ``nvt`` -> fix nvt (Tdamp = tau dt, tchain = chain_length, tloop = chain_steps; LAMMPS's own
  Suzuki-Yoshida weights); ``npt_mtk`` -> fix npt iso; ``npt_scr`` -> fix npt (Nose-Hoover
  thermostat) or fix nph + fix langevin (Langevin thermostat), iso / aniso / tri for the
  cell's isotropic / orthorhombic / full (Pdamp = tau_p; compressibility is not used).
  Constant pressure only.
- temperature: constant for every dynamics; piecewise and oscillating as an equal-style
  variable of the step, which only fix langevin accepts (fix nvt / npt ramp linearly).
- checks: each a ``fix halt`` every ``sampling_rate`` steps with ``error soft`` on the
  bridge's vector (``f_apax[1]`` energy sigma, ``[2]`` largest per-atom force-sigma norm,
  ``[3]`` largest component), the kinetic temperature or the volume ratio.
- udd: not supported (InputError).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from apax_core.config.md import (
    NVE,
    ConstantPressure,
    ConstantTemperature,
    EnergyUncertaintyCheck,
    ForcesUncertaintyCheck,
    MDConfig,
    NPTMartynaTobiasKlein,
    NPTStochasticCellRescaling,
    NVTLangevin,
    NVTNoseHoover,
    OscillatingTemperature,
    PiecewiseTemperature,
    StopCheck,
    TemperatureCheck,
    VolumeCheck,
)
from apax_core.errors import InputError
from apax_core.md.checks import threshold

ENGINES = ("jax", "lammps", "ipi")
"""Engines of the MD node: our JAX engine, LAMMPS through the bridge, i-PI (refused)."""
FIX = "apax"
"""The bridge's fix ID (``f_apax[k]``)."""
TEMPERATURE = "apax_temp"
"""The compute of the kinetic temperature (3N - 3 degrees of freedom, 3N under Langevin)."""
CELL_MODE = {"isotropic": "iso", "orthorhombic": "aniso", "full": "tri"}


def check_engine(engine: str, config: MDConfig) -> None:
    """InputError unless ``engine`` is one of :data:`ENGINES` that can run ``config``."""
    if engine not in ENGINES:
        raise InputError(f"engine: one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "ipi":
        raise InputError(
            "engine: ipi is not supported as an MD node engine; use apax-core ipi-client"
        )
    if engine == "lammps":
        lammps_commands(config, seed=1, volume0=1.0)


def check_lammps_start(atoms: Atoms, name: str) -> None:
    """InputError naming ``name`` unless LAMMPS can build ``atoms`` (fully periodic)."""
    if not np.asarray(atoms.pbc, bool).all():
        raise InputError(f"{name}: engine lammps needs a cell periodic along a, b and c")


def lammps_commands(config: MDConfig, seed: int, volume0: float) -> list[str]:
    """The commands that set up ``config``'s run once the system and the bridge exist:
    timestep, initial velocities (unless loaded), dynamics fixes and stop checks. ``seed``
    seeds the velocities and the Langevin noise; ``volume0`` (A^3) is the volume check's V0."""
    if config.udd is not None:
        raise InputError("udd: uncertainty-driven dynamics is not supported by engine lammps")
    target, variables = temperature_target(config)
    start = initial_temperature(config)
    velocity = f"velocity all create {start!r} {lammps_seed(seed)} dist gaussian mom yes rot no"
    return [
        f"timestep {config.dt / 1000.0!r}",
        *([] if config.load_momenta else [velocity]),
        *variables,
        *dynamics_commands(config.dynamics, target, config.dt, lammps_seed(seed + 1)),
        *temperature_compute(config),
        *halt_commands(config.checks, config.sampling_rate, volume0),
    ]


def lammps_seed(seed: int) -> int:
    """A positive LAMMPS random seed (below 900 million) of any integer ``seed``."""
    return seed % 899_999_999 + 1


def langevin_thermostat(config: MDConfig) -> NVTLangevin | None:
    """The Langevin thermostat of ``config``'s dynamics, if it has one."""
    dynamics = config.dynamics
    if isinstance(dynamics, NPTStochasticCellRescaling):
        dynamics = dynamics.thermostat
    return dynamics if isinstance(dynamics, NVTLangevin) else None


def initial_temperature(config: MDConfig) -> float:
    """The schedule's temperature at t = 0 in K (the initial velocities')."""
    schedule = config.temperature
    if isinstance(schedule, ConstantTemperature):
        return schedule.T
    if isinstance(schedule, OscillatingTemperature):
        return schedule.T_low
    return schedule.temperatures[0]


def temperature_target(config: MDConfig) -> tuple[str, list[str]]:
    """(the thermostats' ``Tstart Tstop`` in K: constant, or ``v_apax_T`` and an ignored
    Tstop, commands that define ``apax_T``). A schedule that changes needs a Langevin
    thermostat (InputError naming temperature.kind)."""
    schedule = config.temperature
    if isinstance(schedule, ConstantTemperature):
        return f"{schedule.T!r} {schedule.T!r}", []
    if langevin_thermostat(config) is None and not isinstance(config.dynamics, NVE):
        raise InputError(
            f"temperature.kind: {schedule.kind} needs a langevin thermostat with engine lammps "
            "(fix nvt and fix npt take no variable temperature); use constant"
        )
    formula = schedule_expression(schedule, config.dt)
    return f"v_apax_T {initial_temperature(config)!r}", [f"variable apax_T equal {formula}"]


def schedule_expression(schedule, dt_fs: float) -> str:
    """A LAMMPS equal-style formula of the target temperature (K) at time ``step * dt_fs``."""
    t = f"(step*{dt_fs!r})"
    if isinstance(schedule, OscillatingTemperature):
        lo, span = schedule.T_low, schedule.T_high - schedule.T_low
        return f"{lo!r}+{span!r}*0.5*(1-cos(2*PI*{t}/{schedule.period!r}))"
    if not isinstance(schedule, PiecewiseTemperature):
        raise InputError(f"temperature.kind: {schedule.kind} is not supported by engine lammps")
    times, values = schedule.times, schedule.temperatures
    terms = [repr(values[0])]
    for (t0, t1), (v0, v1) in zip(
        zip(times, times[1:], strict=False), zip(values, values[1:], strict=False), strict=True
    ):
        clamped = f"ternary({t}<{t0!r},{t0!r},ternary({t}>{t1!r},{t1!r},{t}))"
        terms.append(f"{(v1 - v0) / (t1 - t0)!r}*({clamped}-{t0!r})")
    return "+".join(terms)


def dynamics_commands(dynamics, target: str, dt_fs: float, seed: int) -> list[str]:
    """The fixes of ``dynamics`` with thermostat target ``target`` (``Tstart Tstop`` in K),
    time step ``dt_fs``."""
    if isinstance(dynamics, NVE):
        return ["fix apax_nve all nve"]
    if isinstance(dynamics, NVTLangevin):
        return ["fix apax_nve all nve", langevin_fix(dynamics, target, seed)]
    if isinstance(dynamics, NVTNoseHoover):
        return [f"fix apax_nvt all nvt {chain_args(dynamics.thermostat, target, dt_fs)}"]
    if isinstance(dynamics, NPTMartynaTobiasKlein | NPTStochasticCellRescaling):
        return npt_commands(dynamics, target, dt_fs, seed)
    raise InputError(f"dynamics.kind: {dynamics.kind} is not supported by engine lammps")


def langevin_fix(thermostat: NVTLangevin, target: str, seed: int) -> str:
    """fix langevin with damp = 1 / friction in ps; all 3N degrees of freedom thermalised."""
    damp_ps = 1.0 / thermostat.friction / 1000.0
    return f"fix apax_langevin all langevin {target} {damp_ps!r} {seed} zero no"


def chain_args(chain, target: str, dt_fs: float) -> str:
    """fix nvt / npt's thermostat arguments of a Nose-Hoover chain (Tdamp = tau dt in ps)."""
    tdamp_ps = chain.tau * dt_fs / 1000.0
    loops = f"tchain {chain.chain_length} tloop {chain.chain_steps}"
    return f"temp {target} {tdamp_ps!r} {loops}"


def npt_commands(dynamics, target: str, dt_fs: float, seed: int) -> list[str]:
    """fix npt (Nose-Hoover thermostat) or fix nph + fix langevin at constant pressure."""
    if not isinstance(dynamics.pressure, ConstantPressure):
        raise InputError(
            f"dynamics.pressure.kind: {dynamics.pressure.kind} is not supported by engine "
            "lammps (fix npt ramps linearly only); use constant"
        )
    mode = CELL_MODE[getattr(dynamics, "cell", "isotropic")]
    pressure = dynamics.pressure.P
    barostat = f"{mode} {pressure!r} {pressure!r} {dynamics.tau_p / 1000.0!r}"
    thermostat = dynamics.thermostat
    if isinstance(thermostat, NVTLangevin):
        return [f"fix apax_nph all nph {barostat}", langevin_fix(thermostat, target, seed)]
    if isinstance(thermostat, NVTNoseHoover):  # npt_scr's; npt_mtk has the chain itself
        thermostat = thermostat.thermostat
    chain = f"pchain {thermostat.chain_length} ploop {thermostat.chain_steps}"
    return [f"fix apax_npt all npt {chain_args(thermostat, target, dt_fs)} {barostat} {chain}"]


def temperature_compute(config: MDConfig) -> list[str]:
    """The kinetic temperature as our engine counts it: 3N - 3 degrees of freedom where the
    momentum is conserved, 3N under a Langevin thermostat."""
    commands = [f"compute {TEMPERATURE} all temp"]
    if langevin_thermostat(config) is not None:
        commands.append(f"compute_modify {TEMPERATURE} extra/dof 0")
    return commands


def check_variable(check: StopCheck, volume0: float) -> str:
    """The LAMMPS formula of the quantity ``check`` compares, in its unit (as
    :func:`apax_core.md.checks.check_value` defines it)."""
    if isinstance(check, EnergyUncertaintyCheck):
        return f"f_{FIX}[1]/atoms" if check.per_atom else f"f_{FIX}[1]"
    if isinstance(check, ForcesUncertaintyCheck):
        return f"f_{FIX}[2]" if check.reduce == "norm" else f"f_{FIX}[3]"
    if isinstance(check, TemperatureCheck):
        return f"c_{TEMPERATURE}"
    if isinstance(check, VolumeCheck):
        return f"ternary(vol>{volume0!r},vol/{volume0!r},{volume0!r}/vol)"
    raise InputError(f"checks: {check.kind} is not supported by engine lammps")


def halt_commands(checks: list[StopCheck], every: int, volume0: float) -> list[str]:
    """One ``fix halt`` (error soft) per check, tested every ``every`` steps."""
    commands = []
    for k, check in enumerate(checks):
        commands += [
            f"variable apax_check{k} equal {check_variable(check, volume0)}",
            f"fix apax_halt{k} all halt {every} v_apax_check{k} > {threshold(check)!r} "
            "error soft message no",
        ]
    return commands
