"""Optimiser: optax optimiser per parameter group, learning-rate schedules, clipping.

A group with learning rate 0 (or frozen) gets ``optax.set_to_zero``: its parameters stay
bit-identical, with no optimiser state spent on them. The optimisers run at their peak rates;
the schedule's factor multiplies the updates in the train step, where it is an input. Every
optimiser here applies its learning rate last, so this equals a scheduled rate, and one
compiled step serves runs of any length and data size.
"""

from __future__ import annotations

import jax
import numpy as np
import optax

from apax_core.config import (
    CyclicCosineSchedule,
    LinearSchedule,
    OptimizerConfig,
    Schedule,
    optax_optimizer,
)


def group_of(path: tuple) -> str:
    """Parameter group of a leaf from its path in the parameter tree."""
    keys = [getattr(k, "key", str(k)) for k in path]
    if "representation" in keys:
        return "representation"
    if "scale_shift" in keys:
        return keys[-1]  # "scale" or "shift"
    return "nn"


def param_labels(params):
    return jax.tree_util.tree_map_with_path(lambda p, _: group_of(p), params)


def lr_schedule(cfg: Schedule, steps_per_epoch: int, n_epochs: int) -> optax.Schedule:
    """step -> multiplier of the peak learning rates: optax's schedule of ``cfg``, scaled by a
    linear warm-up ramp (step + 1) / warmup_steps over the first ``warmup_epochs``."""
    total = max(steps_per_epoch * n_epochs, 1)
    if isinstance(cfg, LinearSchedule):
        shape = optax.linear_schedule(1.0, cfg.end_factor, total)
    elif isinstance(cfg, CyclicCosineSchedule):
        period = max(round(cfg.period_epochs * steps_per_epoch), 1)
        cycles = [
            optax.cosine_decay_schedule(cfg.decay_factor**c, period)
            for c in range(-(-total // period))
        ]
        shape = optax.join_schedules(cycles, [period * (c + 1) for c in range(len(cycles) - 1)])
    else:
        shape = optax.constant_schedule(1.0)
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if warmup <= 1:
        return shape
    ramp = optax.linear_schedule(1.0 / warmup, 1.0, warmup - 1)
    return lambda step: ramp(step) * shape(step)


def epoch_factors(schedule: optax.Schedule, steps_per_epoch: int, epoch: int) -> np.ndarray:
    """The schedule's learning-rate factors of the steps of ``epoch`` (0-based), one per step:
    a schedule that returns one number for every step (optax's constant) is broadcast."""
    steps = np.arange(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)
    return np.broadcast_to(np.asarray(schedule(steps), dtype=np.float64), steps.shape)


def make_optimizer(
    cfg: OptimizerConfig, frozen: frozenset[str] = frozenset()
) -> optax.GradientTransformation:
    """One optax optimiser per parameter group at its peak rate (the step scales its updates by
    the schedule); a group with rate 0 or in ``frozen`` gets ``set_to_zero``. Optional
    global-norm clipping first."""
    groups = {}
    for group, peak in cfg.learning_rates.model_dump().items():
        if peak == 0.0 or group in frozen:
            groups[group] = optax.set_to_zero()
        else:
            groups[group] = optax_optimizer(cfg.name)(learning_rate=peak, **cfg.kwargs)
    tx = optax.multi_transform(groups, param_labels)
    if cfg.grad_clip is not None:
        tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), tx)
    return tx
