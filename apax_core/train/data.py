"""Everything a training run reads, checked before any expensive work starts."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers
from flax import serialization

from apax_core.config import TrainConfig, WarmStart
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
from apax_core.data.screening import listing, screen, structure_key
from apax_core.model import ModelStatistics
from apax_core.model_dir import Model, load_model

log = logging.getLogger(__name__)

TRAINING_SET = "training_set.json"
"""The model directory's record of the frames it learned from: {"train": keys, "val": keys}
(see :func:`apax_core.data.screening.structure_key`), read back by a warm start."""


@dataclass(frozen=True)
class TrainingData:
    train: list[Structure]
    val: list[Structure]
    stats: ModelStatistics
    base: Model | None
    """The warm-start base model, if any."""
    flagged: dict[str, dict[int, str]] = dataclasses.field(default_factory=dict)
    """Implausible structures per source name: index in that source -> reason."""
    missing: tuple[str, ...] = ()
    """Frames the base model learned from that this run lacks ("train 3": its training
    structure 3), whatever removed them."""

    def training_set(self) -> dict[str, list[str]]:
        """The :data:`TRAINING_SET` record of this run."""
        return {name: [structure_key(s) for s in part] for name, part in self.parts().items()}

    def parts(self) -> dict[str, list[Structure]]:
        return {"train": self.train, "val": self.val}

    def fingerprint(self) -> str:
        """Hash of every array the run learns from (structures and the base model's parameters,
        never its path): a checkpoint resumes only the same data."""
        h = hashlib.sha256()
        for s in (*self.train, *self.val):
            for a in (s.Z, s.positions, s.cell, s.energy, s.forces, s.stress):
                if a is not None:
                    h.update(np.ascontiguousarray(a).tobytes())
        if self.base is not None:
            h.update(serialization.to_bytes(self.base.params))
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


Source = Path | str | Sequence[Structure]
"""Structures, or a file to read them from."""


def structures_of(source: Source, labels: list[str], name: str) -> tuple[list[Structure], str]:
    """The structures of ``source`` with their labels checked, and a name for messages."""
    if isinstance(source, str | Path):
        return read_structures(Path(source), labels), str(source)
    structures = list(source)
    check_labels(structures, labels, name)
    return structures, name


def base_model(path: Path, config: TrainConfig) -> Model:
    """The warm-start base model; its architecture must be the spec's."""
    if not Path(path).is_dir():
        raise DataError(f"base model: no model directory at {path}")
    base = load_model(path)
    if base.config != config.model:
        mine, theirs = config.model.model_dump(), base.config.model_dump()
        diff = sorted(k for k in mine if mine[k] != theirs[k])
        raise DataError(
            f"base model {path}: the model section differs from the base model in {diff}; "
            "a warm start continues the same architecture"
        )
    return base


def load_training_data(
    config: TrainConfig, train: Source, val: Source | None = None, base: Path | None = None
) -> TrainingData:
    """Read (or take) the training and validation structures, the warm-start base model and
    the statistics; every check that can fail does so here.

    A ``val`` of None means: hold out ``data.val_fraction`` of the training structures.
    """
    if config.warm_start is not None and base is None:
        raise DataError("warm_start is set but the run has no base model to start from")
    before = {} if base is None else base_training_set(Path(base))
    trained = {k for keys in before.values() for k in keys}
    labels = sorted({t.quantity for t in config.loss} | set(config.data.labels))
    train, train_name = structures_of(train, labels, "training data")
    train, flagged = screen(train, config.data.screening, train_name, trained)
    flagged = {train_name: flagged}
    if val is None:
        train, val = split(train, config.data.val_fraction, config.data.shuffle_seed)
        val_name = train_name
    else:
        val, val_name = structures_of(val, labels, "validation data")
        val, flagged[val_name] = screen(val, config.data.screening, val_name, trained)
    base = None if base is None else base_model(base, config)
    elements = model_elements(config, train, base)  # validation may not add elements
    species_index(train, elements, train_name)
    species_index(val, elements, val_name)
    if not train or not val:
        raise DataError(f"{train_name}: no structures to train on")
    warm = config.warm_start or WarmStart()
    if base is None:
        stats = data_statistics(train, elements)
    elif "scale_shift" in warm.reset:  # new energy reference, same descriptor scales
        fresh = data_statistics(train, elements)
        stats = dataclasses.replace(base.stats, shift=fresh.shift, scale=fresh.scale)
    else:
        stats = base.stats
    return TrainingData(train, val, stats, base, flagged, missing_frames(before, train + val))


def base_training_set(directory: Path) -> dict[str, list[str]]:
    """The base model's :data:`TRAINING_SET` record ({} for models written before it)."""
    path = directory / TRAINING_SET
    return json.loads(path.read_text()) if path.is_file() else {}


def missing_frames(before: dict[str, list[str]], now: Sequence[Structure]) -> tuple[str, ...]:
    """The frames of ``before`` (a base model's record) that ``now`` lacks, warned about by
    name: a loop's training set changing between iterations is never silent."""
    present = {structure_key(s) for s in now}
    missing = tuple(
        f"{name} {k}"
        for name, keys in before.items()
        for k, key in enumerate(keys)
        if key not in present
    )
    if missing:
        log.warning(
            "%d frames the base model learned from are not in this run's data: %s "
            "(its training-set indices; see data.screening.keep_trained)",
            len(missing),
            listing(missing),
        )
    return missing
