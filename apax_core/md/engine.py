"""The JAX MD engine: jitted chunks of ``n_inner`` jax-md steps, frames kept on the device.

One chunk is one ``lax.fori_loop`` over integrator steps. Each step moves the system (the
cheap mean-energy force, plus the UDD bias if enabled), brings the neighbour list up to date
and, every ``sampling_rate`` steps, evaluates the full prediction (uncertainties; member forces
for ensembles) under ``lax.cond``, runs the stop checks and stores the frame in a device buffer.
The host sees the buffer once per chunk: it appends the frames to H5MD, writes the checkpoint
and the status, and redoes the chunk with a larger neighbour list if the list overflowed, so an
overflow never yields wrong forces. A run that stops early keeps every frame up to the stop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import ase
import jax
import jax.numpy as jnp
import numpy as np
from ase import units
from tqdm.auto import tqdm

from apax_core.config.md import MDConfig
from apax_core.data import species_index
from apax_core.md import checkpoint as ckpt
from apax_core.md import checks as stop
from apax_core.md.calibration import GlobalCalibration, stored_calibration
from apax_core.md.energy import dynamics_energy, structure
from apax_core.md.integrators import integrator, kT_of
from apax_core.md.io import (
    append_frames,
    frames_to_atoms,
    status_dict,
    truncate,
    write_status,
)
from apax_core.md.neighbours import (
    allocate,
    check_cell,
    error_text,
    make_space,
    neighbour_fns,
    quiet,
    restore,
    standard_frame,
)
from apax_core.md.schedules import temperature_fn
from apax_core.md.transforms import Transform, predictor, transformed_apply
from apax_core.md.udd import UDD
from apax_core.model_dir import Model
from apax_core.precision import x64

logger = logging.getLogger(__name__)

FINGERPRINT_EXCLUDE = {"duration", "restart", "progress_bar", "traj_name"}
"""Settings a restarted run may change; every other one must match the checkpoint."""


@dataclass(frozen=True)
class MDResult:
    trajectory: Path
    """The H5MD trajectory (absent if the run stopped before its first frame)."""
    status: dict
    """The content of ``md_status.json``: stopped, reason, step, time_fs, n_frames."""
    timing: dict
    """compile_s (first chunk minus a steady chunk) and us_per_atom_step (steady chunks)."""


class Carry(NamedTuple):
    """Loop state of one chunk."""

    state: Any
    nbrs: Any
    step: jax.Array
    stopped: jax.Array
    reason: jax.Array
    buf: dict
    count: jax.Array


def transforms_of(config: MDConfig, model: Model) -> tuple[Transform, ...]:
    """UDD (dynamics and frames), the model's stored calibration, then the config's."""
    out: list[Transform] = []
    if config.udd is not None:
        out.append(UDD(config.udd.height, config.udd.width))
    out.extend(stored_calibration(model))
    if config.calibration is not None:
        c = config.calibration
        out.append(GlobalCalibration(c.energy_factor, c.forces_factor))
    return tuple(out)


def kinetic_temperature(momentum, mass):
    """2 KE / (3 N k_B) in K (jax-md's and ASE's degrees of freedom: 3N)."""
    return jnp.sum(momentum**2 / mass) / (momentum.size * units.kB)


def _to_f64(tree):
    """Floating leaves as float64, so the loop carry keeps one dtype (jax-md's chain masses start
    as float32 and come back float64 once kT is a traced float64)."""
    return jax.tree.map(
        lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


@dataclass
class Engine:
    """The jitted functions for one model, structure and set of settings."""

    model: Model
    numbers: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    nbr_fns: Any
    init: Callable
    chunk: Callable
    reasons: list

    def allocate(self, R, extra: int):
        return allocate(self.nbr_fns, R, extra)


def build_engine(model: Model, atoms: ase.Atoms, config: MDConfig, periodic: bool) -> Engine:
    """Compose model, transforms, space, neighbour list and integrator into jitted functions."""
    n = len(atoms)
    Z = jnp.asarray(atoms.numbers, jnp.int32)
    box = jnp.asarray(atoms.cell.array.T) if periodic else None
    displacement, shift = make_space(box)
    nbr_fns = neighbour_fns(
        displacement, box, model.config.r_max, config.skin, config.capacity_multiplier
    )
    transforms = transforms_of(config, model)
    energy = dynamics_energy(transformed_apply(model, transforms), Z, box)
    T_of = temperature_fn(config.temperature)
    integ = integrator(config.dynamics, energy, shift, config.dt, kT_of(float(T_of(0.0))))
    predict = predictor(
        model, transforms, force_uncertainty=config.force_uncertainty, stress=periodic
    )
    drop = {"stress_ensemble"} | ({"forces_ensemble"} - _kept(config))
    rate, n_inner, dt = config.sampling_rate, config.n_inner, config.dt
    checks = tuple(config.checks)

    def record(params, state, nbrs, step) -> dict:
        s = structure(state.position, nbrs.idx, Z, box)
        out = {k: v for k, v in predict(params, s).items() if k not in drop}
        return {
            **out,
            "positions": s.positions,
            "momenta": state.momentum,
            "temperature": kinetic_temperature(state.momentum, state.mass),
            "step": step,
        }

    def advance(params, blank: dict, c: Carry) -> Carry:
        """One step whose forces always come from a list valid at the new positions: the list
        is checked at the positions the step moved to, and if it had to be rebuilt there the
        step is redone from the same state (same random key) with the rebuilt list. On kept
        steps the full prediction is made and checked; the frame goes to ``buf[count]``."""
        kT = kT_of(T_of(c.step * dt))

        def move(nbrs):
            return integ.step(c.state, kT, neighbor=nbrs, params=params)

        state = move(c.nbrs)
        nbrs = c.nbrs.update(state.position)
        rebuilt = jnp.any(nbrs.reference_position != c.nbrs.reference_position)
        state = jax.lax.cond(rebuilt, move, lambda _: state, nbrs)
        step = c.step + 1

        def keep(_):
            frame = record(params, state, nbrs, step)
            return frame, stop.reason_code(checks, frame, n)

        sample = step % rate == 0
        frame, code = jax.lax.cond(sample, keep, lambda _: (blank, jnp.int32(0)), None)
        # Written every step (in place, one frame); only kept finite frames advance the count.
        buf = jax.tree.map(lambda b, x: b.at[c.count].set(x), c.buf, frame)
        count = c.count + (sample & (code != stop.NAN)).astype(jnp.int32)
        return Carry(state, nbrs, step, code != 0, code, buf, count)

    def chunk(params, state, nbrs, step, end) -> Carry:
        """Steps from ``step`` until ``end`` (at most ``n_inner``) or a stop check fires."""
        shapes = jax.eval_shape(record, params, state, nbrs, step)
        blank = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
        buf = jax.tree.map(lambda x: jnp.zeros((config.frames_per_chunk, *x.shape), x.dtype),
                           shapes)  # fmt: skip
        zero = jnp.zeros((), jnp.int32)
        carry = Carry(state, nbrs, step, jnp.zeros((), bool), zero, buf, zero)
        end = jnp.minimum(end, step + n_inner)
        return jax.lax.while_loop(
            lambda c: jnp.logical_not(c.stopped) & (c.step < end),
            lambda c: advance(params, blank, c),
            carry,
        )

    def init(params, key, R, momenta, nbrs):
        kT = kT_of(T_of(0.0))
        mass = jnp.asarray(atoms.get_masses())
        return _to_f64(integ.init(key, R, kT, mass, momenta, neighbor=nbrs, params=params))

    return Engine(
        model=model,
        numbers=atoms.numbers.copy(),
        cell=atoms.cell.array.copy(),
        pbc=atoms.pbc.copy(),
        nbr_fns=nbr_fns,
        init=jax.jit(init),
        chunk=jax.jit(chunk),
        reasons=stop.reasons(checks),
    )


def _kept(config: MDConfig) -> set[str]:
    return {"forces_ensemble"} if config.store_forces_ensemble else set()


# ------------------------------------------------------------------------------------ cache

_ENGINES: dict[tuple, Engine] = {}
_MAX_ENGINES = 4


def fingerprint(config: MDConfig, atoms: ase.Atoms) -> dict:
    """The settings and system a checkpoint belongs to."""
    return {
        "config": config.model_dump(mode="json", exclude=FINGERPRINT_EXCLUDE),
        "numbers": atoms.numbers.tolist(),
        "cell": np.round(atoms.cell.array, 10).tolist(),
    }


def engine_for(model: Model, atoms: ase.Atoms, config: MDConfig, periodic: bool) -> Engine:
    """A cached engine for the same model object, system and settings (reuses compilations)."""
    key = (
        id(model),
        json.dumps(fingerprint(config, atoms), sort_keys=True),
        np.asarray(atoms.get_masses()).tobytes(),
    )
    engine = _ENGINES.get(key)
    if engine is None or engine.model is not model:
        engine = build_engine(model, atoms, config, periodic)
        if len(_ENGINES) >= _MAX_ENGINES:
            _ENGINES.pop(next(iter(_ENGINES)))
        _ENGINES[key] = engine
    return engine


# -------------------------------------------------------------------------------------- run


def _validate(model: Model, atoms: ase.Atoms, config: MDConfig) -> bool:
    """Every input check that can fail, before any compilation; returns periodicity."""
    if len(atoms) == 0:
        raise ValueError("the initial structure has no atoms")
    species_index(np.asarray(atoms.numbers), model.stats.elements, source="initial structure")
    periodic = check_cell(atoms, model.config.r_max + config.skin)
    stop.validate(config.checks, model.config.n_members, config.force_uncertainty)
    for t in transforms_of(config, model):
        t.check(model)
    if atoms.constraints:
        raise ValueError("the MD engine does not apply ASE constraints; remove them first")
    if config.load_momenta and not atoms.has("momenta"):
        raise ValueError("load_momenta is set but the initial structure has no momenta")
    return periodic


def _start(engine: Engine, atoms: ase.Atoms, config: MDConfig, params):
    """Fresh initial state and neighbour list."""
    R = jnp.asarray(atoms.get_scaled_positions() if atoms.pbc.any() else atoms.positions)
    nbrs = engine.allocate(R, config.extra_capacity)
    momenta = jnp.asarray(atoms.get_momenta()) if config.load_momenta else None
    with quiet():
        state = engine.init(params, jax.random.PRNGKey(config.seed), R, momenta, nbrs)
    return state, nbrs


def _resume(engine: Engine, config: MDConfig, params, saved: ckpt.Checkpoint):
    """State and neighbour list of a checkpoint, in the tree structure of a fresh start."""
    nbrs = restore(engine.nbr_fns, saved.nbr_idx, saved.nbr_reference, saved.meta["extra_capacity"])
    R = nbrs.reference_position
    momenta = jnp.zeros_like(R) if config.load_momenta else None
    with quiet():
        template = jax.eval_shape(
            engine.init, params, jax.random.PRNGKey(config.seed), R, momenta, nbrs
        )
    return ckpt.restore_state(template, saved.state_leaves), nbrs


def _run_id(config: MDConfig, atoms: ase.Atoms) -> dict:
    """What a checkpoint must match to be continued: settings, system and starting point."""
    start = np.concatenate([atoms.positions.ravel(), atoms.get_momenta().ravel()])
    digest = hashlib.sha256(np.round(start, 8).tobytes()).hexdigest()[:16]
    return {**fingerprint(config, atoms), "start": digest}


def run_md(model: Model, atoms: ase.Atoms, config: MDConfig, directory: Path) -> MDResult:
    """Run (or continue) MD of ``atoms`` with ``model``; frames go to ``directory/traj_name``.

    With ``config.restart`` and a checkpoint in ``directory``, the run continues from it with
    the same settings (only ``duration`` may grow); the trajectory is truncated to the
    checkpoint's frame count first, so it ends up with no missing and no duplicated frames.
    Periodic cells are rotated to jax-md's triangular form if needed (frames are written in
    that frame).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    periodic = _validate(model, atoms, config)
    atoms = standard_frame(atoms) if periodic else atoms.copy()
    traj = directory / config.traj_name
    with x64():
        engine = engine_for(model, atoms, config, periodic)
        params = jax.device_put(model.params)
        saved = ckpt.load(directory) if config.restart else None
        if saved is not None:
            if saved.meta["fingerprint"] != json.loads(json.dumps(_run_id(config, atoms))):
                raise ValueError(
                    f"{directory} holds a checkpoint of a run with other settings or another "
                    "start structure; use another directory or set restart: false"
                )
            state, nbrs = _resume(engine, config, params, saved)
            meta = saved.meta
            truncate(traj, meta["n_frames"])
            logger.info("continuing from step %d (%d frames)", meta["step"], meta["n_frames"])
        else:
            for stale in (traj, directory / ckpt.CHECKPOINT):
                stale.unlink(missing_ok=True)
            state, nbrs = _start(engine, atoms, config, params)
            meta = {
                "step": 0,
                "n_frames": 0,
                "stopped": False,
                "reason": None,
                "extra_capacity": config.extra_capacity,
                "fingerprint": _run_id(config, atoms),
            }
        return _loop(engine, config, params, state, nbrs, meta, directory, traj)


