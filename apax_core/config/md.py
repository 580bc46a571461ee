"""Molecular dynamics configuration: integrator, temperature and pressure schedules, stop checks,
UDD, output.

Units: time in fs, temperature in K, energy in eV, length in Angstrom, pressure in bar,
compressibility in 1/bar (the engine converts to eV/A^3 inside). Two relaxation times differ:
a Nose-Hoover chain's ``tau`` counts time steps, a barostat's ``tau_p`` is in fs. Every field's
docstring states its unit in its first sentence, which ``apax-core template md --full`` prints
as the field's comment (:mod:`apax_core.config.template`). In the spirit of the
paper's listing S2 (``dt``, ``duration``, ``n_inner``, ``sampling_rate``, skin, extra capacity,
Nose-Hoover chain), with every pluggable choice a discriminated union keyed by ``kind``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from apax_core.config.common import Strict
from apax_core.errors import InputError

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------ temperature schedules


class ConstantTemperature(Strict):
    """The same target temperature for the whole run."""

    kind: Literal["constant"] = "constant"
    T: PositiveFloat = 300.0
    """Temperature in K."""


class PiecewiseTemperature(Strict):
    """Linear interpolation between (time, temperature) points; constant outside them."""

    kind: Literal["piecewise"] = "piecewise"
    times: list[Annotated[float, Field(ge=0.0)]] = Field(min_length=1, examples=[[0.0, 50000.0]])
    """Simulation times in fs, strictly increasing."""
    temperatures: list[PositiveFloat] = Field(min_length=1, examples=[[300.0, 600.0]])
    """Temperature in K at each of ``times``."""

    @model_validator(mode="after")
    def _points(self) -> PiecewiseTemperature:
        check_points(self.times, self.temperatures, "temperatures")
        return self


def check_points(times: list[float], values: list[float], name: str) -> None:
    """ValueError unless ``times`` are strictly increasing and as many as ``values``."""
    if len(times) != len(values):
        raise ValueError(f"{len(times)} times but {len(values)} {name}")
    if any(b <= a for a, b in zip(times, times[1:], strict=False)):
        raise ValueError(f"times must be strictly increasing, got {times}")


class OscillatingTemperature(Strict):
    """T(t) = T_low + (T_high - T_low) (1 - cos(2 pi t / period)) / 2: starts at ``T_low``,
    peaks at ``T_high`` after half a period (the paper samples 300 K <-> 600 K this way)."""

    kind: Literal["oscillating"] = "oscillating"
    T_low: PositiveFloat = 300.0
    """Lowest temperature in K (at t = 0, period, 2 period, ...)."""
    T_high: PositiveFloat = 600.0
    """Highest temperature in K (at t = period / 2, 3 period / 2, ...)."""
    period: PositiveFloat = 10_000.0
    """Duration of one full cycle in fs."""

    @model_validator(mode="after")
    def _order(self) -> OscillatingTemperature:
        if self.T_high < self.T_low:
            raise ValueError(f"T_high ({self.T_high}) is below T_low ({self.T_low})")
        return self


TemperatureSchedule = Annotated[
    ConstantTemperature | PiecewiseTemperature | OscillatingTemperature,
    Field(discriminator="kind"),
]


# ---------------------------------------------------------------------------------- integrators


class NVE(Strict):
    """Velocity Verlet (jax_md.simulate.nve); the schedule only sets the initial velocities."""

    kind: Literal["nve"] = "nve"


class ThermostatChain(Strict):
    """Nose-Hoover chain settings, every one passed to jax_md.simulate.nvt_nose_hoover."""

    chain_length: PositiveInt = 3
    """Number of thermostat particles in the chain (dimensionless)."""
    chain_steps: PositiveInt = 2
    """Outer substeps of the chain integration per half step (dimensionless)."""
    sy_steps: Literal[1, 3, 5, 7] = 3
    """Suzuki-Yoshida weights per substep (dimensionless)."""
    tau: PositiveFloat = 100.0
    """Chain oscillation period in time steps, not fs (``tau * dt`` fs; a barostat's ``tau_p``
    is in fs)."""


class NVTNoseHoover(Strict):
    """Canonical ensemble with a Nose-Hoover chain thermostat."""

    kind: Literal["nvt"] = "nvt"
    thermostat: ThermostatChain = ThermostatChain()
    """Chain settings (its ``tau`` in time steps)."""


class NVTLangevin(Strict):
    """Canonical ensemble with the BAOAB Langevin integrator (jax_md.simulate.nvt_langevin)."""

    kind: Literal["langevin"] = "langevin"
    friction: PositiveFloat = 0.01
    """Friction coefficient gamma in 1/fs."""


# ----------------------------------------------------------------------- constant pressure (NPT)


class ConstantPressure(Strict):
    """The same target pressure for the whole run."""

    kind: Literal["constant"] = "constant"
    P: float = 1.01325
    """Pressure in bar (1.01325 bar = 1 atm; negative values are tension)."""


class PiecewisePressure(Strict):
    """Linear interpolation between (time, pressure) points; constant outside them."""

    kind: Literal["piecewise"] = "piecewise"
    times: list[Annotated[float, Field(ge=0.0)]] = Field(min_length=1)
    """Simulation times in fs, strictly increasing."""
    pressures: list[float] = Field(min_length=1)
    """Pressure in bar at each of ``times``."""

    @model_validator(mode="after")
    def _points(self) -> PiecewisePressure:
        check_points(self.times, self.pressures, "pressures")
        return self


PressureSchedule = Annotated[ConstantPressure | PiecewisePressure, Field(discriminator="kind")]


ParticleThermostat = Annotated[NVTLangevin | NVTNoseHoover, Field(discriminator="kind")]


class NPTStochasticCellRescaling(Strict):
    """Isothermal-isobaric ensemble by stochastic cell rescaling, particles under a Langevin or
    Nose-Hoover thermostat; fully periodic systems only. A first-order stochastic cell equation
    that samples the NPT ensemble (Bernetti & Bussi, J. Chem. Phys. 153, 114107 (2020);
    anisotropic: Del Tatto et al., Appl. Sci. 12, 1139 (2022))."""

    kind: Literal["npt_scr"] = "npt_scr"
    thermostat: ParticleThermostat = NVTLangevin()
    """Particle thermostat (``kind: langevin`` or ``kind: nvt``, settings as for NVT)."""
    cell: Literal["isotropic", "orthorhombic", "full"] = "isotropic"
    """Deformations the cell may take: volume only, the three lengths (diagonal strain), or all
    six strain components (the lattice is kept upper triangular, i.e. it never turns)."""
    tau_p: PositiveFloat = 1000.0
    """Barostat relaxation time in fs, not time steps (at least ~20 dt; 100-1000 dt typical)."""
    compressibility: PositiveFloat = 4.5e-5
    """Isothermal compressibility estimate in 1/bar (water 4.5e-5, copper 7e-7). Only the
    coupling strength depends on it: the volume relaxes in ~tau_p when it is right."""
    pressure: PressureSchedule = ConstantPressure()
    """Target pressure in bar over time."""


class NPTMartynaTobiasKlein(Strict):
    """Isothermal-isobaric ensemble by the Martyna-Tobias-Klein equations: isotropic cell,
    Nose-Hoover chains on particles and cell; fully periodic systems only. Deterministic, with a
    conserved quantity (jax_md.simulate.npt_nose_hoover)."""

    kind: Literal["npt_mtk"] = "npt_mtk"
    thermostat: ThermostatChain = ThermostatChain()
    """Particle chain (its ``tau`` in time steps); the cell's chain takes the same settings."""
    tau_p: PositiveFloat = 1000.0
    """Barostat period in fs, not time steps (also that of its chain; at least ~20 dt)."""
    pressure: PressureSchedule = ConstantPressure()
    """Target pressure in bar over time."""


