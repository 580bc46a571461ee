"""Running the MD engine: input checks, a fresh start or a resume, the host loop, timing.

The host sees the device buffer of a chunk (:mod:`apax_core.md.build`) once: it appends the
frames to H5MD, writes the checkpoint and the status, and redoes the chunk with a larger
neighbour list if the list overflowed, so an overflow never yields wrong forces. Each chunk's
handling returns a new :class:`~apax_core.md.checkpoint.RunState`, which the checkpoint stores.
A run that stops early keeps every frame up to the stop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import ase
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization
from tqdm.auto import tqdm

from apax_core.config.md import NPT, MDConfig
from apax_core.data import species_index
from apax_core.data.io import truncate_h5md
from apax_core.errors import InputError
from apax_core.md import capacity
from apax_core.md import checkpoint as ckpt
from apax_core.md import checks as stop
from apax_core.md.build import Carry, Engine, engine_for, transforms_of
from apax_core.md.checkpoint import RunState
from apax_core.md.io import TRAJECTORY, append_frames, frames_to_atoms, status_dict, write_status
from apax_core.md.neighbours import IMAGES, MINIMUM_IMAGE, list_kind, quiet, standard_frame
from apax_core.md.walkers import check_start
from apax_core.model_dir import Model, Variables
from apax_core.precision import x64

logger = logging.getLogger(__name__)

FINGERPRINT_EXCLUDE = {"duration", "allow_close_contacts"}
"""Settings a restarted run may change; every other one must match the checkpoint."""


@dataclass(frozen=True)
class MDResult:
    trajectory: Path
    """The H5MD trajectory (absent if the run stopped before its first frame)."""
    status: dict
    """The content of ``md_status.json`` (:func:`~apax_core.md.io.status_dict`)."""
    timing: dict
    """compile_s (first chunk minus a steady chunk), us_per_atom_step (steady chunks),
    neighbour_slots (the list's final slots per atom) and chunk_programs (how many capacities,
    each a compiled chunk, the run needed)."""


def validate(
    model: Model, atoms: ase.Atoms, config: MDConfig, name: str = "the initial structure"
) -> None:
    """Every input check that can fail, before any compilation; errors name ``name``. Any
    cell (down to one atom) and any periodicity (slabs, wires, molecules) runs."""
    check_start(atoms, config, name)
    species_index(np.asarray(atoms.numbers), model.stats.elements, source=name)
    stop.validate(config.checks, model.config.n_members, config.force_uncertainty)
    for t in transforms_of(config):
        t.check(model)


def run_identity(config: MDConfig, atoms: ase.Atoms, model: Model) -> dict:
    """What a checkpoint must match to be continued: settings (but the duration), system,
    starting point, neighbour list kind and the model (its parameters and calibration), so a
    retrained or recalibrated model starts afresh."""
    start = np.concatenate([atoms.positions.ravel(), atoms.get_momenta().ravel()])
    digest = hashlib.sha256(np.round(start, 8).tobytes()).hexdigest()[:16]
    weights = hashlib.sha256(serialization.to_bytes(model.params))
    weights.update(repr(model.calibration).encode())
    return {
        "config": config.model_dump(mode="json", exclude=FINGERPRINT_EXCLUDE),
        "numbers": atoms.numbers.tolist(),
        "cell": np.round(atoms.cell.array, 10).tolist(),
        "start": digest,
        "neighbours": neighbour_kind(atoms, config, model.config.r_max),
        "model": weights.hexdigest()[:16],
    }


def neighbour_kind(atoms: ase.Atoms, config: MDConfig, r_max: float) -> str:
    """The neighbour list of a run: the image list under constant pressure (its update follows
    the changing cell, which may leave the minimum image's limits), else the one
    :func:`~apax_core.md.neighbours.list_kind` recommends for the system."""
    if isinstance(config.dynamics, NPT):
        return IMAGES
    return list_kind(atoms, r_max + config.skin)


def _matching_checkpoint(directory: Path, run_id: dict) -> ckpt.Checkpoint | None:
    """The checkpoint in ``directory`` if it belongs to this run. One of another model (e.g.
    retrained) is ignored; one of other settings or another start structure is an error."""
    saved = ckpt.load(directory)
    if saved is None or saved.run.fingerprint == run_id:
        return saved
    if {k: v for k, v in saved.run.fingerprint.items() if k != "model"} == {
        k: v for k, v in run_id.items() if k != "model"
    }:
        logger.warning("%s holds a checkpoint of another model; starting afresh", directory)
        return None
    changed = ", ".join(_differing(saved.run.fingerprint, run_id))
    raise InputError(
        f"{directory} holds a checkpoint of a run with other settings ({changed}); use another "
        "directory, or restart: false (restart=False) to start afresh there"
    )


def _differing(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted paths of the settings in which two fingerprints differ (the model aside)."""
    keys = sorted((set(saved) | set(current)) - {"model"})
    out = []
    for key in keys:
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differing(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append("start structure" if key == "start" else f"{prefix}{key}")
    return out


def _start(engine: Engine, atoms: ase.Atoms, config: MDConfig, variables: Variables, extra: int):
    """Fresh integrator state and neighbour list (idx (N, K), ``extra`` spare slots per atom)
    at the positions of ``atoms``."""
    R = jnp.asarray(engine.pairs.fractional(atoms.positions))
    nbrs = engine.pairs.allocate(R, extra)
    momenta = jnp.asarray(atoms.get_momenta()) if config.load_momenta else None
    with quiet():
        state = engine.init(variables, jax.random.PRNGKey(config.seed), R, momenta, nbrs)
    return state, nbrs


def _start_extra(engine: Engine, atoms: ase.Atoms, config: MDConfig) -> int:
    """Spare slots per atom beyond the start's count: ``extra_capacity`` plus what the run's
    hottest temperature or a remembered capacity asks for (:mod:`apax_core.md.capacity`)."""
    pairs, mult = engine.pairs, engine.pairs.capacity_multiplier
    start = capacity.slots(pairs.count(pairs.fractional(atoms.positions)), mult)
    hot = capacity.thermal_count(
        lambda x: pairs.count(pairs.fractional(x)), atoms, capacity.hottest(config)
    )
    target = max(capacity.slots(hot, mult), capacity.remembered(engine.capacity_key))
    if target > start:
        logger.info(
            "neighbour list sized for %.0f K: %d slots (%d at the start)",
            capacity.hottest(config),
            target,
            start,
        )
    return config.extra_capacity + max(0, target - start)


def _resume(engine: Engine, config: MDConfig, variables: Variables, saved: ckpt.Checkpoint):
    """State and neighbour list of a checkpoint, in the tree structure of a fresh start."""
    nbrs = engine.pairs.restore(saved.nbrs, saved.run.extra_capacity)
    R = jnp.zeros((len(engine.numbers), 3), jnp.float64)  # shapes only
    momenta = jnp.zeros_like(R) if config.load_momenta else None
    with quiet():
        template = jax.eval_shape(
            engine.init, variables, jax.random.PRNGKey(config.seed), R, momenta, nbrs
        )
    return ckpt.restore_state(template, saved.state_leaves), nbrs


def _begin(
    engine: Engine,
    atoms: ase.Atoms,
    config: MDConfig,
    variables: Variables,
    traj: Path,
    run_id: dict,
    restart: bool,
):
    """(state, nbrs, RunState) to go on from: the matching checkpoint (the trajectory cut to
    its frames) or, without one, a fresh start (stale files removed)."""
    saved = _matching_checkpoint(traj.parent, run_id) if restart else None
    if saved is None:
        for stale in (traj, traj.parent / ckpt.CHECKPOINT):
            if stale.exists():
                logger.warning("starting afresh: replacing %s", stale)
            stale.unlink(missing_ok=True)
        extra = _start_extra(engine, atoms, config)
        state, nbrs = _start(engine, atoms, config, variables, extra)
        return state, nbrs, RunState(0, 0, False, None, extra, run_id)
    state, nbrs = _resume(engine, config, variables, saved)
    if saved.run.n_frames:
        truncate_h5md(traj, saved.run.n_frames)
    else:
        traj.unlink(missing_ok=True)
    logger.info("continuing from step %d (%d frames)", saved.run.step, saved.run.n_frames)
    return state, nbrs, saved.run


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
    The neighbour list is chosen per system (:func:`neighbour_kind`); cells on the
    minimum-image list or under constant pressure are rotated to jax-md's triangular form if
    needed (frames are written in that frame; a full cell stays triangular). Frames'
    positions are wrapped into the cell along its periodic axes.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    validate(model, atoms, config)
    kind = neighbour_kind(atoms, config, model.config.r_max)
    upright = kind == MINIMUM_IMAGE or isinstance(config.dynamics, NPT)
    atoms = standard_frame(atoms) if upright else atoms.copy()
    traj = directory / traj_name
    run_id = json.loads(json.dumps(run_identity(config, atoms, model)))
    with x64():
        engine = engine_for(model, atoms, config, kind)
        variables = jax.device_put(model.variables)
        state, nbrs, run = _begin(engine, atoms, config, variables, traj, run_id, restart)
        run, chunks = _loop(engine, config, variables, state, nbrs, run, traj, progress_bar)
    if chunks.programs > 1 and not run.stopped:  # a healthy run that had to grow its list
        capacity.remember(engine.capacity_key, chunks.slots)
    return _finish(run, chunks, config, traj, len(atoms))


def _loop(
    engine: Engine,
    config: MDConfig,
    variables: Variables,
    state,
    nbrs,
    run: RunState,
    traj: Path,
    progress_bar: bool,
) -> tuple[RunState, Chunks]:
    """Chunks until the duration is reached or a stop check fires: the final run state and
    what the loop saw (:class:`Chunks`)."""
    chunks: list[tuple[float, int]] = []
    shapes = {_slots(nbrs)}
    bar = tqdm(
        total=config.n_steps,
        initial=min(run.step, config.n_steps),
        unit="step",
        desc="md",
        disable=not progress_bar,
    )
    try:
        while run.step < config.n_steps and not run.stopped:
            start, t0 = run.step, time.perf_counter()
            end = min(start + config.n_inner, config.n_steps)
            with quiet():
                out = engine.chunk(variables, state, nbrs, jnp.asarray(start), jnp.asarray(end))
            jax.block_until_ready(out)
            error = engine.pairs.error(out.nbrs)
            if error is not None:
                nbrs, run = _grow(engine, state, out, run, error)
                shapes.add(_slots(nbrs))
                continue
            run = _keep_chunk(engine, config, out, run, traj, bar)
            state, nbrs = out.state, out.nbrs
            chunks.append((time.perf_counter() - t0, run.step - start))
    finally:
        bar.close()
    return run, Chunks(chunks, _slots(nbrs), len(shapes))


class Chunks(NamedTuple):
    """What the host loop saw: (seconds, steps) of every kept chunk, the list's final slots
    per atom and the number of chunk programs (one per capacity) the run needed."""

    times: list[tuple[float, int]]
    slots: int
    programs: int


def _slots(nbrs) -> int:
    return int(nbrs.idx.shape[-1])


def _keep_chunk(
    engine: Engine, config: MDConfig, out: Carry, run: RunState, traj: Path, bar
) -> RunState:
    """Append a finished chunk's frames, then checkpoint and status (in that order, so a
    restart truncates the trajectory to the checkpoint); the run state after the chunk."""
    count, dt = int(out.count), config.dt
    if count:
        host = jax.tree.map(np.asarray, out.buf)
        atoms = frames_to_atoms(host, count, engine.numbers, engine.cell, engine.pbc, dt)
        append_frames(traj, atoms, dt * config.sampling_rate)
        bar.set_postfix(T=f"{atoms[-1].info['temperature']:.0f} K")
    bar.update(int(out.step) - run.step)
    stopped = bool(out.stopped)
    run = run._replace(
        step=int(out.step),
        n_frames=run.n_frames + count,
        stopped=stopped,
        reason=engine.reasons[int(out.reason)] if stopped else None,
        stop_detail=_stop_detail(engine, config, out) if stopped else None,
    )
    ckpt.save(traj.parent, out.state, engine.pairs.save(out.nbrs), run)
    write_status(traj.parent, status_dict(run, dt))
    return run


def _stop_detail(engine: Engine, config: MDConfig, out: Carry) -> dict:
    """:func:`~apax_core.md.checks.stop_detail` of the frame that stopped the chunk: the last
    kept one, or the non-finite one after it (in the buffer, not kept)."""
    code = int(out.reason)
    k = int(out.count) - (code != stop.NAN)
    frame = {key: np.asarray(value[k]) for key, value in out.buf.items()}
    volume0 = float(abs(np.linalg.det(engine.pairs.cell)))  # the engine's volume check's V0
    return stop.stop_detail(config.checks, code, frame, len(engine.numbers), volume0, config.dt)


def _grow(engine: Engine, state, out: Carry, run: RunState, error: str):
    """A larger neighbour list at the chunk's start positions (the chunk is then redone), and
    the run state with its larger spare capacity.

    The new capacity covers what the overflowed chunk reached (``PairList.needed``; at least
    :func:`~apax_core.md.capacity.grown` of the old one).
    """
    pairs = engine.pairs
    if not pairs.overflowed(out.nbrs):
        raise RuntimeError(f"neighbour list error: {error}")
    old = _slots(out.nbrs)
    target = capacity.grown(old, pairs.needed(out.nbrs, out.state.position))
    new = pairs.allocate(state.position, run.extra_capacity)
    if int(new.idx.shape[-1]) < target:
        extra = run.extra_capacity + target - int(new.idx.shape[-1])
        run = run._replace(extra_capacity=extra)
        new = pairs.allocate(state.position, extra)
    logger.warning(
        "neighbour list overflow (capacity %d); reallocated with %d slots, redoing the chunk",
        old,
        _slots(new),
    )
    return new, run


def _finish(run: RunState, chunks: Chunks, config: MDConfig, traj: Path, n_atoms: int) -> MDResult:
    """Write the final status, log how the run ended and what it cost."""
    status = status_dict(run, config.dt)
    write_status(traj.parent, status)
    if run.stopped:
        why = run.stop_detail["message"] if run.stop_detail else run.reason
        logger.warning("MD stopped at step %d (%.1f fs): %s", run.step, run.step * config.dt, why)
    summary = _timing(chunks.times, n_atoms)
    summary |= {"neighbour_slots": chunks.slots, "chunk_programs": chunks.programs}
    logger.info(
        "neighbour list: %d slots per atom; %d chunk program(s)", chunks.slots, chunks.programs
    )
    if summary["us_per_atom_step"] is not None:
        logger.info(
            "%.2f us/atom/step over the steady chunks (compilation %.1f s not included)",
            summary["us_per_atom_step"],
            summary["compile_s"],
        )
    return MDResult(traj, status, summary)


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
