"""Building the MD engine: jitted chunks of ``n_inner`` jax-md steps, frames kept on the device.

One chunk is one ``lax.while_loop`` over integrator steps. Each step moves the system (the
cheap mean-energy force, plus the UDD bias if enabled), brings the neighbour list up to date
and, every ``sampling_rate`` steps, evaluates the full prediction (uncertainties; member forces
for ensembles) under ``lax.cond``, runs the stop checks and stores the frame in a device buffer.
Running the chunks (host loop, files, restart) is :mod:`apax_core.md.run`.

The compiled functions take the model's :class:`~apax_core.model_dir.Variables` (parameters and
calibration) as an argument, so engines are cached by what their programs depend on: the
architecture, the settings but seed and duration, and the system. Walkers, retrained and
recalibrated models of one system share one compilation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import ase
import jax
import jax.numpy as jnp
import numpy as np
from jax_md import partition

from apax_core.config.md import MDConfig
from apax_core.md import checks as stop
from apax_core.md.integrators import integrator, kinetic_temperature, kT_of
from apax_core.md.model_adapter import dynamics_energy, structure
from apax_core.md.neighbours import allocate, make_space, neighbour_fns
from apax_core.md.schedules import temperature_fn
from apax_core.model_dir import Model, Variables
from apax_core.predictor import architecture, predictor
from apax_core.transforms import UDD, Transform

ENGINE_EXCLUDE = {"duration", "seed"}
"""Settings the compiled engine does not depend on (walkers differ only in the seed)."""


class Carry(NamedTuple):
    """Loop state of one chunk."""

    state: Any
    """The jax-md integrator state (positions (N, 3), fractional if periodic; momenta (N, 3))."""
    nbrs: partition.NeighborList
    """The neighbour list, ``idx`` (N, K) slots valid at ``state.position``."""
    step: jax.Array
    """() int: steps done."""
    stopped: jax.Array
    """() bool: a stop check fired (or a kept frame was not finite)."""
    reason: jax.Array
    """() int32: the reason code (:mod:`apax_core.md.checks`)."""
    buf: dict
    """Kept frames, each key (frames_per_chunk, ...), e.g. positions (F, N, 3)."""
    count: jax.Array
    """() int32: frames in ``buf``."""


def transforms_of(config: MDConfig) -> tuple[Transform, ...]:
    """The UDD bias if enabled (the model's calibration follows it in the predictor)."""
    return () if config.udd is None else (UDD(config.udd.height, config.udd.width),)


def to_f64(tree):
    """Floating leaves as float64, so the loop carry keeps one dtype (jax-md's chain masses start
    as float32 and come back float64 once kT is a traced float64)."""
    return jax.tree.map(
        lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


@dataclass(frozen=True)
class Engine:
    """The jitted functions for one architecture, system and set of settings.

    ``init(variables, key, R, momenta, nbrs) -> state`` with R (N, 3) positions (fractional if
    periodic) and momenta (N, 3) or None; ``chunk(variables, state, nbrs, step, end) -> Carry``.
    """

    numbers: np.ndarray
    """(N,) atomic numbers."""
    cell: np.ndarray
    """(3, 3) cell, rows are lattice vectors (jax-md's triangular form if periodic)."""
    pbc: np.ndarray
    """(3,) periodicity."""
    nbr_fns: partition.NeighborListFns
    init: Callable
    chunk: Callable
    reasons: list
    """Reason text of each reason code."""

    def allocate(self, R, extra: int) -> partition.NeighborList:
        """A fresh list at R (N, 3) with ``extra`` spare slots per atom."""
        return allocate(self.nbr_fns, R, extra)


def build_engine(model: Model, atoms: ase.Atoms, config: MDConfig, periodic: bool) -> Engine:
    """Compose model, transforms, space, neighbour list and integrator into jitted functions.
    Only the architecture of ``model`` is used: parameters and calibration are arguments."""
    Z = jnp.asarray(atoms.numbers, jnp.int32)
    box = jnp.asarray(atoms.cell.array.T) if periodic else None
    displacement, shift = make_space(box)
    nbr_fns = neighbour_fns(
        displacement, box, model.config.r_max, config.skin, config.capacity_multiplier
    )
    transforms = transforms_of(config)
    energy = dynamics_energy(predictor(model, "energy", transforms=transforms), Z, box)
    T_of = temperature_fn(config.temperature)
    integ = integrator(config.dynamics, energy, shift, config.dt, kT_of(float(T_of(0.0))))
    mode = "uncertainty" if config.force_uncertainty else "forces"
    predict = predictor(model, mode, stress=periodic, transforms=transforms)
    record = _recorder(predict, config, Z, box, integ.conserves_momentum)
    chunk = _chunker(record, _advancer(integ, T_of, record, config, len(atoms)), config)
    masses = atoms.get_masses()

    def init(variables: Variables, key, R, momenta, nbrs):
        kT, mass = kT_of(T_of(0.0)), jnp.asarray(masses)
        return to_f64(integ.init(key, R, kT, mass, momenta, neighbor=nbrs, params=variables))

    return Engine(
        numbers=atoms.numbers.copy(),
        cell=atoms.cell.array.copy(),
        pbc=atoms.pbc.copy(),
        nbr_fns=nbr_fns,
        init=jax.jit(init),
        chunk=jax.jit(chunk),
        reasons=stop.reasons(config.checks),
    )


def _recorder(predict, config: MDConfig, Z, box, conserves_momentum: bool) -> Callable:
    """(variables, state, nbrs, step) -> one kept frame: the full prediction (member forces are
    dropped unless stored), positions (N, 3), momenta (N, 3), kinetic temperature and step.
    Args: ``Z`` (N,) atomic numbers, ``box`` (3, 3) lattice vectors as columns or None."""
    drop = {"stress_ensemble"} | ({"forces_ensemble"} - _kept(config))

    def record(variables: Variables, state, nbrs, step) -> dict:
        s = structure(state.position, nbrs.idx, Z, box)
        out = {k: v for k, v in predict(variables, s).items() if k not in drop}
        return {
            **out,
            "positions": s.positions,
            "momenta": state.momentum,
            "temperature": kinetic_temperature(state.momentum, state.mass, conserves_momentum),
            "step": step,
        }

    return record


def _advancer(integ, T_of, record, config: MDConfig, n_atoms: int) -> Callable:
    """(variables, blank frame, carry) -> carry after one step (see ``advance``)."""
    rate, dt, checks = config.sampling_rate, config.dt, tuple(config.checks)

    def advance(variables: Variables, blank: dict, c: Carry) -> Carry:
        """One step whose forces always come from a list valid at the new positions: the list
        is checked at the positions the step moved to, and if it had to be rebuilt there the
        step is redone from the same state (same random key) with the rebuilt list. On kept
        steps the full prediction is made and checked; the frame goes to ``buf[count]``."""
        kT = kT_of(T_of(c.step * dt))

        def move(nbrs):
            return integ.step(c.state, kT, neighbor=nbrs, params=variables)

        state = move(c.nbrs)
        nbrs = c.nbrs.update(state.position)
        rebuilt = jnp.any(nbrs.reference_position != c.nbrs.reference_position)
        state = jax.lax.cond(rebuilt, move, lambda _: state, nbrs)
        step = c.step + 1

        def keep(_):
            frame = record(variables, state, nbrs, step)
            return frame, stop.reason_code(checks, frame, n_atoms)

        sample = step % rate == 0
        frame, code = jax.lax.cond(sample, keep, lambda _: (blank, jnp.int32(0)), None)
        # Written every step (in place, one frame); only kept finite frames advance the count.
        buf = jax.tree.map(lambda b, x: b.at[c.count].set(x), c.buf, frame)
        count = c.count + (sample & (code != stop.NAN)).astype(jnp.int32)
        return Carry(state, nbrs, step, code != 0, code, buf, count)

    return advance


def _chunker(record, advance, config: MDConfig) -> Callable:
    """(variables, state, nbrs, step, end) -> the carry after steps from ``step`` until ``end``
    (both () int; at most ``n_inner`` steps) or a stop check fires, kept frames in a device
    buffer."""

    def chunk(variables: Variables, state, nbrs, step, end) -> Carry:
        shapes = jax.eval_shape(record, variables, state, nbrs, step)
        blank = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
        buf = jax.tree.map(
            lambda x: jnp.zeros((config.frames_per_chunk, *x.shape), x.dtype), shapes
        )
        zero = jnp.zeros((), jnp.int32)
        carry = Carry(state, nbrs, step, jnp.zeros((), bool), zero, buf, zero)
        end = jnp.minimum(end, step + config.n_inner)
        return jax.lax.while_loop(
            lambda c: jnp.logical_not(c.stopped) & (c.step < end),
            lambda c: advance(variables, blank, c),
            carry,
        )

    return chunk


def _kept(config: MDConfig) -> set[str]:
    return {"forces_ensemble"} if config.store_forces_ensemble else set()


# ------------------------------------------------------------------------------------ cache

_ENGINES: dict[tuple, Engine] = {}
_MAX_ENGINES = 4


def engine_key(model: Model, atoms: ase.Atoms, config: MDConfig) -> tuple:
    """What a compiled engine depends on: the architecture (not the parameters or the
    calibration), the settings but seed and duration, and the system (numbers, cell,
    periodicity, masses; not the positions)."""
    return (
        architecture(model),
        config.model_dump_json(exclude=ENGINE_EXCLUDE),
        atoms.numbers.tobytes(),
        np.asarray(atoms.cell.array, np.float64).tobytes(),
        np.asarray(atoms.pbc, bool).tobytes(),
        np.asarray(atoms.get_masses(), np.float64).tobytes(),
    )


def engine_for(model: Model, atoms: ase.Atoms, config: MDConfig, periodic: bool) -> Engine:
    """A cached engine for the architecture of ``model``, the system and the settings."""
    key = engine_key(model, atoms, config)
    engine = _ENGINES.get(key)
    if engine is None:
        # Built from a model without arrays: the cached closures keep no parameters alive.
        engine = build_engine(Model(model.config, model.stats, None), atoms, config, periodic)
        if len(_ENGINES) >= _MAX_ENGINES:
            _ENGINES.pop(next(iter(_ENGINES)))
        _ENGINES[key] = engine
    return engine