def _loop(engine: Engine, config: MDConfig, params, state, nbrs, meta: dict, directory: Path,
          traj: Path) -> MDResult:  # fmt: skip
    n_atoms, dt = len(engine.numbers), config.dt
    step, frames = meta["step"], meta["n_frames"]
    stopped, reason = meta["stopped"], meta["reason"]
    timing: list[float] = []
    bar = tqdm(total=config.n_steps, initial=min(step, config.n_steps), unit="step",
               desc="md", disable=not config.progress_bar)  # fmt: skip
    try:
        while step < config.n_steps and not stopped:
            end = min(step + config.n_inner, config.n_steps)
            t0, meta_step = time.perf_counter(), step
            with quiet():
                out = engine.chunk(params, state, nbrs, jnp.asarray(step), jnp.asarray(end))
            jax.block_until_ready(out)
            error = error_text(out.nbrs)
            if error is not None:
                nbrs = _grow(engine, state, out, meta, error)
                continue
            count = int(out.count)
            if count:
                host = jax.tree.map(np.asarray, out.buf)
                atoms = frames_to_atoms(host, count, engine.numbers, engine.cell, engine.pbc, dt)
                append_frames(traj, atoms, dt * config.sampling_rate)
                bar.set_postfix(T=f"{atoms[-1].info['temperature']:.0f} K")
            state, nbrs = out.state, out.nbrs
            bar.update(int(out.step) - step)
            step, frames = int(out.step), frames + count
            stopped = bool(out.stopped)
            reason = engine.reasons[int(out.reason)] if stopped else None
            meta.update(step=step, n_frames=frames, stopped=stopped, reason=reason)
            ckpt.save(directory, state, nbrs, meta)
            write_status(directory, status_dict(stopped, reason, step, dt, frames))
            timing.append((time.perf_counter() - t0, int(out.step) - meta_step))
    finally:
        bar.close()
    status = status_dict(stopped, reason, step, dt, frames)
    write_status(directory, status)
    if stopped:
        logger.warning("MD stopped at step %d (%.1f fs): %s", step, step * dt, reason)
    timing_summary = _timing(timing, n_atoms)
    if timing_summary["us_per_atom_step"] is not None:
        logger.info(
            "%.2f us/atom/step over the steady chunks (compilation %.1f s not included)",
            timing_summary["us_per_atom_step"], timing_summary["compile_s"],
        )  # fmt: skip
    return MDResult(traj, status, timing_summary)


