"""Neighbour-list capacity: sized once for the run's hottest temperature, remembered when it grows.

Every capacity K is a new shape of the MD chunk, so a new compilation (seconds to tens of seconds
on a CPU), and an overflow runs the chunk twice. A list sized on the start structure (a perfect
crystal, say) overflows as soon as the thermal motion brings the next shell inside the cutoff.
So before the first chunk the list is sized on thermally displaced copies of the start: Einstein
displacements, independent Gaussians of variance kT / (m omega^2) per axis at the schedule's
highest temperature, with omega = 2 pi x 5 THz (a typical phonon frequency; Cu at 600 K gets
0.09 A, close to its measured Debye-Waller displacement), the largest count of any atom over
``N_SAMPLES`` copies. A capacity that still had to grow is remembered, keyed by the system and the
list, in ``md_capacity.json`` inside the compilation cache's directory
(:mod:`apax_core.compilation_cache`; in this process only where the cache is off), so the next
walker and the next iteration's MD stage start with it and hit the cached program. Only runs
that ended well teach: one stopped by a check (or a blow-up, whose counts explode) does not.

The capacity changes the cost, not the physics: padded slots are masked pairs (two capacities
give the same trajectory up to the round-off of the sums' order).
"""

from __future__ import annotations

import hashlib
import json
import math

import ase
import numpy as np

from apax_core import compilation_cache
from apax_core.config.md import (
    ConstantTemperature,
    MDConfig,
    OscillatingTemperature,
    PiecewiseTemperature,
)
from apax_core.files import atomic_write

OMEGA_THZ = 5.0
"""Einstein frequency of the thermal probe (THz)."""
N_SAMPLES = 8
"""Thermally displaced copies the capacity is sized on."""
FILE = "md_capacity.json"
_MEMORY: dict[str, int] = {}
"""Capacities remembered in this process (also where the compilation cache is off)."""

_KB_EV = 8.617333262e-5
_AMU_A2_PER_FS2_IN_EV = 103.642697  # 1 amu A^2 / fs^2 in eV


def hottest(config: MDConfig) -> float:
    """The highest target temperature (K) of the run's schedule."""
    schedule = config.temperature
    if isinstance(schedule, ConstantTemperature):
        return schedule.T
    if isinstance(schedule, PiecewiseTemperature):
        return max(schedule.temperatures)
    if isinstance(schedule, OscillatingTemperature):
        return schedule.T_high
    raise TypeError(f"unknown temperature schedule {schedule!r}")


def thermal_sigma(masses: np.ndarray, T: float) -> np.ndarray:
    """(N,) Einstein RMS displacement per axis (A) of atoms with ``masses`` (amu) at ``T`` (K)."""
    omega = 2.0 * np.pi * OMEGA_THZ * 1e-3  # rad / fs
    stiffness = np.asarray(masses, float) * omega**2 * _AMU_A2_PER_FS2_IN_EV  # eV / A^2
    return np.sqrt(_KB_EV * T / stiffness)


def thermal_count(count, atoms: ase.Atoms, T: float, seed: int = 0) -> int:
    """The largest neighbour count of any atom over ``N_SAMPLES`` thermally displaced copies of
    ``atoms`` and ``atoms`` itself; ``count(positions) -> int`` counts at Cartesian (N, 3)."""
    rng = np.random.default_rng(seed)
    sigma = thermal_sigma(atoms.get_masses(), T)[:, None]
    counts = [count(atoms.positions)]
    for _ in range(N_SAMPLES):
        counts.append(count(atoms.positions + sigma * rng.standard_normal(atoms.positions.shape)))
    return max(counts)


def slots(count: int, multiplier: float) -> int:
    """Slots per atom a list gets for ``count`` neighbours (the lists' own rule)."""
    return max(1, int(count * multiplier))


def key(kind: str, atoms: ase.Atoms, config: MDConfig, r_max: float) -> str:
    """What a remembered capacity belongs to: list kind, cutoff, multiplier, the hottest
    temperature and the system (numbers, cell, periodicity; not the positions)."""
    cutoff, mult = r_max + config.skin, config.capacity_multiplier
    h = hashlib.sha256(f"{kind}|{cutoff:.6f}|{mult:.6f}|{hottest(config):.1f}".encode())
    h.update(np.asarray(atoms.numbers, np.int64).tobytes())
    h.update(np.round(np.asarray(atoms.cell.array, float), 6).tobytes())
    h.update(np.asarray(atoms.pbc, bool).tobytes())
    return h.hexdigest()[:24]


def remembered(name: str) -> int:
    """The capacity remembered under ``name`` (0 if none)."""
    path = _path()
    saved = _read(path).get(name, 0) if path is not None else 0
    return max(saved, _MEMORY.get(name, 0))


def remember(name: str, capacity: int) -> None:
    """Remember ``capacity`` under ``name`` unless as much is remembered (file written whole)."""
    _MEMORY[name] = max(capacity, _MEMORY.get(name, 0))
    path = _path()
    if path is None:
        return
    saved = _read(path)
    if saved.get(name, 0) >= capacity:
        return
    saved[name] = capacity
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(saved, indent=1, sort_keys=True))


def _path():
    directory = compilation_cache.cache_dir()
    return None if directory is None else directory / FILE


def _read(path) -> dict[str, int]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: int(v) for k, v in data.items()} if isinstance(data, dict) else {}


def grown(old: int, needed: int) -> int:
    """A capacity after an overflow of ``old`` slots where ``needed`` were met: at least 1.1 x the
    old one, so repeated overflows (each recompiles) stay rare."""
    return max(math.ceil(1.1 * old), needed)
