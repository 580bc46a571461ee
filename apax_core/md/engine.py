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
from flax import serialization
from tqdm.auto import tqdm

from apax_core.config.md import MDConfig
from apax_core.data import species_index
from apax_core.md import checkpoint as ckpt
from apax_core.md import checks as stop
from apax_core.md.integrators import integrator, kinetic_temperature, kT_of
from apax_core.md.io import (
    append_frames,
    frames_to_atoms,
    status_dict,
    truncate,
    write_status,
)
from apax_core.md.model_adapter import dynamics_energy, structure
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
from apax_core.model_dir import Model
from apax_core.precision import x64
from apax_core.predictor import predictor
from apax_core.transforms import UDD, Transform

logger = logging.getLogger(__name__)

FINGERPRINT_EXCLUDE = {"duration"}
"""Settings a restarted run may change; every other one must match the checkpoint."""
ENGINE_EXCLUDE = FINGERPRINT_EXCLUDE | {"seed"}
"""Settings the compiled engine does not depend on (walkers differ only in the seed)."""
TRAJECTORY = "md.h5"


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


def transforms_of(config: MDConfig) -> tuple[Transform, ...]:
    """The UDD bias if enabled (the model's stored calibration follows it in the predictor)."""
    return () if config.udd is None else (UDD(config.udd.height, config.udd.width),)


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
        reasons=stop.reasons(config.checks),
    )


def _recorder(predict, config: MDConfig, Z, box, conserves_momentum: bool) -> Callable:
    """(params, state, nbrs, step) -> one kept frame: the full prediction (member forces are
    dropped unless stored), positions, momenta, kinetic temperature and step."""
    drop = {"stress_ensemble"} | ({"forces_ensemble"} - _kept(config))

    def record(params, state, nbrs, step) -> dict:
        s = structure(state.position, nbrs.idx, Z, box)
        out = {k: v for k, v in predict(params, s).items() if k not in drop}
        return {
            **out,
            "positions": s.positions,
            "momenta": state.momentum,
            "temperature": kinetic_temperature(state.momentum, state.mass, conserves_momentum),
            "step": step,
        }

    return record


def _advancer(integ, T_of, record, config: MDConfig, n_atoms: int) -> Callable:
    """(params, blank frame, carry) -> carry after one step (see ``advance``)."""
    rate, dt, checks = config.sampling_rate, config.dt, tuple(config.checks)

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
            return frame, stop.reason_code(checks, frame, n_atoms)

        sample = step % rate == 0
        frame, code = jax.lax.cond(sample, keep, lambda _: (blank, jnp.int32(0)), None)
        # Written every step (in place, one frame); only kept finite frames advance the count.
        buf = jax.tree.map(lambda b, x: b.at[c.count].set(x), c.buf, frame)
        count = c.count + (sample & (code != stop.NAN)).astype(jnp.int32)
        return Carry(state, nbrs, step, code != 0, code, buf, count)

    return advance


def _chunker(record, advance, config: MDConfig) -> Callable:
    """(params, state, nbrs, step, end) -> the carry after steps from ``step`` until ``end``
    (at most ``n_inner``) or a stop check fires, kept frames in a device buffer."""

    def chunk(params, state, nbrs, step, end) -> Carry:
        shapes = jax.eval_shape(record, params, state, nbrs, step)
        blank = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
        buf = jax.tree.map(
            lambda x: jnp.zeros((config.frames_per_chunk, *x.shape), x.dtype), shapes
        )
        zero = jnp.zeros((), jnp.int32)
        carry = Carry(state, nbrs, step, jnp.zeros((), bool), zero, buf, zero)
        end = jnp.minimum(end, step + config.n_inner)
        return jax.lax.while_loop(
            lambda c: jnp.logical_not(c.stopped) & (c.step < end),
            lambda c: advance(params, blank, c),
            carry,
        )

    return chunk


def _kept(config: MDConfig) -> set[str]:
    return {"forces_ensemble"} if config.store_forces_ensemble else set()


# ------------------------------------------------------------------------------------ cache

_ENGINES: dict[tuple, Engine] = {}
_MAX_ENGINES = 4


def fingerprint(config: MDConfig, atoms: ase.Atoms, exclude=FINGERPRINT_EXCLUDE) -> dict:
    """The settings and system a checkpoint (or, excluding the seed, an engine) belongs to."""
    return {
        "config": config.model_dump(mode="json", exclude=exclude),
        "numbers": atoms.numbers.tolist(),
        "cell": np.round(atoms.cell.array, 10).tolist(),
    }


