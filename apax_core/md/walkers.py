"""Many MD walkers: one trajectory per walker, each from a start structure with its own seed,
run as independent tasks on an executor (:mod:`apax_core.tasks`).

Walker ``k`` starts from ``structures[indices[k % len(indices)]]`` with seed ``config.seed + k``,
in ``directory/walker{k:03d}`` (:data:`~apax_core.md.io.WALKER`). A walker that finished is
stored and never rerun; one that was interrupted continues from its own checkpoint (``run_md``'s
restart), so a rerun after a crash computes only what is missing, whichever executor ran it.

:func:`check_start` holds the checks of a start structure that need no model (no jax-md
either), so a graph, a node and the command line run them before any engine exists.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import ase
import numpy as np

from apax_core.config import Executor, Screening, Serial
from apax_core.config.md import MDConfig, check_dynamics
from apax_core.data.screening import closest_pair
from apax_core.data.structure import from_atoms
from apax_core.errors import InputError
from apax_core.lammps_input import check_engine, check_lammps_start
from apax_core.md.io import WALKER
from apax_core.model_dir import load_model
from apax_core.tasks import Lost, TaskStore, run_tasks

Indices = int | list[int] | Literal["all"]

MIN_DISTANCE = Screening().min_distance
"""Closest approach in A of two atoms of a start structure: the training-data screening limit
(``data.screening.min_distance``); ``MDConfig.allow_close_contacts`` lifts it."""


def check_start(atoms: ase.Atoms, config: MDConfig, name: str) -> None:
    """InputError naming ``name`` unless ``atoms`` can start ``config``'s run: it has atoms, no
    constraints, momenta if they are loaded, a lattice vector for each periodic axis, full
    periodicity under constant pressure and (unless allowed) no two atoms closer than
    :data:`MIN_DISTANCE`. Any cell size and periodicity runs at constant volume."""
    if len(atoms) == 0:
        raise InputError(f"{name} has no atoms")
    if atoms.constraints:
        raise InputError(f"{name}: the MD engine does not apply ASE constraints; remove them")
    if config.load_momenta and not atoms.has("momenta"):
        raise InputError(f"{name}: load_momenta is set but the structure has no momenta")
    pbc = np.asarray(atoms.pbc, bool)
    periodic = atoms.cell.array[pbc]
    if np.linalg.matrix_rank(periodic, tol=1e-6) < len(periodic):
        raise InputError(
            f"{name}: the lattice vectors of the periodic axes {np.flatnonzero(pbc).tolist()} "
            f"are zero or linearly dependent ({np.round(periodic, 4).tolist()} A)"
        )
    try:
        check_dynamics(config.dynamics, pbc, config.dt)
    except InputError as err:
        raise InputError(f"{name}: {err}") from None
    if not config.allow_close_contacts:
        check_contacts(atoms, name)


def check_contacts(atoms: ase.Atoms, name: str) -> None:
    """InputError naming ``name`` and the closest pair (indices, elements, distance) if two
    atoms of ``atoms``, or an atom and its image, are closer than :data:`MIN_DISTANCE`."""
    pair = closest_pair(from_atoms(atoms), MIN_DISTANCE)
    if pair is None:
        return
    i, j, r = pair
    symbols = atoms.get_chemical_symbols()
    who = f"atoms {i} ({symbols[i]}) and {j} ({symbols[j]})"
    if i == j:
        who = f"atom {i} ({symbols[i]}) and its periodic image"
    raise InputError(
        f"{name}: {who} are {r:.3f} A apart, closer than {MIN_DISTANCE:g} A (the training-data "
        "screening limit); fix the structure or set allow_close_contacts: true"
    )


@dataclass(frozen=True)
class Walker:
    number: int
    start: int
    """Index of the start structure."""
    seed: int

    @property
    def name(self) -> str:
        return WALKER.format(self.number)


class BadIndex(InputError, IndexError):
    """A start-structure index out of range: bad input (one line), also an IndexError."""


def plan_walkers(n_structures: int, indices: Indices, n_walkers: int | None, seed: int):
    """The walkers: ``indices`` (one, a list, or "all") cycled to ``n_walkers`` (default: one
    walker per index), seeds ``seed + k``. Indices may be negative (from the end)."""
    if isinstance(indices, str) and indices != "all":
        raise InputError(f'indices: "all", an index or a list of indices, got {indices!r}')
    if indices == "all":
        chosen = list(range(n_structures))
    else:
        chosen = [indices] if isinstance(indices, int) else list(indices)
    if not chosen:
        raise InputError("indices: no start structure chosen")
    bad = [i for i in chosen if not -n_structures <= i < n_structures]
    if bad:
        raise BadIndex(f"indices: {bad} out of range for {n_structures} start structures")
    n = len(chosen) if n_walkers is None else n_walkers
    if n < 1:
        raise InputError(f"n_walkers must be at least 1, got {n}")
    return [Walker(k, chosen[k % len(chosen)] % n_structures, seed + k) for k in range(n)]


@dataclass(frozen=True)
class WalkerJob:
    """Everything a worker needs (picklable): the model as a directory, not as arrays."""

    model_dir: str
    atoms: ase.Atoms
    config: MDConfig
    directory: str
    progress_bar: bool
    engine: str = "jax"
    """Who integrates: our JAX engine or LAMMPS (:mod:`apax_core.lammps_md`)."""


@functools.lru_cache(maxsize=2)
def _model(path: str, stamp: tuple):
    """One loaded model per directory and content stamp in a worker process: walkers of the
    same system then share one compiled engine."""
    return load_model(path)


def _stamp(path: Path) -> tuple:
    return tuple(sorted((f.name, f.stat().st_mtime_ns) for f in path.iterdir() if f.is_file()))


def walker_task(job: WalkerJob) -> dict:
    """Run (or continue) one walker; its status plus the steady cost in us/atom/step, the
    neighbour list's slots per atom and the chunk programs it needed."""
    model = _model(job.model_dir, _stamp(Path(job.model_dir)))
    if job.engine == "lammps":
        from apax_core.lammps_md import run_lammps_md

        return run_lammps_md(model, job.atoms, job.config, job.directory)
    from apax_core.md.run import run_md

    result = run_md(model, job.atoms, job.config, job.directory, progress_bar=job.progress_bar)
    keep = ("us_per_atom_step", "neighbour_slots", "chunk_programs")
    return {**result.status, **{k: result.timing[k] for k in keep}}