NPT = (NPTStochasticCellRescaling, NPTMartynaTobiasKlein)
"""The constant-pressure dynamics (``isinstance(dynamics, NPT)``)."""

MIN_TAU_P_STEPS = 20
"""Below this many time steps tau_p couples the cell too tightly for one Euler step (a warning)."""


def check_dynamics(dynamics: Dynamics, pbc, dt_fs: float) -> None:
    """InputError if constant-pressure ``dynamics`` meets a system that is not periodic along
    all three axes of ``pbc`` (3,); a warning if its tau_p is below 20 time steps of ``dt_fs``
    (fs). Nothing for constant-volume dynamics."""
    if not isinstance(dynamics, NPT):
        return
    pbc = [bool(p) for p in pbc]
    if not all(pbc):
        raise InputError(f"{dynamics.kind} needs a cell periodic along all three axes, got {pbc=}")
    if dynamics.tau_p < MIN_TAU_P_STEPS * dt_fs:
        logger.warning(
            "tau_p = %g fs is below %d time steps (dt = %g fs): the cell may not follow stably",
            dynamics.tau_p,
            MIN_TAU_P_STEPS,
            dt_fs,
        )


Dynamics = Annotated[
    NVE | NVTNoseHoover | NVTLangevin | NPTStochasticCellRescaling | NPTMartynaTobiasKlein,
    Field(discriminator="kind"),
]