def engine_for(model: Model, atoms: ase.Atoms, config: MDConfig, periodic: bool) -> Engine:
    """A cached engine for the same model object, system and settings (reuses compilations)."""
    key = (
        id(model),
        json.dumps(fingerprint(config, atoms, ENGINE_EXCLUDE), sort_keys=True),
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


def validate(model: Model, atoms: ase.Atoms, config: MDConfig) -> bool:
    """Every input check that can fail, before any compilation; returns periodicity."""
    if len(atoms) == 0:
        raise ValueError("the initial structure has no atoms")
    species_index(np.asarray(atoms.numbers), model.stats.elements, source="initial structure")
    periodic = check_cell(atoms, model.config.r_max + config.skin)
    stop.validate(config.checks, model.config.n_members, config.force_uncertainty)
    for t in transforms_of(config):
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


def run_identity(config: MDConfig, atoms: ase.Atoms, model: Model) -> dict:
    """What a checkpoint must match to be continued: settings, system, starting point and the
    model (its parameters and calibration), so a retrained model starts afresh."""
    start = np.concatenate([atoms.positions.ravel(), atoms.get_momenta().ravel()])
    digest = hashlib.sha256(np.round(start, 8).tobytes()).hexdigest()[:16]
    weights = hashlib.sha256(serialization.to_bytes(model.params))
    weights.update(repr(model.calibration).encode())
    return {**fingerprint(config, atoms), "start": digest, "model": weights.hexdigest()[:16]}


def _matching_checkpoint(directory: Path, run_id: dict) -> ckpt.Checkpoint | None:
    """The checkpoint in ``directory`` if it belongs to this run. One of another model (e.g.
    retrained) is ignored; one of other settings or another start structure is an error."""
    saved = ckpt.load(directory)
    if saved is None or saved.meta["fingerprint"] == run_id:
        return saved
    if {k: v for k, v in saved.meta["fingerprint"].items() if k != "model"} == {
        k: v for k, v in run_id.items() if k != "model"
    }:
        logger.warning("%s holds a checkpoint of another model; starting afresh", directory)
        return None
    raise ValueError(
        f"{directory} holds a checkpoint of a run with other settings or another start "
        "structure; use another directory or restart=False"
    )


def run_md(
    model: Model,
    atoms: ase.Atoms,
    config: MDConfig,
    directory: str | Path,
    *,
    traj_name: str = TRAJECTORY,
    restart: bool = True,
    progress_bar: bool = True,
) -> MDResult:
    """Run (or continue) MD of ``atoms`` with ``model``; frames go to ``directory/traj_name``.

    With ``restart`` and a checkpoint in ``directory``, the run continues from it with the same
    settings and model (only ``duration`` may grow); the trajectory is truncated to the
    checkpoint's frame count first, so it ends up with no missing and no duplicated frames.
    Periodic cells are rotated to jax-md's triangular form if needed (frames are written in
    that frame).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    periodic = validate(model, atoms, config)
    atoms = standard_frame(atoms) if periodic else atoms.copy()
    traj = directory / traj_name
    run_id = json.loads(json.dumps(run_identity(config, atoms, model)))
    with x64():
        engine = engine_for(model, atoms, config, periodic)
        params = jax.device_put(model.params)
        saved = _matching_checkpoint(directory, run_id) if restart else None
        if saved is not None:
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
                "fingerprint": run_id,
            }
        return _loop(engine, config, params, state, nbrs, meta, directory, traj, progress_bar)


def _loop(
    engine: Engine,
    config: MDConfig,
    params,
    state,
    nbrs,
    meta: dict,
    directory: Path,
    traj: Path,
    progress_bar: bool,
) -> MDResult:
    """Chunks until the duration is reached or a stop check fires; meta is updated in place."""
    timing: list[tuple[float, int]] = []
    bar = tqdm(
        total=config.n_steps,
        initial=min(meta["step"], config.n_steps),
        unit="step",
        desc="md",
        disable=not progress_bar,
    )
    try:
        while meta["step"] < config.n_steps and not meta["stopped"]:
            step = meta["step"]
            end, t0 = min(step + config.n_inner, config.n_steps), time.perf_counter()
            with quiet():
                out = engine.chunk(params, state, nbrs, jnp.asarray(step), jnp.asarray(end))
            jax.block_until_ready(out)
            error = error_text(out.nbrs)
            if error is not None:
                nbrs = _grow(engine, state, out, meta, error)
                continue
            _keep_chunk(engine, config, out, meta, directory, traj, bar)
            state, nbrs = out.state, out.nbrs
            timing.append((time.perf_counter() - t0, meta["step"] - step))
    finally:
        bar.close()
    status = status_dict(meta["stopped"], meta["reason"], meta["step"], config.dt, meta["n_frames"])
    write_status(directory, status)
    if meta["stopped"]:
        logger.warning(
            "MD stopped at step %d (%.1f fs): %s",
            meta["step"],
            meta["step"] * config.dt,
            meta["reason"],
        )
    summary = _timing(timing, len(engine.numbers))
    if summary["us_per_atom_step"] is not None:
        logger.info(
            "%.2f us/atom/step over the steady chunks (compilation %.1f s not included)",
            summary["us_per_atom_step"],
            summary["compile_s"],
        )
    return MDResult(traj, status, summary)


def _keep_chunk(
    engine: Engine, config: MDConfig, out: Carry, meta: dict, directory: Path, traj: Path, bar
) -> None:
    """Append a finished chunk's frames, then checkpoint and status (in that order, so a
    restart truncates the trajectory to the checkpoint)."""
    count, dt = int(out.count), config.dt
    if count:
        host = jax.tree.map(np.asarray, out.buf)
        atoms = frames_to_atoms(host, count, engine.numbers, engine.cell, engine.pbc, dt)
        append_frames(traj, atoms, dt * config.sampling_rate)
        bar.set_postfix(T=f"{atoms[-1].info['temperature']:.0f} K")
    bar.update(int(out.step) - meta["step"])
    stopped = bool(out.stopped)
    meta.update(
        step=int(out.step),
        n_frames=meta["n_frames"] + count,
        stopped=stopped,
        reason=engine.reasons[int(out.reason)] if stopped else None,
    )
    ckpt.save(directory, out.state, out.nbrs, meta)
    write_status(
        directory, status_dict(stopped, meta["reason"], meta["step"], dt, meta["n_frames"])
    )


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
        old,
        int(new.idx.shape[-1]),
    )
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
