"""Training state and its checkpoint: everything needed to continue a run exactly."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flax import serialization, struct

from apax_core.files import atomic_write

LATEST = "latest.msgpack"
log = logging.getLogger(__name__)


@struct.dataclass
class TrainState:
    """Parameters, optimiser state, EMA weights and the bookkeeping of a run."""

    params: Any
    opt_state: Any
    ema: Any
    best: Any
    """The saved (validated) parameters of the best epoch so far: a resumed run can restore
    the model directory's outputs from the checkpoint alone."""
    epoch: int = struct.field(pytree_node=False, default=0)
    """Epochs completed."""
    best_loss: float = struct.field(pytree_node=False, default=float("inf"))
    best_epoch: int = struct.field(pytree_node=False, default=-1)
    log: tuple = struct.field(pytree_node=False, default=())
    """One dict of metrics per completed epoch."""


def save_checkpoint(directory: Path, state: TrainState, run_id: str) -> None:
    payload = {
        "run_id": run_id,
        "arrays": serialization.to_state_dict(
            {
                "params": state.params,
                "opt_state": state.opt_state,
                "ema": state.ema,
                "best": state.best,
            }
        ),
        "epoch": state.epoch,
        "best_loss": state.best_loss,
        "best_epoch": state.best_epoch,
        "log": list(state.log),
    }
    atomic_write(directory / LATEST, serialization.msgpack_serialize(payload))


def load_checkpoint(directory: Path, template: TrainState, run_id: str) -> TrainState | None:
    """The latest checkpoint restored into ``template``'s structure; None if there is none or it
    belongs to another run (other config or data): that one is not resumed."""
    path = directory / LATEST
    if not path.is_file():
        return None
    payload = serialization.msgpack_restore(path.read_bytes())
    if payload.get("run_id") != run_id:
        log.warning("%s belongs to another config, data set or layout; starting afresh", path)
        return None
    arrays = serialization.from_state_dict(
        {
            "params": template.params,
            "opt_state": template.opt_state,
            "ema": template.ema,
            "best": template.best,
        },
        payload["arrays"],
    )
    return template.replace(
        **arrays,
        epoch=int(payload["epoch"]),
        best_loss=float(payload["best_loss"]),
        best_epoch=int(payload["best_epoch"]),
        log=tuple(payload["log"]),
    )