# ---------------------------------------------------------------------------------- stop checks


class EnergyUncertaintyCheck(Strict):
    """Stop when the ensemble energy standard deviation sigma_E (calibrated, the whole
    structure's) exceeds ``threshold``: per atom (sigma_E / N, eV/atom) by default."""

    kind: Literal["energy_uncertainty"] = "energy_uncertainty"
    threshold: PositiveFloat = Field(examples=[0.05])
    """In eV/atom with ``per_atom`` (the default), in eV (the whole structure) without."""
    per_atom: bool = True
    """true: compare sigma_E / N in eV/atom; false: sigma_E of the whole structure in eV."""

    @property
    def unit(self) -> str:
        return "eV/atom" if self.per_atom else "eV"


class ForcesUncertaintyCheck(Strict):
    """Stop when the force standard deviation (calibrated) of some atom exceeds ``threshold``
    (eV/A). With ``reduce="norm"`` it compares max over atoms of sqrt(sum_xyz sigma_F^2) (the
    norm of the per-atom standard-deviation vector); ``"max_component"`` compares the largest
    single sigma_F component."""

    kind: Literal["forces_uncertainty"] = "forces_uncertainty"
    threshold: PositiveFloat = Field(examples=[1.0])
    """In eV/A, per atom (see ``reduce``)."""
    reduce: Literal["norm", "max_component"] = "norm"
    """norm: the largest per-atom norm of sigma_F (the trace's max_forces_uncertainty_eV_per_A);
    max_component: the largest single component."""
    unit: ClassVar[str] = "eV/A"


class TemperatureCheck(Strict):
    """Stop when the instantaneous kinetic temperature exceeds ``max_T``."""

    kind: Literal["max_temperature"] = "max_temperature"
    max_T: PositiveFloat = Field(examples=[2000.0])
    """In K."""
    unit: ClassVar[str] = "K"


class VolumeCheck(Strict):
    """Stop when the cell volume V leaves [V0 / max_factor, max_factor V0], V0 the volume of
    the initial structure (a box that explodes or collapses). Constant-pressure dynamics only."""

    kind: Literal["volume"] = "volume"
    max_factor: float = Field(2.0, gt=1.0)
    """Largest allowed max(V / V0, V0 / V), dimensionless."""
    unit: ClassVar[str] = ""


StopCheck = Annotated[
    EnergyUncertaintyCheck | ForcesUncertaintyCheck | TemperatureCheck | VolumeCheck,
    Field(discriminator="kind"),
]


# ----------------------------------------------------------------------------------- uncertainty


class UDDConfig(Strict):
    """Uncertainty-driven dynamics bias (paper eq. 9): E_b = A [exp(-sigma_E^2 / (M N B^2)) - 1].

    sigma_E is the raw ensemble spread, not the calibrated one, unlike the stop checks': the
    bias is an energy hook and the calibration the last results hook. Kept so on purpose: eq. 9
    is written for the ensemble spread; a recalibrated model then walks the same trajectory
    (a calibration changes what is reported and when a check fires, never the dynamics); and
    the bias stays smooth where members agree for any calibration. With a global energy factor
    f, a bias on the calibrated spread with width B equals this one with width B / f."""

    height: PositiveFloat = 1.0
    """A in eV: the depth of the bias (its value at infinite uncertainty is -A)."""
    width: PositiveFloat = 1.2
    """B in eV: the uncertainty scale of the bias."""


# ------------------------------------------------------------------------------------------- md


