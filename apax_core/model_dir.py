"""The model directory: the one artefact that travels between training, MD, selection and nodes.

    config.yaml       the training spec (its ``model`` section defines the model)
    statistics.json   elements and data statistics the model was built with
    params.msgpack    the parameters consumers use (best validation epoch; EMA weights if enabled)
    calibration.json  optional post-hoc uncertainty calibration factors
    screening.json    the implausible training/validation structures, by index and reason,
                      and the base model's frames this run lacks
    training_set.json the frames it learned from, as hashes (a warm start keeps them)

Paths inside are never absolute, so a moved or copied directory still loads.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import jax
import yaml
from flax import serialization

from apax_core.config import ModelConfig, TrainConfig, validate
from apax_core.errors import MissingInput
from apax_core.files import atomic_write
from apax_core.model import (
    EnergyModel,
    ModelStatistics,
    build_model,
    init_params,
    make_apply,
    make_member_apply,
)
from apax_core.precision import x64
from apax_core.transforms.calibration import Calibration

CONFIG, STATS, PARAMS = "config.yaml", "statistics.json", "params.msgpack"


class Variables(NamedTuple):
    """What a compiled prediction takes besides the structure. Both are inputs, not constants
    of the program, so retrained and recalibrated models of one architecture share it."""

    params: dict
    calibration: Calibration
    """Applied by the predictor as the last results transform (a pytree of two factors)."""


@dataclass(frozen=True)
class Model:
    """A model: its config, statistics, parameters, and the flax module they belong to."""

    config: ModelConfig
    stats: ModelStatistics
    params: dict
    calibration: Calibration = Calibration()
    """Post-hoc factors for the ensemble spreads (calibration.json; 1 if never calibrated)."""

    @property
    def variables(self) -> Variables:
        """The inputs of this model's compiled predictions (every consumer passes these)."""
        return Variables(self.params, self.calibration)

    @cached_property
    def module(self) -> EnergyModel:
        return build_model(self.config, self.stats)

    @cached_property
    def apply(self):
        """(params, dr_vec, Z, idx_j, atom_mask, pair_mask) -> atomic energies (N, M)."""
        return make_apply(self.module)

    @cached_property
    def member_apply(self):
        """Single-member apply on unstacked parameters for a full ensemble; else None."""
        return make_member_apply(self.module)


def save_stats(directory: Path, stats: ModelStatistics) -> None:
    atomic_write(directory / STATS, json.dumps(asdict(stats), indent=2))


def save_config(directory: Path, config: TrainConfig) -> None:
    atomic_write(
        directory / CONFIG, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    )


def save_params(directory: Path, params) -> None:
    atomic_write(directory / PARAMS, serialization.to_bytes(params))


def read_stats(directory: Path) -> ModelStatistics:
    raw = json.loads((directory / STATS).read_text())
    return ModelStatistics(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def load_model(path: str | Path) -> Model:
    """Load a model directory written by training. The only way consumers get a model."""
    directory = Path(path)
    missing = [f for f in (CONFIG, STATS, PARAMS) if not (directory / f).is_file()]
    if missing:
        raise MissingInput(f"{directory} is not a model directory: missing {missing}")
    raw = yaml.safe_load((directory / CONFIG).read_text()) or {}
    config = validate(ModelConfig, raw.get("model", {}), f"{directory / CONFIG} (model section)")
    stats = read_stats(directory)
    module = build_model(config, stats)
    with x64():  # shapes only: initialising for real runs the model eagerly (seconds)
        template = jax.eval_shape(lambda key: init_params(module, key), jax.random.PRNGKey(0))
        params = serialization.from_bytes(template, (directory / PARAMS).read_bytes())
    return Model(config, stats, params, Calibration.load(directory))
