"""Typed configuration: validated once at the edge, typed objects below.

Every pluggable choice is a discriminated union keyed by ``kind``; every section forbids unknown
keys, so a misspelt option is an error, not a silently ignored default. One file per section.
"""

from apax_core.config.common import ConfigError, Strict, format_errors, load_config
from apax_core.config.train import (
    ConstantSchedule,
    CyclicCosineSchedule,
    DataConfig,
    EMAConfig,
    Ensemble,
    FullEnsemble,
    GMNNConfig,
    Group,
    Label,
    LearningRates,
    LinearSchedule,
    LossTerm,
    ModelConfig,
    OptimizerConfig,
    PadBinned,
    Padding,
    PadToMax,
    Schedule,
    ShallowEnsemble,
    TrainConfig,
    WarmStart,
    ZBLConfig,
    default_loss,
    optax_optimizer,
)

__all__ = [
    "ConfigError",
    "Strict",
    "format_errors",
    "load_config",
    "ConstantSchedule",
    "CyclicCosineSchedule",
    "DataConfig",
    "EMAConfig",
    "Ensemble",
    "FullEnsemble",
    "GMNNConfig",
    "Group",
    "Label",
    "LearningRates",
    "LinearSchedule",
    "LossTerm",
    "ModelConfig",
    "OptimizerConfig",
    "PadBinned",
    "PadToMax",
    "Padding",
    "Schedule",
    "ShallowEnsemble",
    "TrainConfig",
    "WarmStart",
    "ZBLConfig",
    "default_loss",
    "optax_optimizer",
]
