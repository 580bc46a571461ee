"""Constant-pressure MD: the pressure tensor, Martyna-Tobias-Klein (jax-md) and stochastic cell
rescaling, as integrators with the interface of :mod:`apax_core.md.kinetics`, built from the
configs ``NPTStochasticCellRescaling`` and ``NPTMartynaTobiasKlein`` (apax_core/config/md.py).

Units: eV, A, amu, time in ASE units inside (fs at the edges), pressure in eV/A^3 inside the
integrators and in bar where a person reads or writes it (``bar_to_eva3``), compressibility in
1/bar, tau_p in fs. Stress follows ASE: (1/V) dE/d(strain), positive = tensile.

Conventions the engine relies on:

- Positions are fractional coordinates of the current cell, momenta and forces Cartesian; the
  cell is jax-md's ``box`` (lattice vectors as columns, upper triangular, i.e. ``atoms.cell.T`` of
  ASE's standard form). Every NPT state has ``state.box`` (current box) and ``state.position``
  (fractional; SCR moves it with the engine's ``shift_fn``, MTK wraps it into [0, 1) or not).
- Energy functions are ``energy_fn(R, box=box, **kw)`` of fractional ``R`` built on
  ``space.transform`` (or jax-md displacements), whose custom derivative makes ``grad`` with
  respect to ``R`` the Cartesian gradient (see model_adapter.py); the box enters only through
  positions ``box @ s`` and image offsets, so d/d(box) is the strain derivative.
- ``init(key, R, kT, mass, momenta, box=box, **kw)``; ``step(state, kT, pressure, **kw)`` with
  ``pressure`` the target in eV/A^3 (a schedule in bar: ``bar_to_eva3(pressure_fn(s)(t))``).
- Pressure tensor: P = sum_i p_i p_i^T / (m_i V) - stress. The kinetic part counts the momenta as
  they are (ASE's ``get_stress(include_ideal_gas=True)``): where the total momentum is conserved
  and zero (Nose-Hoover, MTK) they carry 3N - 3 degrees of freedom, <P_kin> = (N - 1) kT / V;
  under Langevin all 3N are thermal, <P_kin> = N kT / V.

Stochastic cell rescaling (Bernetti & Bussi, J. Chem. Phys. 153, 114107 (2020); anisotropic:
Del Tatto, Raiteri, Bernetti & Bussi, Appl. Sci. 12, 1139 (2022)), one Euler-Maruyama step per
MD step on a symmetric strain increment, positions fixed in fractional coordinates, momenta
scaled inversely (p -> exp(-de) p):

    de = beta_T / (3 tau_p) [P_int + c kT/V I - P_0 I] dt + sqrt(2 kT beta_T dt / (3 V tau_p)) S

with S = (Z + Z^T) / 2, Z standard normal (3, 3), projected on the cell mode: ``isotropic``
(trace part: d ln V = beta_T/tau_p (P + c kT/V - P_0) dt + sqrt(2 kT beta_T dt/(V tau_p)) R, the
isotropic paper), ``orthorhombic`` (diagonal), ``full`` (all six; the new cell is rotated back to
upper-triangular form with the particles, so the lattice never turns). c = (3N - N_f) / 3 for
N_f kinetic degrees of freedom (1 under Nose-Hoover, N_f = 3N - 3; 0 under Langevin) makes it
sample the N-particle isobaric ensemble with volume measure dV (Fokker-Planck: the positions'
phase space scales with V^N, the momenta's with V^(-N_f/3); the cell measure is MTK's,
dh / V^2 over all nine components). The step is B A (O) C A B: the cell move C sits between the two
position half steps, so the forces of the one evaluation per step (which also gives the stress
of the next cell move) always belong to the current positions and cell.

MTK: jax-md's ``npt_nose_hoover`` (isotropic) with its box force alpha 2KE - dU/d(eps) - 3PV
(kinetic term included, alpha = 1 + 1/N). Its position update is written for Cartesian
positions (exp_iL1 adds R (e^x - 1)), so the wrapper runs it in Cartesian coordinates of free
space and returns fractional ones (wrapped or not as the engine's ``shift_fn`` does). The
particle chain is coupled to 3N - 3 degrees of freedom as in kinetics.py;
:func:`mtk_invariant` counts the chains' own degrees of freedom.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
from ase import units
from jax.scipy.linalg import expm

from apax_core.config.md import (
    NPTMartynaTobiasKlein,
    NPTStochasticCellRescaling,
    NVTLangevin,
    NVTNoseHoover,
    ThermostatChain,
)
from apax_core.md.jax_md_parts import dataclasses, simulate, space
from apax_core.md.kinetics import Integrator, kinetic_dof, without_drift

Array = jax.Array
CellMode = Literal["isotropic", "orthorhombic", "full"]
# ----------------------------------------------------------------------------- units, cell


def bar_to_eva3(p_bar):
    """Pressure in bar -> eV/A^3."""
    return p_bar * units.bar


def eva3_to_bar(p):
    """Pressure in eV/A^3 -> bar."""
    return p / units.bar


def volume(box: Array) -> Array:
    """Cell volume in A^3 of a (3, 3) box (or cell: the determinant ignores the transpose)."""
    return jnp.abs(jnp.linalg.det(box))


def volume_factor(box: Array, reference_volume) -> Array:
    """max(V/V0, V0/V) >= 1: a volume check fires when it exceeds its factor (2 stops a run
    whose volume left [V0/2, 2 V0]); non-finite cells give inf."""
    ratio = volume(box) / reference_volume
    factor = jnp.maximum(ratio, 1.0 / ratio)
    return jnp.where(jnp.isfinite(factor), factor, jnp.inf)


# -------------------------------------------------------------------------------- pressure


def kinetic_tensor(momentum: Array, mass: Array) -> Array:
    """sum_i p_i p_i^T / m_i (eV), (3, 3), from (N, 3) momenta and (N,) or (N, 1) masses."""
    mass = jnp.reshape(mass, (-1, 1))
    return (momentum / mass).T @ momentum


def pressure_tensor(momentum: Array, mass: Array, stress: Array, box: Array) -> Array:
    """Instantaneous pressure tensor (3, 3) in eV/A^3: kinetic tensor / V - stress."""
    return kinetic_tensor(momentum, mass) / volume(box) - stress


def scalar_pressure(pressure: Array) -> Array:
    """trace / 3 of a (3, 3) pressure tensor (same unit)."""
    return jnp.trace(pressure) / 3.0


def energy_forces_stress(energy_fn: Callable) -> Callable:
    """``(R, box, **kw) -> (energy eV, forces (N, 3) eV/A, stress (3, 3) eV/A^3)`` from one
    backward pass of ``energy_fn(R, box=box, **kw)``: stress = (1/V) dE/d(strain), the cell
    deformed as (I + strain) box with fractional positions fixed."""

    def efs(R, box, **kw):
        def energy(R, strain):
            return energy_fn(R, box=box + strain @ box, **kw)

        zero = jnp.zeros((3, 3), box.dtype)
        e, (g_r, g_strain) = jax.value_and_grad(energy, argnums=(0, 1))(R, zero)
        return e, -g_r, g_strain / volume(box)

    return efs


# ---------------------------------------------------------------------------------- MTK


def _chain_kwargs(chain: ThermostatChain, tau) -> dict:
    return dict(
        chain_length=chain.chain_length,
        chain_steps=chain.chain_steps,
        sy_steps=chain.sy_steps,
        tau=tau,
    )


def cartesian_energy(energy_fn: Callable) -> Callable:
    """``energy(R_cartesian, box, perturbation=None, **kw)`` for jax-md's NPT: fractional
    positions of ``box`` into ``energy_fn``; a scalar ``perturbation`` scales the cell (all pair
    vectors) with fractional positions fixed."""

    def energy(R, box, perturbation=None, **kw):
        s = space.transform(space.inverse(box), R)
        cell = box if perturbation is None else box * perturbation
        return energy_fn(s, box=cell, **kw)

    return energy


def _fractional(state, shift_fn: Callable):
    """The state with Cartesian positions turned fractional, wrapped as ``shift_fn`` wraps."""
    s = state.position @ jnp.linalg.inv(state.box).T
    return state.set(position=shift_fn(s, jnp.zeros_like(s), box=state.box))


def mtk(
    energy_fn: Callable,
    shift_fn: Callable,
    dt_fs: float,
    kT0: float,
    dynamics: NPTMartynaTobiasKlein,
) -> Integrator:
    """Isotropic MTK NPT (jax-md ``npt_nose_hoover``) with time step ``dt_fs`` (fs), particle
    chain ``dynamics.thermostat`` (tau in steps, as NVT) and barostat period ``dynamics.tau_p``
    (fs; its chain shares the thermostat's chain settings). States are jax-md's
    ``NPTNoseHooverState`` with fractional positions, wrapped into [0, 1) or continuous as the
    engine's ``shift_fn`` leaves them; ``state.box`` is the current box. ``kT0`` (eV) sets the
    initial box mass. Each step evaluates the energy twice (jax-md recomputes dU/deps first)."""
    dt, thermostat = dt_fs * units.fs, dynamics.thermostat
    init, apply = simulate.npt_nose_hoover(
        cartesian_energy(energy_fn),
        space.free()[1],
        dt,
        0.0,
        kT0,
        barostat_kwargs=_chain_kwargs(thermostat, dynamics.tau_p * units.fs),
        thermostat_kwargs=_chain_kwargs(thermostat, thermostat.tau * dt),
    )

    def init_mtk(key, R, kT, mass, momenta=None, box=None, **kw):
        if momenta is not None:
            momenta = without_drift(momenta, mass)
        state = init(key, R @ box.T, box, mass=mass, momenta=momenta, kT=kT, **kw)
        dof = kinetic_dof(R.shape[0], True)
        chain = dataclasses.replace(state.thermostat, degrees_of_freedom=dof)
        return as_dtype(_fractional(state.set(thermostat=chain), shift_fn), R.dtype)

    def step_mtk(state, kT, pressure, **kw):
        state = state.set(position=state.position @ state.box.T)
        return _fractional(apply(state, kT=kT, pressure=pressure, **kw), shift_fn)

    return Integrator(init_mtk, step_mtk, True)


def chain_energy(chain: simulate.NoseHooverChain, kT) -> Array:
    """Energy (eV) of a Nose-Hoover chain in its conserved quantity: kinetic energy of the
    chain plus kT (dof xi_0 + xi_1 + ... ), dof being the chain's own degrees of freedom."""
    kinetic = jnp.sum(chain.momentum**2 / (2.0 * chain.mass))
    positions = jnp.sum(chain.position) + (chain.degrees_of_freedom - 1) * chain.position[0]
    return kinetic + kT * positions


def mtk_invariant(energy_fn: Callable, state, kT, pressure, **kw) -> Array:
    """The conserved quantity (eV) of :func:`mtk` dynamics at target ``kT`` (eV) and
    ``pressure`` (eV/A^3): potential + kinetic energy + both chains + P V + box kinetic."""
    box = state.box
    potential = energy_fn(state.position, box=box, **kw)
    kinetic = simulate.kinetic_energy(state)
    chains = chain_energy(state.thermostat, kT) + chain_energy(state.barostat, kT)
    box_kinetic = state.box_momentum**2 / (2.0 * state.box_mass)
    return potential + kinetic + chains + pressure * volume(box) + box_kinetic


# ------------------------------------------------------------------ stochastic cell rescaling


@dataclasses.dataclass
class SCRState:
    """Particles, cell and thermostat of stochastic cell rescaling (a pytree of arrays)."""

    position: Array
    """(N, 3) fractional coordinates of ``box``, in [0, 1)."""
    momentum: Array
    """(N, 3) Cartesian momenta (ASE units)."""
    force: Array
    """(N, 3) forces in eV/A at ``position`` and ``box``."""
    mass: Array
    """(N, 1) masses in amu."""
    stress: Array
    """(3, 3) potential stress in eV/A^3 at ``position`` and ``box`` (ASE sign)."""
    box: Array
    """(3, 3) cell, lattice vectors as columns (upper triangular), A."""
    rng: Array
    """PRNG key of the cell noise (and of the Langevin noise)."""
    chain: simulate.NoseHooverChain | None
    """Particle Nose-Hoover chain, or None under Langevin."""

    @property
    def velocity(self) -> Array:
        return self.momentum / self.mass


def strain_increment(pressure, target, kT, box, key, coupling, dt, c_dof) -> Array:
    """Symmetric (3, 3) strain increment of one cell step of length ``dt`` (ASE time):
    ``pressure`` the (3, 3) tensor and ``target`` the scalar in eV/A^3, ``kT`` in eV, ``box``
    (3, 3), ``c_dof`` the (3N - N_f)/3 ideal-gas correction (see module docstring), projected on
    ``coupling.cell``; ``coupling`` an NPTStochasticCellRescaling (tau_p fs, compressibility
    1/bar)."""
    beta = coupling.compressibility / units.bar
    tau = coupling.tau_p * units.fs
    V = volume(box)
    eye = jnp.eye(3, dtype=pressure.dtype)
    drift = beta / (3.0 * tau) * (pressure + (c_dof * kT / V - target) * eye) * dt
    z = jax.random.normal(key, (3, 3), pressure.dtype)
    noise = jnp.sqrt(2.0 * kT * beta * dt / (3.0 * V * tau)) * (z + z.T) / 2.0
    return project(drift + noise, coupling.cell)


def project(strain: Array, cell: CellMode) -> Array:
    """The part of a symmetric (3, 3) strain that ``cell`` allows."""
    if cell == "isotropic":
        return jnp.trace(strain) / 3.0 * jnp.eye(3, dtype=strain.dtype)
    if cell == "orthorhombic":
        return jnp.diag(jnp.diag(strain))
    if cell == "full":
        return strain
    raise ValueError(f"unknown cell mode {cell!r}")


def deform(state: SCRState, strain: Array, cell: CellMode) -> SCRState:
    """Cell -> exp(strain) cell with fixed fractional positions, momenta -> exp(-strain) p.
    A full deformation is followed by the rigid rotation that makes the box upper triangular
    again (momenta and forces rotate along; the physics is unchanged)."""
    box = expm(strain) @ state.box
    momentum = state.momentum @ expm(-strain)
    force = state.force
    if cell == "full":
        q, r = jnp.linalg.qr(box)
        signs = jnp.sign(jnp.diag(r))
        q, box = q * signs, r * signs[:, None]
        momentum, force = momentum @ q, force @ q
    return state.set(box=box, momentum=momentum, force=force)


def _cell_move(coupling: NPTStochasticCellRescaling, dt, c_dof) -> Callable:
    """(state, kT, target eV/A^3) -> state after one stochastic cell step."""

    def move(state: SCRState, kT, target):
        key, split = jax.random.split(state.rng)
        pressure = pressure_tensor(state.momentum, state.mass, state.stress, state.box)
        strain = strain_increment(pressure, target, kT, state.box, split, coupling, dt, c_dof)
        return deform(state.set(rng=key), strain, coupling.cell)

    return move


def _verlet_with_cell(efs, shift_fn, dt, thermalise: Callable, move: Callable) -> Callable:
    """(state, kT, target, **kw) -> B A O C A B: half kick, half drift, ``thermalise`` (O),
    cell move, half drift in the new cell, one force/stress evaluation, half kick."""

    def drift(state, **kw):
        return simulate.position_step(state, shift_fn, dt / 2, **{**kw, "box": state.box})

    def advance(state: SCRState, kT, target, **kw):
        state = simulate.momentum_step(state, dt / 2)
        state = drift(state, **kw)
        state = move(thermalise(state, kT), kT, target)
        state = drift(state, **kw)
        _, force, stress = efs(state.position, state.box, **kw)
        return simulate.momentum_step(state.set(force=force, stress=stress), dt / 2)

    return advance


def scr(
    energy_fn: Callable, shift_fn: Callable, dt_fs: float, dynamics: NPTStochasticCellRescaling
) -> Integrator:
    """Stochastic cell rescaling NPT: particles under ``dynamics.thermostat`` (Langevin BAOAB or
    a Nose-Hoover chain, jax-md's building blocks), the cell under ``dynamics`` (cell mode,
    tau_p, compressibility), time step ``dt_fs`` (fs). ``shift_fn`` is the engine's fractional
    periodic shift (it is given the current box)."""
    dt, thermostat = dt_fs * units.fs, dynamics.thermostat
    efs = energy_forces_stress(energy_fn)
    conserves = isinstance(thermostat, NVTNoseHoover)
    if conserves:
        c = thermostat.thermostat
        chain = simulate.nose_hoover_chain(
            dt, c.chain_length, c.chain_steps, c.sy_steps, c.tau * dt
        )
        c_dof, thermalise = 1.0, lambda state, kT: state
    elif isinstance(thermostat, NVTLangevin):
        gamma, chain = thermostat.friction / units.fs, None
        c_dof = 0.0

        def thermalise(state, kT):
            return simulate.stochastic_step(state, dt, kT, gamma)
    else:
        raise TypeError(f"unknown particle thermostat {thermostat!r}")
    advance = _verlet_with_cell(efs, shift_fn, dt, thermalise, _cell_move(dynamics, dt, c_dof))
    step = advance if chain is None else _with_chain(advance, chain)
    return Integrator(_scr_init(efs, chain), step, conserves)


def _with_chain(advance: Callable, chain: simulate.NoseHooverChainFns) -> Callable:
    """``advance`` between two half steps of the particles' Nose-Hoover chain."""

    def step(state: SCRState, kT, pressure, **kw):
        c = chain.update_mass(state.chain, kT)
        p, c = chain.half_step(state.momentum, c, kT)
        state = advance(state.set(momentum=p), kT, pressure, **kw)
        c = c.set(kinetic_energy=simulate.kinetic_energy(state))
        p, c = chain.half_step(state.momentum, c, kT)
        return state.set(momentum=p, chain=c)

    return step


def _scr_init(efs: Callable, chain: simulate.NoseHooverChainFns | None) -> Callable:
    """init(key, R, kT, mass, momenta=None, box=..., **kw) -> SCRState. Maxwell-Boltzmann
    momenta without drift unless given; loaded momenta lose their drift under Nose-Hoover."""

    def init(key, R, kT, mass, momenta=None, box=None, **kw):
        key, split = jax.random.split(key)
        mass = jnp.reshape(jnp.asarray(mass, R.dtype), (-1, 1))
        _, force, stress = efs(R, box, **kw)
        state = SCRState(R, jnp.zeros_like(R), force, mass, stress, box, key, None)
        if momenta is None:
            state = simulate.initialize_momenta(state, split, kT)
        else:
            momenta = momenta if chain is None else without_drift(momenta, mass)
            state = state.set(momentum=jnp.asarray(momenta, R.dtype))
        if chain is not None:
            dof = kinetic_dof(R.shape[0], True)
            state = state.set(chain=chain.initialize(dof, simulate.kinetic_energy(state), kT))
        return as_dtype(state, R.dtype)

    return init


def as_dtype(tree, dtype):
    """Floating leaves of ``tree`` as ``dtype`` (jax-md's chain masses start as float32), so a
    state keeps one dtype through a loop carry and a checkpoint."""

    def cast(x):
        x = jnp.asarray(x)
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree.map(cast, tree)
