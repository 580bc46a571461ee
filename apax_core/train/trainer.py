"""The training loop: jitted steps, validation each epoch, CSV log, best/latest checkpoints,
exact resume, early stopping, warm start.

Resume is exact because the only state a run has is in the checkpoint (parameters, optimiser
state, EMA weights, log) and the batch order of epoch k depends only on (seed, k).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from apax_core.config import FullEnsemble, TrainConfig
from apax_core.data import Dataset, Structure, prefetch
from apax_core.files import atomic_write
from apax_core.model import build_model, init_params, make_apply, make_member_apply
from apax_core.model_dir import save_config, save_params, save_stats
from apax_core.precision import with_x64
from apax_core.train.data import load_training_data
from apax_core.train.losses import total_loss
from apax_core.train.metrics import accumulate, error_sums, finalize
from apax_core.train.optim import make_optimizer, schedule_factor
from apax_core.train.state import TrainState, load_checkpoint, save_checkpoint
from apax_core.train.warm_start import warm_start_params
from apax_core.transforms import batched, energy_forces_stress, ensemble_predict

log = logging.getLogger(__name__)


def prediction_fn(config: TrainConfig, apply, member_apply, stress: bool):
    """(params, structure) -> predictions with exactly what the loss terms need.

    Member forces (the expensive jacobian, eq. 6 right) only for a full ensemble or a
    probabilistic force/stress term; otherwise the gradient of the mean energy.
    """
    ens = config.model.ensemble
    members_needed = isinstance(ens, FullEnsemble) or any(
        t.probabilistic and t.quantity != "energy" for t in config.loss
    )
    if ens is None:
        return lambda p, s: energy_forces_stress(apply, p, s, stress=stress)
    chunk = getattr(ens, "chunk_size", None)
    return lambda p, s: ensemble_predict(
        apply,
        p,
        s,
        member_apply=member_apply,
        chunk_size=chunk,
        force_uncertainty=members_needed,
        stress=stress,
    )


def make_steps(apply, member_apply, config: TrainConfig, tx, labels: tuple[str, ...]):
    """Jitted train and eval steps for one model and objective."""
    predict = batched(prediction_fn(config, apply, member_apply, "stress" in labels))
    per_member = isinstance(config.model.ensemble, FullEnsemble)

    def loss_fn(params, batch):
        pred = predict(params, batch)
        return total_loss(config.loss, pred, batch, per_member=per_member), pred

    @jax.jit
    def train_step(params, opt_state, ema, ema_decay, batch):
        (loss, pred), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        # e + (1 - d)(p - e) leaves a frozen (unchanged) parameter bit-identical.
        ema = jax.tree.map(lambda e, p: e + (1.0 - ema_decay) * (p - e), ema, params)
        return params, opt_state, ema, loss, error_sums(pred, batch, labels)

    @jax.jit
    def eval_step(params, batch):
        loss, pred = loss_fn(params, batch)
        return loss, error_sums(pred, batch, labels)

    return train_step, eval_step


def _n_real(batch) -> int:
    return int(np.sum(batch.n_atoms > 0))


def evaluate_loss(eval_step, params, data: Dataset, config: TrainConfig) -> dict[str, float]:
    """Validation loss (mean over structures) and metrics with ``params``."""
    total, loss_sum, n = None, 0.0, 0
    for batch in data.batches(
        config.data.val_batch_size, config.data.padding, shuffle=False, seed=0
    ):
        loss, sums = eval_step(params, batch)
        k = _n_real(batch)
        loss_sum, n = loss_sum + float(loss) * k, n + k
        total = accumulate(total, sums)
    return {"val_loss": loss_sum / max(n, 1), **finalize(total, "val_")}


def write_log(directory: Path, rows: tuple[dict, ...]) -> None:
    if not rows:
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(directory / "log.csv", buf.getvalue())


@with_x64
def train(
    config: TrainConfig,
    *,
    checkpoint_dir: Path | None = None,
    structures: tuple[list[Structure], list[Structure] | None] | None = None,
) -> Path:
    """Train (or resume training) and return the model directory.

    ``checkpoint_dir`` (default: inside the model directory) holds the resume state; a workflow
    keeps it where a rerun finds it. ``structures`` (train, val) replace the config's files.
    """
    directory = Path(config.directory)
    checkpoint_dir = Path(checkpoint_dir or directory / "checkpoint")
    data = load_training_data(config, structures)  # every input error is raised here
    train_ds = Dataset(data.train, config.model.r_max)
    val_ds = Dataset(data.val, config.model.r_max)

    stats = data.stats
    model = build_model(config.model, stats)
    params = init_params(model, jax.random.PRNGKey(config.seed))
    frozen: frozenset[str] = frozenset()
    if data.base is not None:
        params = warm_start_params(params, data.base.params, config.warm_start.reset)
        frozen = frozenset(config.warm_start.freeze)

    bs = config.data.batch_size
    steps_per_epoch = train_ds.n_batches(bs)
    tx = make_optimizer(config.optimizer, steps_per_epoch, config.n_epochs, frozen)
    state = TrainState(params=params, opt_state=tx.init(params), ema=params)
    run_id = run_identity(config, data)
    resumed = load_checkpoint(checkpoint_dir, state, run_id)
    if resumed is not None:
        log.info("resuming %s after epoch %d", directory, resumed.epoch)
        state = resumed
    save_config(directory, config)
    save_stats(directory, stats)

    labels = tuple(sorted({t.quantity for t in config.loss} | set(config.data.labels)))

    train_step, eval_step = make_steps(
        make_apply(model), make_member_apply(model), config, tx, labels
    )
    lr_factor = schedule_factor(config.optimizer.schedule, steps_per_epoch, config.n_epochs)
    ema = config.ema

    epochs = range(state.epoch, config.n_epochs)
    bar = tqdm(
        epochs,
        desc="train",
        unit="epoch",
        disable=not config.progress_bar,
        initial=state.epoch,
        total=config.n_epochs,
    )
    for epoch in bar:
        if config.patience is not None and epoch - 1 - state.best_epoch >= config.patience:
            log.info("early stop: no improvement for %d epochs", config.patience)
            break
        start = time.perf_counter()
        decay = jnp.asarray(ema.decay if ema and epoch >= ema.start_epoch else 0.0)
        p, o, e = state.params, state.opt_state, state.ema
        total, loss_sum, n = None, 0.0, 0
        batches = train_ds.batches(
            bs, config.data.padding, shuffle=True, seed=config.data.shuffle_seed, epoch=epoch
        )
        for batch in prefetch(batches, config.data.prefetch):
            p, o, e, loss, sums = train_step(p, o, e, decay, batch)
            k = _n_real(batch)
            loss_sum, n = loss_sum + float(loss) * k, n + k
            total = accumulate(total, sums)
        eval_params = e if ema else p
        row = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(n, 1),
            **evaluate_loss(eval_step, eval_params, val_ds, config),
            **finalize(total, "train_"),
            "lr_nn": config.optimizer.learning_rates.nn
            * float(lr_factor((epoch + 1) * steps_per_epoch - 1)),
            "epoch_s": time.perf_counter() - start,
        }
        if not (np.isfinite(row["train_loss"]) and np.isfinite(row["val_loss"])):
            raise FloatingPointError(
                f"training diverged in epoch {epoch + 1} (train loss {row['train_loss']}, "
                f"validation loss {row['val_loss']}); lower the learning rates or check the data"
            )
        state = state.replace(params=p, opt_state=o, ema=e, epoch=epoch + 1, log=state.log + (row,))
        if row["val_loss"] < state.best_loss:
            save_params(directory, eval_params)
            state = state.replace(best_loss=row["val_loss"], best_epoch=epoch)
            _write_best_metrics(directory, row)
        save_checkpoint(checkpoint_dir, state, run_id)
        write_log(directory, state.log)
        bar.set_postfix(
            val_loss=f"{row['val_loss']:.3g}",
            f_mae=f"{row.get('val_forces_mae', float('nan')):.1f}",
        )
    if not (directory / "params.msgpack").is_file():  # zero epochs run: keep the start point
        save_params(directory, state.ema if ema else state.params)
    return directory


def run_identity(config: TrainConfig, data) -> str:
    """What a checkpoint must match to be resumed: the config (bar cosmetics) and the data."""
    settings = config.model_dump(mode="json", exclude={"progress_bar", "directory"})
    return json.dumps({"config": settings, "data": data.fingerprint()}, sort_keys=True)


def _write_best_metrics(directory: Path, row: dict) -> None:
    best = {k: v for k, v in row.items() if k.startswith("val_") or k == "epoch"}
    atomic_write(directory / "metrics.json", json.dumps(best, indent=2))
