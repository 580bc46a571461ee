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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from apax_core.config import FullEnsemble, TrainConfig, TrainRun, WarmStart
from apax_core.data import Dataset, prefetch, read_frames
from apax_core.files import atomic_write
from apax_core.labelling import write_labellers
from apax_core.model import init_params
from apax_core.model_dir import Model, Variables, load_model, save_config, save_params, save_stats
from apax_core.precision import with_x64
from apax_core.predictor import predictor
from apax_core.train.data import (
    TRAINING_SET,
    Source,
    TrainingData,
    load_training_data,
    structures_of,
)
from apax_core.train.losses import total_loss
from apax_core.train.metrics import accumulate, error_sums, finalize
from apax_core.train.optim import epoch_factors, lr_schedule, make_optimizer
from apax_core.train.parallel import Placement, placement
from apax_core.train.state import TrainState, load_checkpoint, save_checkpoint
from apax_core.train.warm_start import warm_start_params
from apax_core.transforms import CALIBRATION, Calibration, batched, default_chains
from apax_core.uq import calibrate_model

log = logging.getLogger(__name__)


def training_mode(config: TrainConfig) -> str:
    """What the loss terms need: member forces (the expensive jacobian, eq. 6 right) for a full
    ensemble or a probabilistic force/stress term; else the gradient of the mean energy."""
    members = isinstance(config.model.ensemble, FullEnsemble) or any(
        t.probabilistic and t.quantity != "energy" for t in config.loss
    )
    return "uncertainty" if members else "forces"


def make_steps(model: Model, config: TrainConfig, tx, labels: tuple[str, ...]):
    """Jitted train and eval steps for one model and objective."""
    chains = default_chains() if config.n_devices == 1 else 1  # devices split the batch
    predict = batched(
        predictor(model, training_mode(config), stress="stress" in labels), chains=chains
    )
    per_member = isinstance(config.model.ensemble, FullEnsemble)

    def loss_fn(params, batch):
        pred = predict(Variables(params, Calibration()), batch)  # training sees raw spreads
        return total_loss(config.loss, pred, batch, per_member=per_member), pred

    @jax.jit
    def train_step(params, opt_state, ema, ema_decay, lr_factor, batch):
        (loss, pred), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        updates = jax.tree.map(lambda u: u * lr_factor.astype(u.dtype), updates)
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


def evaluate_loss(
    eval_step, params, data: Dataset, config: TrainConfig, place=lambda batch: batch
) -> dict[str, float]:
    """Validation loss (mean over structures) and metrics with ``params``."""
    total, loss_sum, n = None, 0.0, 0
    for batch in data.batches(
        config.data.val_batch_size, config.data.padding, shuffle=False, seed=0
    ):
        loss, sums = eval_step(params, place(batch))
        k = _n_real(batch)
        loss_sum, n = loss_sum + float(loss) * k, n + k
        total = accumulate(total, sums)
    return {"val_loss": loss_sum / max(n, 1), **finalize(total, "val_")}


LEADING, TRAILING = ("epoch", "train_loss", "val_loss"), ("lr_nn", "epoch_s")
"""The log's first and last columns; validation, then training metrics (sorted) lie between."""


def in_log_order(row: dict) -> dict:
    """``row`` with its keys in the one fixed column order of the log. Rows restored from a
    checkpoint come back with sorted keys: a resumed run writes the files of an uninterrupted
    one only because the order is imposed here, not inherited."""

    def rank(key: str) -> tuple:
        if key in LEADING:
            return (0, LEADING.index(key), "")
        if key in TRAILING:
            return (3, TRAILING.index(key), "")
        return (1 if key.startswith("val_") else 2, 0, key)

    return {k: row[k] for k in sorted(row, key=rank)}


def write_log(directory: Path, rows: tuple[dict, ...]) -> None:
    if not rows:
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(in_log_order(rows[0])))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(directory / "log.csv", buf.getvalue())


@dataclass(frozen=True)
class Setup:
    """Everything an epoch needs, built once per run."""

    config: TrainConfig
    train: Dataset
    val: Dataset
    train_step: Any
    eval_step: Any
    schedule: Any
    steps_per_epoch: int
    place: Placement


SCREENING = "screening.json"
"""The model directory's record of the implausible structures its data held ("flagged": per
source, index -> reason) and of the base model's frames this run lacks ("missing")."""


