"""Structure generation and splitting: perturbed copies of seeds (plain, or labelled and bounded
by a force ceiling under the reference), random partitions."""

from __future__ import annotations

import contextlib
import functools
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import ase
import numpy as np
from ase.data import chemical_symbols

from apax_core.config import Executor, Serial
from apax_core.data.io import DataError
from apax_core.errors import InputError
from apax_core.labelling import Labeller, forget_calculators, label, task_key, worker_calculator
from apax_core.tasks import TaskStore, run_tasks

log = logging.getLogger(__name__)


Rattle = float | Mapping[str, float]
"""Standard deviation of the Gaussian displacements in A: one number for every atom, or one per
element symbol ({"H": 0.03, "O": 0.05})."""


class Perturbation(NamedTuple):
    """One copy's random draw: a symmetric strain (3, 3), None without one, and Gaussian
    displacements (N, 3) in A. Applied at a scale s: strain s * e, displacements s * d."""

    strain: np.ndarray | None
    displacement: np.ndarray


def check_perturbation(rattle: Rattle, strain: float) -> None:
    """InputError naming the field for a negative, non-finite or non-numeric ``rattle`` (A) or
    ``strain``, or a ``rattle`` key that is no element symbol."""
    per_element = isinstance(rattle, Mapping)
    unknown = [k for k in rattle if k not in chemical_symbols[1:]] if per_element else []
    if unknown:
        raise InputError(f"rattle: {unknown} are no element symbols (keys like 'H', 'O')")
    if not all(map(_is_non_negative, rattle.values() if per_element else [rattle])):
        raise InputError(f"rattle must be non-negative numbers (A), got {rattle}")
    if not _is_non_negative(strain):
        raise InputError(f"strain must be a non-negative number, got {strain}")


