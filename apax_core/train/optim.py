"""Optimiser: optax optimiser per parameter group, learning-rate schedules, clipping.

A group with learning rate 0 (or frozen) gets ``optax.set_to_zero``: its parameters stay
bit-identical, with no optimiser state spent on them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
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
        return "radial"
    if "scale_shift" in keys:
        return keys[-1]  # "scale" or "shift"
    return "nn"


def param_labels(params):
    return jax.tree_util.tree_map_with_path(lambda p, _: group_of(p), params)


def schedule_factor(cfg: Schedule, steps_per_epoch: int, n_epochs: int):
    """step -> multiplier of the peak learning rates."""
    total = max(steps_per_epoch * n_epochs, 1)
    warmup = cfg.warmup_epochs * steps_per_epoch

    def factor(step):
        step = jnp.asarray(step, jnp.float32)
        ramp = jnp.minimum(1.0, (step + 1.0) / warmup) if warmup > 0 else 1.0
        if isinstance(cfg, LinearSchedule):
            shape = 1.0 + (cfg.end_factor - 1.0) * jnp.minimum(step / total, 1.0)
        elif isinstance(cfg, CyclicCosineSchedule):
            epoch = step / steps_per_epoch
            cycle = jnp.floor(epoch / cfg.period_epochs)
            phase = epoch / cfg.period_epochs - cycle
            shape = cfg.decay_factor**cycle * 0.5 * (1.0 + jnp.cos(jnp.pi * phase))
        else:
            shape = 1.0
        return ramp * shape

    return factor


def make_optimizer(
    cfg: OptimizerConfig, steps_per_epoch: int, n_epochs: int, frozen: frozenset[str] = frozenset()
) -> optax.GradientTransformation:
    factor = schedule_factor(cfg.schedule, steps_per_epoch, n_epochs)
    rates = cfg.learning_rates.model_dump()
    groups = {}
    for group, peak in rates.items():
        if peak == 0.0 or group in frozen:
            groups[group] = optax.set_to_zero()
        else:
            lr = lambda step, peak=peak: peak * factor(step)  # noqa: E731
            groups[group] = optax_optimizer(cfg.name)(learning_rate=lr, **cfg.kwargs)
    tx = optax.multi_transform(groups, param_labels)
    if cfg.grad_clip is not None:
        tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), tx)
    return tx