class MDConfig(Strict):
    """One MD run: integrator, schedule, chunking, neighbour list, checks, output."""

    dynamics: Dynamics = NVTNoseHoover()
    """Integrator and ensemble: nve, nvt (Nose-Hoover chain), langevin, npt_scr, npt_mtk."""
    temperature: TemperatureSchedule = ConstantTemperature()
    """Target temperature in K over time (also the initial velocities' temperature)."""
    dt: PositiveFloat = 0.5
    """Time step in fs."""
    duration: PositiveFloat
    """Simulated time in fs; the run has round(duration / dt) steps."""
    n_inner: PositiveInt = 500
    """Time steps per jitted chunk (one host round trip, one H5MD append, one checkpoint)."""
    sampling_rate: PositiveInt = 10
    """A frame is kept every ``sampling_rate`` time steps (need not divide ``n_inner``)."""
    skin: float = Field(0.5, ge=0.0)
    """Neighbour-list skin in A: the list holds pairs within r_max + skin and is rebuilt once an
    atom has moved more than skin / 2."""
    capacity_multiplier: float = Field(1.1, ge=1.0)
    """Neighbour slots per atom relative to the largest neighbour count of any atom at the
    start or in thermally displaced copies of it at the schedule's hottest temperature
    (:mod:`apax_core.md.capacity`), dimensionless. Every slot costs model work; an overflow is
    detected, the list reallocated and the chunk redone (one recompilation), so a tight list is
    safe."""
    extra_capacity: int = Field(0, ge=0)
    """Extra neighbour-list slots per atom on top of ``capacity_multiplier``."""
    seed: int = 1
    """Seed of the Maxwell-Boltzmann velocities and of the Langevin noise."""
    load_momenta: bool = False
    """Start from the momenta stored in the initial structure instead of Maxwell-Boltzmann."""
    allow_close_contacts: bool = False
    """Run a start structure with two atoms (or an atom and its image) closer than 0.5 A (the
    training-data screening limit, ``data.screening.min_distance``). Off: such a start is
    refused, naming the pair."""
    checks: list[StopCheck] = []
    """Stop criteria evaluated on every kept frame, each threshold in its unit (below); non-finite
    energies or positions always stop. The status names the value, threshold and time."""
    force_uncertainty: bool = True
    """Ensembles: member forces (forces_uncertainty) on kept frames; they cost M backward passes
    but only every ``sampling_rate`` steps. The dynamics always use the cheap mean force."""
    store_forces_ensemble: bool = False
    """Also keep the (N, 3, M) member forces of every frame (large files for big systems)."""
    udd: UDDConfig | None = None
    """Bias the dynamics towards uncertain regions (needs an ensemble model)."""

    @property
    def n_steps(self) -> int:
        return max(1, round(self.duration / self.dt))

    @property
    def frames_per_chunk(self) -> int:
        """Buffer size: the most frames any chunk can hold."""
        return math.ceil(self.n_inner / self.sampling_rate)

    @model_validator(mode="after")
    def _consistent(self) -> MDConfig:
        if self.duration < self.dt:
            raise ValueError(f"duration ({self.duration} fs) is shorter than dt ({self.dt} fs)")
        needs_forces = [c.kind for c in self.checks if c.kind == "forces_uncertainty"]
        if needs_forces and not self.force_uncertainty:
            raise ValueError("a forces_uncertainty check needs force_uncertainty: true")
        if self.store_forces_ensemble and not self.force_uncertainty:
            raise ValueError("store_forces_ensemble needs force_uncertainty: true")
        if any(c.kind == "volume" for c in self.checks) and not isinstance(self.dynamics, NPT):
            raise ValueError(f"a volume check needs NPT dynamics, got {self.dynamics.kind!r}")
        return self


class MDRun(Strict):
    """The arguments of one MD run from the command line (command-line flags override them).
    None of them enters the spec or the run's restart identity."""

    structure: Path | None = None
    """File holding the initial structure (required here or as --structure)."""
    index: int = -1
    """Which frame of ``structure``."""
    directory: Path = Path("md")
    """Run directory: trajectory, checkpoint, status."""
    traj_name: str = "md.h5"
    """Trajectory file (H5MD) inside the run directory."""
    restart: bool = True
    """Continue from the checkpoint in the run directory if there is one; else (or with
    false) start over, replacing the trajectory and checkpoint there (a warning names them)."""
    progress_bar: bool = True
    """Show a progress bar of the steps."""

    @model_validator(mode="after")
    def _h5md(self) -> MDRun:
        if not self.traj_name.lower().endswith((".h5", ".h5md", ".hdf5")):
            raise ValueError(f"traj_name must be an H5MD file (.h5), got {self.traj_name!r}")
        return self