@with_x64
def train(
    config: TrainConfig,
    directory: str | Path,
    train_data: Source,
    val_data: Source | None = None,
    *,
    base_model: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    progress_bar: bool = True,
    calibration_data: Source | None = None,
) -> Path:
    """Train (or resume training) a model on ``train_data`` and return its model ``directory``.

    Data are files or structures; without ``val_data``, ``data.val_fraction`` is held out.
    ``base_model`` (a model directory) warm-starts the run. ``checkpoint_dir`` (default: inside
    the model directory) holds the resume state; a workflow keeps it where a rerun finds it.
    An ensemble is calibrated on ``calibration_data`` (the regime it will be used in, e.g. a
    loop's own MD frames), else, or when it is empty, on the validation data.
    """
    directory = Path(directory)
    checkpoint_dir = Path(checkpoint_dir or directory / "checkpoint")
    data = load_training_data(config, train_data, val_data, base_model)  # every input error
    calibration = calibration_set(config, calibration_data)  # checked before training
    setup, state = _setup(config, data)
    run_id = run_identity(config, data)
    resumed = load_checkpoint(checkpoint_dir, state, run_id)
    _write_inputs(directory, config, data)
    if resumed is not None:
        log.info("resuming %s after epoch %d", directory, resumed.epoch)
        state = setup.place.replicate(resumed)
        _restore_outputs(directory, state)
    bar = tqdm(
        range(state.epoch, config.n_epochs),
        desc="train",
        unit="epoch",
        disable=not progress_bar,
        initial=state.epoch,
        total=config.n_epochs,
    )
    for epoch in bar:
        if config.patience is not None and epoch - 1 - state.best_epoch >= config.patience:
            log.info("early stop: no improvement for %d epochs", config.patience)
            break
        state, row = _epoch(setup, state, epoch)
        if row["val_loss"] < state.best_loss:
            best = _eval_params(config, state)
            state = state.replace(best=best, best_loss=row["val_loss"], best_epoch=epoch)
            save_params(directory, best)
            _write_best_metrics(directory, row)
        save_checkpoint(checkpoint_dir, state, run_id)
        write_log(directory, state.log)
        bar.set_postfix(
            val_loss=f"{row['val_loss']:.3g}",
            f_mae=f"{row.get('val_forces_mae', float('nan')):.1f}",
        )
    if not (directory / "params.msgpack").is_file():  # zero epochs run: keep the start point
        save_params(directory, _eval_params(config, state))
    _calibrate(directory, config, calibration or data.val, calibration is not None)
    return directory


def _write_inputs(directory: Path, config: TrainConfig, data: TrainingData) -> None:
    """The model directory's run-independent files: spec, statistics, the screening report
    and the frames learned from; a stale calibration is removed."""
    save_config(directory, config)
    save_stats(directory, data.stats)
    flagged = {name: {str(k): why for k, why in f.items()} for name, f in data.flagged.items()}
    report = {"flagged": flagged, "missing": list(data.missing)}
    atomic_write(directory / SCREENING, json.dumps(report, indent=2))
    atomic_write(directory / TRAINING_SET, json.dumps(data.training_set()))
    (directory / CALIBRATION).unlink(missing_ok=True)  # fitted anew for these parameters


def calibration_set(config: TrainConfig, source: Source | None) -> list | None:
    """The calibration structures of ``source`` with the labels the loss needs (checked before
    training); None for none or an empty source."""
    if source is None:
        return None
    labels = sorted({t.quantity for t in config.loss} | set(config.data.labels))
    return structures_of(source, labels, "calibration data")[0] or None


def _calibrate(directory: Path, config: TrainConfig, structures: list, given: bool) -> None:
    """Fit and store an ensemble's calibration on ``structures`` (the ``given`` calibration
    data or the validation data) in the config's family; its factors, family, number and
    origin join the best-epoch metrics."""
    if not (config.calibrate and config.model.n_members > 1):
        return
    family = config.calibration_family
    cal = calibrate_model(load_model(directory), structures, family=family).calibration
    cal.save(directory)
    metrics = json.loads((directory / "metrics.json").read_text())
    metrics |= {"calibration_energy": cal.energy, "calibration_forces": cal.forces}
    metrics |= {"calibration_family": cal.family}
    origin = "calibration" if given else "validation"
    metrics |= {"n_calibration": len(structures), "calibration_set": origin}
    atomic_write(directory / "metrics.json", json.dumps(metrics, indent=2))


def train_run(config: TrainConfig, run: TrainRun, **kwargs) -> Path:
    """:func:`train` with the run arguments of a :class:`TrainRun` (the command line's form);
    the model directory also records the labellers of the files' frames (``labellers.json``)."""
    directory = train(
        config,
        run.directory,
        run.train_file,
        run.val_file,
        base_model=run.base_model,
        progress_bar=run.progress_bar,
        **kwargs,
    )
    files = [f for f in (run.train_file, run.val_file) if f is not None]
    write_labellers(directory, [a for f in files for a in read_frames(f)])
    return directory


def _restore_outputs(directory: Path, state: TrainState) -> None:
    """Rewrite the model directory's outputs of a resumed run from its checkpoint: a workflow
    may have deleted them (``dvc repro`` does) after the best epoch was reached."""
    write_log(directory, state.log)
    if state.best_epoch >= 0:
        save_params(directory, state.best)
        _write_best_metrics(directory, state.log[state.best_epoch])


def _eval_params(config: TrainConfig, state: TrainState):
    """The parameters that are validated and saved: the EMA weights if enabled."""
    return state.ema if config.ema else state.params