def _is_non_negative(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < np.inf


def rattle_scales(atoms: ase.Atoms, rattle: Rattle) -> float | np.ndarray:
    """The standard deviation of each atom's displacements, (N, 1) in A, from a per-element
    ``rattle``; a number stays a number (so a float rattle draws exactly as it always did)."""
    if not isinstance(rattle, Mapping):
        return rattle
    symbols = atoms.get_chemical_symbols()
    missing = sorted(set(symbols) - set(rattle))
    if missing:
        raise InputError(f"rattle has no standard deviation (A) for the elements {missing}")
    return np.array([float(rattle[s]) for s in symbols])[:, None]


def draw_perturbation(
    atoms: ase.Atoms, rng: np.random.Generator, rattle: Rattle, strain: float
) -> Perturbation:
    """A random symmetric strain (|e_ij| <= strain, periodic cells only) and Gaussian
    displacements of standard deviation ``rattle`` (A)."""
    e = None
    if atoms.pbc.any() and strain > 0:
        e = rng.uniform(-strain, strain, size=(3, 3))
        e = 0.5 * (e + e.T)
    d = rng.normal(scale=rattle_scales(atoms, rattle), size=atoms.positions.shape)
    return Perturbation(e, d)


def apply_perturbation(atoms: ase.Atoms, p: Perturbation, scale: float = 1.0) -> ase.Atoms:
    """A copy of ``atoms`` strained by ``scale * p.strain`` (atoms move with the cell), then
    displaced by ``scale * p.displacement``; no calculator."""
    out = atoms.copy()
    out.calc = None
    if p.strain is not None:
        out.set_cell(out.cell.array @ (np.eye(3) + scale * p.strain), scale_atoms=True)
    out.positions += scale * p.displacement
    return out


def draws(
    seeds: Sequence[ase.Atoms], n: int, rattle: Rattle, strain: float, seed: int
) -> list[Perturbation]:
    """The perturbations of ``n`` copies of ``seeds`` (cycled), a pure function of ``seed``."""
    if not seeds:
        raise DataError("no input structures to bootstrap from")
    check_perturbation(rattle, strain)
    rng = np.random.default_rng(seed)
    return [draw_perturbation(seeds[k % len(seeds)], rng, rattle, strain) for k in range(n)]


def bootstrap(
    seeds: Sequence[ase.Atoms], n: int, rattle: Rattle, strain: float, seed: int
) -> list[ase.Atoms]:
    """``n`` perturbed copies of ``seeds`` (cycled), a pure function of ``seed``."""
    ps = draws(seeds, n, rattle, strain, seed)
    return [apply_perturbation(seeds[k % len(seeds)], p) for k, p in enumerate(ps)]


def largest_force(atoms: ase.Atoms) -> float:
    """The largest atomic force norm of a labelled structure (eV/A)."""
    return float(np.linalg.norm(atoms.get_forces(), axis=1).max())


class Reference:
    """A labeller's calculator, this process's one (:func:`worker_calculator`: built once and
    reused by every task of a worker); rebuilt after a failed calculation, since a
    calculator's state after an exception cannot be trusted."""

    def __init__(self, labeller: Labeller) -> None:
        self.labeller = labeller
        self.calc = worker_calculator(labeller)

    def label(self, atoms: ase.Atoms) -> ase.Atoms:
        try:
            return label(atoms, self.calc)
        except Exception:
            forget_calculators()
            self.calc = worker_calculator(self.labeller)
            raise


def bounded_copy(
    atoms: ase.Atoms, p: Perturbation, reference: Reference, max_force: float, max_tries: int
) -> tuple[ase.Atoms | None, dict]:
    """The labelled copy of ``atoms`` perturbed by ``p`` at the largest scale of 1, 1/2, 1/4,
    ... (``max_tries`` labels at most) whose largest force is at most ``max_force`` (eV/A),
    and its record {scale, calls, largest_force}; None and a record with an ``error`` if no
    scale passes. A failed calculation counts as a force too large."""
    record: dict = {}
    for t in range(max_tries):
        record |= {"scale": 0.5**t, "calls": t + 1, "largest_force": None}
        try:
            frame = reference.label(apply_perturbation(atoms, p, record["scale"]))
        except Exception as err:  # noqa: BLE001 - any calculator failure: shrink and retry
            record["error"] = f"{type(err).__name__}: {err}"
            continue
        record["largest_force"] = f = largest_force(frame)
        if f <= max_force:
            record.pop("error", None)
            return frame, record
        record["error"] = f"largest force {f:.3g} eV/A > max_force {max_force} eV/A"
    return None, record


def bounded_bootstrap(
    seeds: Sequence[ase.Atoms],
    n: int,
    rattle: Rattle,
    strain: float,
    seed: int,
    *,
    labeller: Labeller,
    max_force: float,
    max_tries: int = 4,
    relax_steps: int = 0,
    executor: Executor | None = None,
    store_dir: str | Path | None = None,
) -> tuple[list[ase.Atoms], list[dict]]:
    """Labelled copies of ``seeds`` whose largest force is at most ``max_force`` (eV/A).

    Copy k is :func:`bootstrap`'s copy k for the same (n, rattle, strain, seed), labelled by
    ``labeller``; while its largest force exceeds ``max_force``, its strain and displacements
    are halved (same direction) and it is relabelled, up to ``max_tries`` labels. Returns the
    copies that passed and one record per copy {index, seed, scale, calls, largest_force}; a
    copy that never passed has an ``error`` and no frame (logged, never silently dropped).
    With ``relax_steps`` > 0 the seeds are first relaxed under the reference (FIRE, at most
    that many steps, to half of ``max_force``): a liquid built from random molecules starts
    with forces above any sensible ceiling. All input is checked before the first
    calculation; an InputError when no copy passes. For frames of thermal motion instead,
    :func:`apax_core.labelling.reference_md` runs MD with the reference itself.

    The relaxations and the copies run as tasks on ``executor`` (default serial), their
    results kept in ``store_dir`` as they arrive (default: a temporary directory), so a rerun
    after a crash computes only what is missing."""
    check_bounds(max_force, max_tries)
    if not (isinstance(relax_steps, int) and relax_steps >= 0):
        raise InputError(f"relax_steps must be an integer >= 0, got {relax_steps}")
    ps = draws(seeds, n, rattle, strain, seed)
    Reference(labeller)  # a labeller that cannot work fails before any calculation
    with contextlib.ExitStack() as stack:
        if store_dir is None:
            store_dir = stack.enter_context(tempfile.TemporaryDirectory())
        tasks = functools.partial(
            run_tasks, executor=executor or Serial(), store=TaskStore(store_dir)
        )
        if relax_steps:
            jobs = [(labeller, a, relax_steps, max_force / 2) for a in seeds]
            keys = [f"relax{i}-{task_key(labeller, a)}-{relax_steps}" for i, a in enumerate(seeds)]
            seeds = tasks(_relax_task, jobs, keys, desc="relaxing seeds")
        jobs = [
            (labeller, seeds[k % len(seeds)], p, max_force, max_tries) for k, p in enumerate(ps)
        ]
        keys = [f"copy{k}-{_copy_key(job)}" for k, job in enumerate(jobs)]
        results = tasks(_copy_task, jobs, keys, desc="bounded bootstrap")
    frames, records = _kept(results, len(seeds))
    if not frames:
        raise InputError(
            f"bootstrap: none of {n} copies got its largest force below max_force {max_force} "
            "eV/A, even at the smallest scale; relax the seeds (relax_steps) or raise max_force"
        )
    return frames, records


def _kept(results, n_seeds: int) -> tuple[list[ase.Atoms], list[dict]]:
    """The copies that passed and a record of each copy (a failed one logged)."""
    frames, records = [], []
    for k, (frame, record) in enumerate(results):
        records.append({"index": k, "seed": k % n_seeds, **record})
        if frame is None:
            log.warning(
                "bootstrap copy %d failed at scale %g: %s", k, record["scale"], record["error"]
            )
        else:
            frames.append(frame)
    return frames, records


def _relax_task(job) -> ase.Atoms:
    labeller, atoms, max_steps, fmax = job
    return relaxed(atoms, Reference(labeller), max_steps, fmax)


def _copy_task(job) -> tuple[ase.Atoms | None, dict]:
    labeller, atoms, p, max_force, max_tries = job
    return bounded_copy(atoms, p, Reference(labeller), max_force, max_tries)


def _copy_key(job) -> str:
    """What a stored copy must match: the labeller, the copy at scale 1 and the bounds."""
    labeller, atoms, p, max_force, max_tries = job
    return f"{task_key(labeller, apply_perturbation(atoms, p))}-{max_force}-{max_tries}"


def relaxed(atoms: ase.Atoms, reference: Reference, max_steps: int, fmax: float) -> ase.Atoms:
    """``atoms`` after at most ``max_steps`` FIRE steps under the reference (to ``fmax`` eV/A,
    cell fixed); unchanged for 0 steps."""
    if max_steps == 0:
        return atoms
    from ase.optimize import FIRE

    out = atoms.copy()
    out.calc = reference.calc
    FIRE(out, logfile=None).run(fmax=fmax, steps=max_steps)
    log.info("seed relaxed to a largest force of %.3g eV/A", largest_force(out))
    out.calc = None
    return out


def check_bounds(max_force: float, max_tries: int) -> None:
    """InputError naming the field for a non-positive ``max_force`` (eV/A) or ``max_tries``."""
    if not (_is_non_negative(max_force) and max_force > 0):
        raise InputError(f"max_force must be a positive number (eV/A), got {max_force}")
    if not (isinstance(max_tries, int) and not isinstance(max_tries, bool) and max_tries >= 1):
        raise InputError(f"max_tries must be an integer >= 1, got {max_tries}")


def bootstrap_metrics(records: Sequence[dict]) -> dict:
    """Summary of :func:`bounded_bootstrap`'s records: frames, failures, reference calls, the
    largest force of a kept frame (eV/A) and the share of kept frames that were shrunk."""
    kept = [r for r in records if "error" not in r]
    return {
        "n_frames": len(kept),
        "n_failed": len(records) - len(kept),
        "reference_calls": sum(r["calls"] for r in records),
        "largest_force_eV_A": max((r["largest_force"] for r in kept), default=0.0),
        "shrunk_share": sum(r["scale"] < 1 for r in kept) / max(len(kept), 1),
    }


def split_indices(n: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """A random partition of ``range(n)`` into parts of ``floor(f * n)`` indices for all but the
    last fraction; the last part takes the rest. Fractions are non-negative and sum to 1."""
    f = np.asarray(fractions, dtype=float)
    if f.ndim != 1 or len(f) < 2 or np.any(f < 0) or not np.isclose(f.sum(), 1.0):
        raise InputError(f"fractions must be non-negative numbers summing to 1, got {fractions}")
    order = np.random.default_rng(seed).permutation(n)
    sizes = np.floor(f[:-1] * n).astype(int)
    return np.split(order, np.cumsum(sizes))
