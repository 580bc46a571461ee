"""Everything a training run reads, checked before any expensive work starts."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers

from apax_core.config import TrainConfig
from apax_core.data import (
    DataError,
    Structure,
    check_labels,
    energy_residual_rms,
    energy_shift,
    force_scale,
    from_atoms,
    read_frames,
    species_index,
)
from apax_core.model import ModelStatistics
from apax_core.model_dir import Model, load_model


@dataclass(frozen=True)
class TrainingData:
    train: list[Structure]
    val: list[Structure]
    stats: ModelStatistics
    base: Model | None
    """The warm-start base model, if any."""

    def fingerprint(self) -> str:
        """Hash of every array the run learns from: a checkpoint resumes only the same data."""
        h = hashlib.sha256()
        for s in (*self.train, *self.val):
            for a in (s.Z, s.positions, s.cell, s.energy, s.forces, s.stress):
                if a is not None:
                    h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()


def read_structures(path: Path, labels: list[str]) -> list[Structure]:
    structures = [from_atoms(a) for a in read_frames(path)]
    check_labels(structures, labels, str(path))
    return structures


def split(structures: list[Structure], fraction: float, seed: int):
    """Random hold-out of ``fraction`` (at least one structure each side)."""
    if len(structures) < 2:
        raise DataError(
            f"need at least 2 structures to hold out validation data, got {len(structures)}"
        )
    order = np.random.default_rng(seed).permutation(len(structures))
    n_val = min(max(1, round(fraction * len(structures))), len(structures) - 1)
    return [structures[i] for i in order[n_val:]], [structures[i] for i in order[:n_val]]


def data_statistics(structures: list[Structure], elements: tuple[int, ...]) -> ModelStatistics:
    """Per-element energy shift (least squares) and scale (RMS force; energy residual without
    forces)."""
    shift = energy_shift(structures, elements)
    if any(s.forces is not None for s in structures):
        scale = force_scale(structures, elements)
    else:
        scale = np.full(len(elements), energy_residual_rms(structures, elements, shift))
    return ModelStatistics(elements, tuple(map(float, shift)), tuple(map(float, scale)))


def model_elements(config: TrainConfig, structures: list[Structure], base: Model | None):
    if base is not None:
        return base.stats.elements
    if config.model.elements:
        unknown = [s for s in config.model.elements if s not in atomic_numbers]
        if unknown:
            raise DataError(f"model.elements: unknown chemical symbols {unknown}")
        return tuple(sorted(atomic_numbers[s] for s in config.model.elements))
    return tuple(sorted({int(z) for s in structures for z in s.Z}))


def load_training_data(
    config: TrainConfig, structures: tuple[list[Structure], list[Structure] | None] | None = None
) -> TrainingData:
    """Read (or take) the training and validation structures, the base model of a warm start,
    and the statistics; every check that can fail does so here.

    ``structures`` replaces the files named in the config (workflow nodes pass their frames);
    a validation list of None means: hold out ``val_fraction``.
    """
    labels = sorted({t.quantity for t in config.loss} | set(config.data.labels))
    cfg = config.data
    if structures is None:
        train = read_structures(cfg.train_file, labels)
        val = read_structures(cfg.val_file, labels) if cfg.val_file is not None else None
    else:
        train, val = structures
        check_labels(train, labels, str(cfg.train_file))
        if val is not None:
            check_labels(val, labels, str(cfg.val_file or cfg.train_file))
    if val is None:
        train, val = split(train, cfg.val_fraction, cfg.shuffle_seed)

    base = None
    if config.warm_start is not None:
        if not Path(config.warm_start.model).is_dir():
            raise DataError(f"warm_start.model: no model directory at {config.warm_start.model}")
        base = load_model(config.warm_start.model)
        if base.config != config.model:
            mine, theirs = config.model.model_dump(), base.config.model_dump()
            diff = sorted(k for k in mine if mine[k] != theirs[k])
            raise DataError(
                f"warm_start.model: the model section differs from the base model in {diff}; "
                "a warm start continues the same architecture"
            )
    elements = model_elements(config, train + val, base)
    species_index(train, elements, str(cfg.train_file))
    species_index(val, elements, str(cfg.val_file or cfg.train_file))
    if not train or not val:
        raise DataError(f"{cfg.train_file}: no structures to train on")

    if base is None:
        stats = data_statistics(train, elements)
    elif "scale_shift" in config.warm_start.reset:  # new energy reference, same descriptor scales
        fresh = data_statistics(train, elements)
        stats = dataclasses.replace(base.stats, shift=fresh.shift, scale=fresh.scale)
    else:
        stats = base.stats
    return TrainingData(train, val, stats, base)
