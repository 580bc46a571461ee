"""Building the MD engine: jitted chunks of ``n_inner`` jax-md steps, frames kept on the device.

One chunk is one ``lax.while_loop`` over integrator steps. Each step moves the system (the
cheap mean-energy force, plus the UDD bias if enabled), brings the neighbour list (the kind
chosen for the system, :mod:`apax_core.md.neighbours`) up to date and, every
``sampling_rate`` steps, evaluates the full prediction (uncertainties; member forces for
ensembles) under ``lax.cond``, runs the stop checks and stores the frame in a device buffer.
Under constant pressure the cell is part of the integrator state (``state.box``, lattice
vectors as columns): the energy, the list update and the frames take it from there, each step
gets the target pressure of its time, and frames carry their cell.
Running the chunks (host loop, files, restart) is :mod:`apax_core.md.run`.

The compiled functions take the model's :class:`~apax_core.model_dir.Variables` (parameters and
calibration) as an argument, so engines are cached by what their programs depend on: the
architecture, the settings but seed and duration, and the system. Walkers, retrained and
recalibrated models of one system share one compilation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import ase
import jax
import jax.numpy as jnp
import numpy as np

from apax_core.config.md import NPT, MDConfig
from apax_core.md import capacity
from apax_core.md import checks as stop
from apax_core.md.barostats import bar_to_eva3
from apax_core.md.integrators import integrator, kT_of
from apax_core.md.jax_md_parts import space
from apax_core.md.kinetics import kinetic_temperature
from apax_core.md.model_adapter import dynamics_energy
from apax_core.md.neighbours import PairList, pair_list
from apax_core.md.schedules import pressure_fn, temperature_fn
from apax_core.model_dir import Model, Variables
from apax_core.predictor import architecture, predictor
from apax_core.transforms import UDD, Transform

ENGINE_EXCLUDE = {"duration", "seed", "allow_close_contacts"}
"""Settings the compiled engine does not depend on (walkers differ only in the seed)."""
NPT_CELL_MARGIN = 0.2
"""Under constant pressure the image list covers cells whose heights shrank by up to 20 %
(a volume near half the start's, where the default volume check stops the run)."""


class Carry(NamedTuple):
    """Loop state of one chunk."""

    state: Any
    """The jax-md integrator state (positions (N, 3), fractional; momenta (N, 3); under
    constant pressure the box (3, 3), lattice vectors as columns)."""
    nbrs: Any
    """The neighbour list (:class:`~apax_core.md.neighbours.PairList`'s kind), ``idx`` (N, K)
    slots valid at ``state.position``."""
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
    previous: jax.Array
    """(N, 3) fractional positions one step back (at a chunk's start: the current ones), from
    which the next step's positions are extrapolated for the list (:func:`_advancer`)."""


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

    ``init(variables, key, R, momenta, nbrs) -> state`` with R (N, 3) fractional positions of
    ``pairs.cell`` and momenta (N, 3) or None; ``chunk(variables, state, nbrs, step, end) ->
    Carry``.
    """

    numbers: np.ndarray
    """(N,) atomic numbers."""
    cell: np.ndarray
    """(3, 3) the structure's cell, rows are lattice vectors (zero rows where ASE has them)."""
    pbc: np.ndarray
    """(3,) periodicity."""
    pairs: PairList
    """The neighbour list kind, its cell and its host functions (allocate, save, ...)."""
    init: Callable
    chunk: Callable
    reasons: list
    """Reason text of each reason code."""
    capacity_key: str
    """Under what a grown neighbour capacity is remembered (:mod:`apax_core.md.capacity`)."""


def build_engine(model: Model, atoms: ase.Atoms, config: MDConfig, kind: str) -> Engine:
    """Compose model, transforms, space, neighbour list of ``kind`` and integrator into jitted
    functions. Only the architecture of ``model`` is used: parameters and calibration are
    arguments."""
    Z = jnp.asarray(atoms.numbers, jnp.int32)
    margin = NPT_CELL_MARGIN if isinstance(config.dynamics, NPT) else 0.0
    pairs = pair_list(
        kind, atoms, model.config.r_max, config.skin, config.capacity_multiplier, margin
    )
    cell = jnp.asarray(pairs.cell)
    _, shift = pairs.space()
    transforms = transforms_of(config)
    structure = functools.partial(pairs.structure, Z=Z)
    energy = dynamics_energy(predictor(model, "energy", transforms=transforms), structure, cell)
    T_of = temperature_fn(config.temperature)
    integ = integrator(config.dynamics, energy, shift, config.dt, kT_of(float(T_of(0.0))))
    mode = "uncertainty" if config.force_uncertainty else "forces"
    predict = predictor(model, mode, stress=bool(atoms.pbc.any()), transforms=transforms)
    cell_of = _cell_of(config, pairs)
    record = _recorder(predict, config, structure, pairs, cell_of, integ.conserves_momentum)
    advance = _advancer(integ, record, config, pairs, cell_of, len(atoms))
    chunk = _chunker(record, advance, config)
    masses = atoms.get_masses()
    box = {"box": cell.T} if isinstance(config.dynamics, NPT) else {}

    def init(variables: Variables, key, R, momenta, nbrs):
        kT, mass = kT_of(T_of(0.0)), jnp.asarray(masses)
        state = integ.init(key, R, kT, mass, momenta, neighbor=nbrs, params=variables, **box)
        return to_f64(state)

    return Engine(
        numbers=atoms.numbers.copy(),
        cell=atoms.cell.array.copy(),
        pbc=atoms.pbc.copy(),
        pairs=pairs,
        init=jax.jit(init),
        chunk=jax.jit(chunk),
        reasons=stop.reasons(config.checks),
        capacity_key=capacity.key(kind, atoms, config, model.config.r_max),
    )


def _cell_of(config: MDConfig, pairs: PairList) -> Callable:
    """state -> its (3, 3) cell, rows in A: the integrator's box under constant pressure, else
    the list's fixed cell."""
    if isinstance(config.dynamics, NPT):
        return lambda state: state.box.T
    cell = jnp.asarray(pairs.cell)
    return lambda state: cell


def _targets(config: MDConfig) -> Callable:
    """time (fs) -> (kT in eV, target pressure in eV/A^3 or None at constant volume)."""
    T_of = temperature_fn(config.temperature)
    if not isinstance(config.dynamics, NPT):
        return lambda t: (kT_of(T_of(t)), None)
    P_of = pressure_fn(config.dynamics.pressure)
    return lambda t: (kT_of(T_of(t)), bar_to_eva3(P_of(t)))


def _recorder(
    predict, config: MDConfig, structure, pairs: PairList, cell_of, conserves_momentum: bool
) -> Callable:
    """(variables, state, nbrs, step) -> one kept frame: the full prediction (member forces are
    dropped unless stored), positions (N, 3) in A wrapped into the cell along its periodic
    axes, momenta (N, 3), kinetic temperature, step and, under constant pressure, the cell
    (3, 3) (rows, A). ``structure(R, nbrs, cell=...)`` is the list's Batch builder, ``cell_of``
    the state's cell (:func:`_cell_of`)."""
    drop = {"stress_ensemble"} | ({"forces_ensemble"} - _kept(config))
    npt = isinstance(config.dynamics, NPT)

    def record(variables: Variables, state, nbrs, step) -> dict:
        cell = cell_of(state)
        s = structure(state.position, nbrs, cell=cell)
        out = {k: v for k, v in predict(variables, s).items() if k not in drop}
        return {
            **out,
            "positions": space.transform(cell.T, pairs.wrap(state.position)),
            "momenta": state.momentum,
            "temperature": kinetic_temperature(state.momentum, state.mass, conserves_momentum),
            "step": step,
            **({"cell": cell} if npt else {}),
        }

    return record


def _advancer(integ, record, config: MDConfig, pairs: PairList, cell_of, n_atoms: int) -> Callable:
    """(variables, blank frame, carry) -> carry after one step (see ``advance``); the volume
    check compares with the volume of the list's initial cell."""
    rate, dt, checks = config.sampling_rate, config.dt, tuple(config.checks)
    targets, volume0 = _targets(config), float(abs(np.linalg.det(pairs.cell)))

    def advance(variables: Variables, blank: dict, c: Carry) -> Carry:
        """One step whose forces always come from a list valid at the new positions (and
        cell). The list is first brought up to date where the step is expected to go (the
        last step's displacement repeated), so a rebuild rarely costs a second force: the
        list is then checked where the step moved to, and if it had to be rebuilt there the
        step is redone from the same state (same random key) with the rebuilt list. On kept
        steps the full prediction is made and checked; the frame goes to ``buf[count]``."""
        kT, pressure = targets(c.step * dt)

        def move(nbrs):
            return integ.step(c.state, kT, pressure, neighbor=nbrs, params=variables)

        expected = _extrapolated(c.previous, c.state.position)
        expected = pairs.wrap(expected) if pairs.wrapped else expected
        ahead = pairs.update(c.nbrs, expected, cell_of(c.state))
        state = move(ahead)
        nbrs = pairs.update(ahead, state.position, cell_of(state))
        state = jax.lax.cond(pairs.rebuilt(ahead, nbrs), move, lambda _: state, nbrs)
        step = c.step + 1

        def keep(_):
            frame = record(variables, state, nbrs, step)
            return frame, stop.reason_code(checks, frame, n_atoms, volume0)

        sample = step % rate == 0
        frame, code = jax.lax.cond(sample, keep, lambda _: (blank, jnp.int32(0)), None)
        # Written every step (in place, one frame); only kept finite frames advance the count.
        buf = jax.tree.map(lambda b, x: b.at[c.count].set(x), c.buf, frame)
        count = c.count + (sample & (code != stop.NAN)).astype(jnp.int32)
        return Carry(state, nbrs, step, code != 0, code, buf, count, c.state.position)

    return advance


def _extrapolated(previous, current):
    """current + (current - previous) in fractional coordinates, the difference taken to the
    nearest image (a step moves far less than half a cell; wrapped positions jump by 1)."""
    delta = current - previous
    return current + delta - jnp.round(delta)


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
        carry = Carry(state, nbrs, step, jnp.zeros((), bool), zero, buf, zero, state.position)
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


def engine_key(model: Model, atoms: ase.Atoms, config: MDConfig, kind: str) -> tuple:
    """What a compiled engine depends on: the architecture (not the parameters or the
    calibration), the settings but seed and duration, the system (numbers, cell, periodicity,
    masses; not the positions) and the neighbour list kind."""
    return (
        kind,
        architecture(model),
        config.model_dump_json(exclude=ENGINE_EXCLUDE),
        atoms.numbers.tobytes(),
        np.asarray(atoms.cell.array, np.float64).tobytes(),
        np.asarray(atoms.pbc, bool).tobytes(),
        np.asarray(atoms.get_masses(), np.float64).tobytes(),
    )


def engine_for(model: Model, atoms: ase.Atoms, config: MDConfig, kind: str) -> Engine:
    """A cached engine for the architecture of ``model``, the system, the settings and the
    neighbour list ``kind``."""
    key = engine_key(model, atoms, config, kind)
    engine = _ENGINES.get(key)
    if engine is None:
        # Built from a model without arrays: the cached closures keep no parameters alive.
        engine = build_engine(Model(model.config, model.stats, None), atoms, config, kind)
        if len(_ENGINES) >= _MAX_ENGINES:
            _ENGINES.pop(next(iter(_ENGINES)))
        _ENGINES[key] = engine
    return engine