def run_walkers(
    model_dir: str | Path,
    structures: list[ase.Atoms],
    config: MDConfig,
    directory: str | Path,
    executor: Executor | None = None,
    *,
    indices: Indices = -1,
    n_walkers: int | None = None,
    engine: str = "jax",
) -> list[tuple[Walker, dict]]:
    """Every walker's status (a lost walker: ``stopped`` with reason ``lost: ...``), in walker
    order; trajectories are in ``directory/<walker.name>/md.h5``. ``engine``: ``jax`` (ours)
    or ``lammps`` (:func:`~apax_core.lammps_input.check_engine`). Every walker's input is
    checked before the first one starts."""
    from apax_core.md.run import run_identity, validate

    check_engine(engine, config)
    directory, model_dir = Path(directory), Path(model_dir).resolve()
    executor = executor or Serial()
    walkers = plan_walkers(len(structures), indices, n_walkers, config.seed)
    model = _model(str(model_dir), _stamp(model_dir))
    jobs, keys = [], []
    for w in walkers:
        atoms, spec = structures[w.start], config.model_copy(update={"seed": w.seed})
        validate(model, atoms, spec, name=f"start structure {w.start}")
        identity = run_identity(spec, atoms, model)
        if engine != "jax":
            check_lammps_start(atoms, f"start structure {w.start}")
            identity["engine"] = engine
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        keys.append(f"{w.name}-{digest[:24]}")
        show = isinstance(executor, Serial) and len(walkers) == 1
        jobs.append(WalkerJob(str(model_dir), atoms, spec, str(directory / w.name), show, engine))
    results = run_tasks(walker_task, jobs, keys, executor, TaskStore(directory / "done"), "md")
    return [
        (w, _lost(r) if isinstance(r, Lost) else r) for w, r in zip(walkers, results, strict=True)
    ]


def _lost(result: Lost) -> dict:
    return {
        "stopped": True,
        "reason": f"lost: {result.error}",
        "step": 0,
        "time_fs": 0.0,
        "n_frames": 0,
    }


def summary(statuses: list[dict]) -> dict:
    """The status of a set of walkers: how many stopped early and why, the total frames and
    simulated time; ``stopped``/``reason`` say whether any stopped and the commonest reason."""
    reasons = Counter(s["reason"] for s in statuses if s["stopped"])
    return {
        "n_walkers": len(statuses),
        "n_stopped": sum(reasons.values()),
        "stopped": bool(reasons),
        "reason": reasons.most_common(1)[0][0] if reasons else None,
        "reasons": dict(reasons),
        "n_frames": sum(s["n_frames"] for s in statuses),
        "time_fs": sum(s["time_fs"] for s in statuses),
        "step": max(s["step"] for s in statuses),
    }