def _setup(config: TrainConfig, data: TrainingData) -> tuple[Setup, TrainState]:
    """Datasets, the (warm-started) initial state, optimiser and jitted steps."""
    place = placement(config.n_devices)
    train_ds = Dataset(data.train, config.model.r_max)
    val_ds = Dataset(data.val, config.model.r_max)
    model = Model(config.model, data.stats, None)
    params = init_params(model.module, jax.random.PRNGKey(config.seed))
    frozen: frozenset[str] = frozenset()
    if data.base is not None:
        warm = config.warm_start or WarmStart()
        params = warm_start_params(params, data.base.params, warm.reset)
        frozen = frozenset(warm.freeze)
    steps = train_ds.n_batches(config.data.batch_size)
    schedule = lr_schedule(config.optimizer.schedule, steps, config.n_epochs)
    tx = make_optimizer(config.optimizer, frozen)
    labels = tuple(sorted({t.quantity for t in config.loss} | set(config.data.labels)))
    train_step, eval_step = make_steps(model, config, tx, labels)
    setup = Setup(config, train_ds, val_ds, train_step, eval_step, schedule, steps, place)
    state = TrainState(params=params, opt_state=tx.init(params), ema=params, best=params)
    return setup, place.replicate(state)


STEPS_AHEAD = 2
"""Train steps dispatched before the oldest one's loss is read: reading it at once (a host
sync) would leave the device idle while Python dispatches the next step."""


@dataclass
class _Tally:
    """Loss and error sums of an epoch's steps, read from the device ``STEPS_AHEAD`` late."""

    loss_sum: float = 0.0
    n: int = 0
    total: dict | None = None
    pending: list = field(default_factory=list)

    def add(self, loss, sums, n_real: int) -> None:
        self.pending.append((loss, sums, n_real))
        self.read(keep=STEPS_AHEAD)

    def read(self, keep: int = 0) -> None:
        """Read all but the ``keep`` newest steps."""
        while len(self.pending) > keep:
            loss, sums, k = self.pending.pop(0)
            self.loss_sum, self.n = self.loss_sum + float(loss) * k, self.n + k
            self.total = accumulate(self.total, sums)


def _epoch(setup: Setup, state: TrainState, epoch: int) -> tuple[TrainState, dict]:
    """One pass over the shuffled training set, then validation: the new state and log row."""
    config, start = setup.config, time.perf_counter()
    ema = config.ema
    decay = jnp.asarray(ema.decay if ema and epoch >= ema.start_epoch else 0.0)
    p, o, e = state.params, state.opt_state, state.ema
    tally = _Tally()
    batches = setup.train.batches(
        config.data.batch_size,
        config.data.padding,
        shuffle=True,
        seed=config.data.shuffle_seed,
        epoch=epoch,
    )
    factors = epoch_factors(setup.schedule, setup.steps_per_epoch, epoch)
    for factor, batch in zip(
        factors, prefetch(map(setup.place.batch, batches), config.data.prefetch), strict=True
    ):
        p, o, e, loss, sums = setup.train_step(p, o, e, decay, jnp.asarray(factor), batch)
        tally.add(loss, sums, _n_real(batch))
    tally.read()
    state = state.replace(params=p, opt_state=o, ema=e, epoch=epoch + 1)
    row = {
        "epoch": epoch + 1,
        "train_loss": tally.loss_sum / max(tally.n, 1),
        **evaluate_loss(
            setup.eval_step, _eval_params(config, state), setup.val, config, setup.place.batch
        ),
        **finalize(tally.total, "train_"),
        "lr_nn": config.optimizer.learning_rates.nn * float(factors[-1]),
        "epoch_s": time.perf_counter() - start,
    }
    if not (np.isfinite(row["train_loss"]) and np.isfinite(row["val_loss"])):
        raise FloatingPointError(
            f"training diverged in epoch {epoch + 1} (train loss {row['train_loss']}, "
            f"validation loss {row['val_loss']}); lower the learning rates or check the data"
        )
    return state.replace(log=state.log + (row,)), row


CHECKPOINT_FORMAT = 2
"""Raised when the optimiser state's layout changes (2: the schedule became a step input), so
that a checkpoint of an older layout is not resumed."""


def run_identity(config: TrainConfig, data: TrainingData) -> str:
    """What a checkpoint must match to be resumed: the spec, the data (structures and the base
    model's parameters) and the checkpoint layout. Run arguments never enter it."""
    settings = config.model_dump(mode="json")
    identity = {"config": settings, "data": data.fingerprint(), "format": CHECKPOINT_FORMAT}
    return json.dumps(identity, sort_keys=True)


def _write_best_metrics(directory: Path, row: dict) -> None:
    best = in_log_order({k: v for k, v in row.items() if k.startswith("val_") or k == "epoch"})
    atomic_write(directory / "metrics.json", json.dumps(best, indent=2))
