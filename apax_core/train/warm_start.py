"""Warm start: parameters of a base model, with chosen groups re-initialised."""

from __future__ import annotations

import jax

from apax_core.train.optim import group_of

_RESET_GROUPS = {
    "representation": {"representation"},
    "nn": {"nn"},
    "scale_shift": {"scale", "shift"},
}


def warm_start_params(fresh, base, reset: list[str]):
    """Base parameters, except the groups named in ``reset`` which keep their fresh values.

    Fresh scale/shift values come from the new data's statistics, so resetting ``scale_shift``
    adapts the energy reference to the new data.
    """
    reset_groups = set().union(*(_RESET_GROUPS[r] for r in reset)) if reset else set()

    def pick(path, new, old):
        if new.shape != old.shape:
            raise ValueError(
                f"warm start: parameter {jax.tree_util.keystr(path)} has shape {old.shape} in the "
                f"base model but {new.shape} in this config; the model section must match the base"
            )
        return new if group_of(path) in reset_groups else old

    return jax.tree_util.tree_map_with_path(pick, fresh, base)