def _grow(engine: Engine, state, out: Carry, meta: dict, error: str):
    """A larger neighbour list at the chunk's start positions (the chunk is then redone).

    The new capacity covers what the overflowed chunk reached (a list allocated where it
    ended) and at least 1.25 x the old one, so repeated overflows (each recompiles) are rare.
    """
    if not bool(out.nbrs.did_buffer_overflow):
        raise RuntimeError(f"neighbour list error: {error}")
    old = int(out.nbrs.idx.shape[-1])
    target = math.ceil(1.25 * old)
    if bool(jnp.all(jnp.isfinite(out.state.position))):
        target = max(target, int(engine.allocate(out.state.position, 0).idx.shape[-1]))
    base = int(engine.allocate(state.position, 0).idx.shape[-1])
    meta["extra_capacity"] = max(int(meta["extra_capacity"]), target - base)
    new = engine.allocate(state.position, meta["extra_capacity"])
    logger.warning(
        "neighbour list overflow (capacity %d); reallocated with %d slots, redoing the chunk",
        old, int(new.idx.shape[-1]),
    )  # fmt: skip
    return new


def _timing(chunks: Sequence[tuple[float, int]], n_atoms: int) -> dict:
    """Compile time and steady cost; the first chunk (compilation) is excluded from the cost."""
    if not chunks:
        return {"compile_s": None, "us_per_atom_step": None}
    per_step = [t / max(s, 1) for t, s in chunks[1:]] or [chunks[0][0] / max(chunks[0][1], 1)]
    steady = float(np.median(per_step))
    first_t, first_s = chunks[0]
    return {
        "compile_s": max(first_t - steady * first_s, 0.0) if len(chunks) > 1 else None,
        "us_per_atom_step": 1e6 * steady / n_atoms if len(chunks) > 1 else None,
    }
