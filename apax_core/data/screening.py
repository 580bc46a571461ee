"""Implausible labelled structures: overlapping atoms, and energies or forces far outside the
data's own distribution. One such frame (a labeller's failure, an exploded MD frame) can
inflate the per-element scale many times and spoil a whole training run."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

import numpy as np

from apax_core.data.io import DataError
from apax_core.data.neighbours import neighbour_list
from apax_core.data.statistics import energy_residuals, energy_shift
from apax_core.data.structure import Structure

if TYPE_CHECKING:
    from apax_core.config import Screening

logger = logging.getLogger(__name__)

MAD_TO_SIGMA = 1.4826
"""Median absolute deviation of a normal distribution times this is its standard deviation."""


def closest_pair(structure: Structure, min_distance: float) -> tuple[int, int, float] | None:
    """(i, j, distance in A) of the closest two atoms (or an atom and an image of itself,
    i == j) closer than ``min_distance`` (A), or None if there are none (or the check is off,
    ``min_distance`` 0)."""
    if min_distance <= 0:
        return None
    nl = neighbour_list(structure, min_distance)
    if not nl.n_pairs:
        return None
    r = structure.positions[nl.idx_j] - structure.positions[nl.idx_i] + nl.offsets
    k = int(np.argmin(np.linalg.norm(r, axis=1)))
    return int(nl.idx_i[k]), int(nl.idx_j[k]), float(np.linalg.norm(r[k]))


def overlapping(structures: Sequence[Structure], min_distance: float) -> list[int]:
    """Indices of the structures with two atoms (or an atom and an image) closer than
    ``min_distance``."""
    return [k for k, s in enumerate(structures) if closest_pair(s, min_distance) is not None]


def robust_z(values: np.ndarray) -> np.ndarray:
    """(v - median) / (1.4826 MAD); zero everywhere when the MAD vanishes (constant data)."""
    values = np.asarray(values, dtype=np.float64)
    median = np.median(values)
    sigma = MAD_TO_SIGMA * np.median(np.abs(values - median))
    return (values - median) / sigma if sigma > 0 else np.zeros_like(values)


def energy_outliers(structures: Sequence[Structure], z_max: float) -> list[int]:
    """Indices whose per-atom energy, after the least-squares per-element shift, lies more than
    ``z_max`` robust sigmas from the median."""
    labelled = [k for k, s in enumerate(structures) if s.energy is not None]
    if not labelled:
        return []
    subset = [structures[k] for k in labelled]
    elements = sorted({int(z) for s in subset for z in s.Z})
    residual = energy_residuals(subset, elements, energy_shift(subset, elements))
    return [labelled[k] for k in np.flatnonzero(np.abs(robust_z(residual)) > z_max)]


def force_outliers(structures: Sequence[Structure], z_max: float) -> list[int]:
    """Indices whose largest atomic force norm lies more than ``z_max`` robust sigmas above the
    median of all structures' largest norms (only the high side: small forces are plausible)."""
    labelled = [k for k, s in enumerate(structures) if s.forces is not None and s.n_atoms]
    if not labelled:
        return []
    peak = np.array([np.linalg.norm(structures[k].forces, axis=1).max() for k in labelled])
    return [labelled[k] for k in np.flatnonzero(robust_z(peak) > z_max)]


def implausible(structures: Sequence[Structure], config: Screening) -> dict[int, str]:
    """Flagged structure index -> reason(s), in index order."""
    z = config.max_robust_z
    checks = [
        (
            overlapping(structures, config.min_distance),
            f"atoms closer than {config.min_distance:g} A",
        )
    ]
    if len(structures) >= config.min_structures:
        checks += [
            (energy_outliers(structures, z), f"energy per atom beyond {z:g} robust sigma"),
            (force_outliers(structures, z), f"largest force beyond {z:g} robust sigma"),
        ]
    reasons: dict[int, list[str]] = {}
    for indices, reason in checks:
        for k in indices:
            reasons.setdefault(k, []).append(reason)
    return {k: "; ".join(reasons[k]) for k in sorted(reasons)}


def structure_key(structure: Structure) -> str:
    """A short hash of what makes a frame itself (elements, positions, cell): how a warm start
    recognises the frames its base model learned from."""
    h = hashlib.sha256()
    for a in (structure.Z, structure.positions, structure.cell):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def listing(items: Sequence[str], limit: int = 10) -> str:
    """The first ``limit`` items, comma-separated, and how many more there are."""
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _listing(flagged: dict[int, str]) -> str:
    return listing([f"{k} ({why})" for k, why in flagged.items()])


def screen(
    structures: Sequence[Structure],
    config: Screening,
    source: str,
    trained: Collection[str] = (),
) -> tuple[list[Structure], dict[int, str]]:
    """The structures to use and the flagged ones (index -> reason): flagged structures are
    logged by index, then dropped, kept, or raised as a DataError, as ``config.action`` says.

    A flagged structure whose :func:`structure_key` is in ``trained`` (the base model of a warm
    start learned from it) is kept when ``config.keep_trained``: the data a loop has trained on
    does not move because new frames shifted the statistics."""
    flagged = implausible(structures, config)
    if not flagged:
        return list(structures), {}
    if config.keep_trained and trained:
        known = {k for k in flagged if structure_key(structures[k]) in trained}
        if known:
            stay = {k: flagged[k] for k in sorted(known)}
            logger.warning(
                "%s: kept, as the base model learned from them: %s", source, _listing(stay)
            )
        drop = {k: why for k, why in flagged.items() if k not in known}
    else:
        drop = flagged
    if drop:
        text = f"{source}: implausible structures {_listing(drop)}"
        if config.action == "error":
            raise DataError(f"{text}; set data.screening.action to 'drop' or 'keep' to go on")
        logger.warning("%s; %s", text, "dropped" if config.action == "drop" else "kept")
    if config.action == "keep":
        return list(structures), flagged
    return [s for k, s in enumerate(structures) if k not in drop], flagged
