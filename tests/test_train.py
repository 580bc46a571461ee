"""Training: losses against closed forms, frozen groups, warm start, resume, model directory."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml
from ase.io import read
from conftest import TINY, emt_frames, tiny_config
from flax import serialization

from apax_core.config import LearningRates, LossTerm, TrainConfig, TrainRun, WarmStart
from apax_core.data import DataError, collate, from_atoms, neighbour_list, write_frames
from apax_core.evaluate import evaluate
from apax_core.labelling import read_labellers
from apax_core.model_dir import load_model
from apax_core.precision import with_x64
from apax_core.train.losses import term_loss
from apax_core.train.metrics import error_sums, finalize
from apax_core.train.optim import epoch_factors, lr_schedule

# ------------------------------------------------------------------------------ closed forms


@pytest.fixture(scope="module")
def padded_batch():
    """Two real structures of different size and one padding structure, with labels."""
    frames = [emt_frames(1, seed=1, size=(1, 1, 1))[0], emt_frames(1, seed=2, size=(2, 1, 1))[0]]
    structures = [from_atoms(a) for a in frames]
    nls = [neighbour_list(s, 3.0) for s in structures]
    batch = collate(structures, nls, 20, 40, batch_size=3)
    rng = np.random.default_rng(0)
    pred = {
        "energy": batch.energy + rng.normal(size=3),
        "forces": batch.forces + rng.normal(size=batch.forces.shape),
        "stress": batch.stress + rng.normal(size=batch.stress.shape),
    }
    return structures, batch, pred


@with_x64
def test_losses_match_closed_forms_and_ignore_padding(padded_batch):
    structures, batch, pred = padded_batch
    n = np.array([s.n_atoms for s in structures], dtype=float)
    de = (pred["energy"][:2] - batch.energy[:2]) / n
    df = np.concatenate(
        [(pred["forces"][b, : int(n[b])] - s.forces).ravel() for b, s in enumerate(structures)]
    )
    ds = (pred["stress"][:2] - batch.stress[:2]).ravel()

    def loss(quantity, **kw):
        return float(term_loss(LossTerm(quantity=quantity, **kw), pred, batch))

    assert loss("energy", atoms_exponent=1.0) == pytest.approx(np.mean(de**2), rel=1e-12)
    assert loss("forces") == pytest.approx(np.mean(df**2), rel=1e-12)
    assert loss("stress") == pytest.approx(np.mean(ds**2), rel=1e-12)
    delta = 0.5
    huber = np.where(np.abs(df) <= delta, 0.5 * df**2, delta * (np.abs(df) - 0.5 * delta))
    assert loss("forces", kind="huber", huber_delta=delta) == pytest.approx(np.mean(huber), 1e-12)
    # Metrics count real atoms only.
    metrics = finalize(
        {k: np.asarray(v) for k, v in error_sums(pred, batch, ("energy", "forces")).items()}, ""
    )
    assert metrics["forces_mae"] == pytest.approx(1000 * np.mean(np.abs(df)), rel=1e-12)
    assert metrics["energy_rmse"] == pytest.approx(1000 * np.sqrt(np.mean(de**2)), rel=1e-12)


def test_schedules():
    from apax_core.config import CyclicCosineSchedule, LinearSchedule

    lin = lr_schedule(LinearSchedule(end_factor=0.1, warmup_epochs=1), 10, 5)
    assert float(lin(0)) == pytest.approx(0.1, rel=1e-6)  # warm-up ramp (step + 1) / 10 ...
    assert float(lin(4)) == pytest.approx(0.5 * (1 - 0.9 * 4 / 50), rel=1e-6)  # ... x the decay
    assert float(lin(25)) == pytest.approx(1 - 0.9 * 0.5, rel=1e-6)
    assert float(lin(50)) == pytest.approx(0.1, rel=1e-6)
    cos = lr_schedule(CyclicCosineSchedule(period_epochs=2, decay_factor=0.5), 10, 8)
    assert float(cos(0)) == pytest.approx(1.0)
    assert float(cos(10)) == pytest.approx(0.5, abs=1e-6)  # half a period
    assert float(cos(15)) == pytest.approx(0.5 * (1 + np.cos(0.75 * np.pi)), abs=1e-6)
    assert float(cos(20)) == pytest.approx(0.5)  # second cycle starts at half height
    assert float(cos(30)) == pytest.approx(0.25, abs=1e-6)


def test_the_former_group_name_radial_is_read_as_representation(caplog):
    """The representation group was called "radial" (it also holds EquivMP's message-passing
    weights): configs that use the old name keep working, with a deprecation warning."""
    with caplog.at_level("WARNING", logger="apax_core.config.train"):
        warm = WarmStart(reset=["radial"], freeze=["radial", "scale"])
        rates = LearningRates.model_validate({"radial": 0.02})
    assert warm.reset == ["representation"] and warm.freeze == ["representation", "scale"]
    assert rates.representation == 0.02
    assert "'radial' is deprecated: it is called 'representation' now" in caplog.text
    with pytest.raises(ValueError, match="current and its former name"):
        LearningRates.model_validate({"radial": 0.02, "representation": 0.01})


# ------------------------------------------------------------------------------- real training


@pytest.fixture(scope="session")
def base_model(tmp_path_factory, data_files):
    directory = tmp_path_factory.mktemp("base") / "model"
    tiny_config(directory, data_files).run()
    return directory


def read_log(directory: Path) -> list[dict]:
    with open(directory / "log.csv") as fh:
        return list(csv.DictReader(fh))


WALL_TIME = "epoch_s"
"""The one log column that differs between any two runs, interrupted or not: each epoch's
measured wall time (benchmarks read it)."""


def without_wall_time(log_csv: bytes) -> list[list[str]]:
    """The log's header and rows as written, every column but the wall time."""
    rows = list(csv.reader(io.StringIO(log_csv.decode())))
    k = rows[0].index(WALL_TIME)
    return [row[:k] + row[k + 1 :] for row in rows]


def assert_same_outputs(directory: Path, reference: Path) -> None:
    """Both model directories hold the same files, byte for byte (the log's wall-time column
    aside); the resume state in ``checkpoint/`` is no output."""

    def files(d: Path) -> list[Path]:
        paths = (p.relative_to(d) for p in d.rglob("*") if p.is_file())
        return sorted(p for p in paths if p.parts[0] != "checkpoint")

    assert files(directory) == files(reference)
    for name in files(directory):
        mine, theirs = (directory / name).read_bytes(), (reference / name).read_bytes()
        if name == Path("log.csv"):
            assert without_wall_time(mine) == without_wall_time(theirs)
        else:
            assert mine == theirs, name


STEPS = 3
"""Steps per epoch of the tiny jobs: 12 training structures in batches of 4."""
SCHEDULES = {
    "constant": ({"kind": "constant"}, lambda s: np.ones(len(s))),
    "linear": ({"kind": "linear", "end_factor": 0.1}, lambda s: 1 - 0.9 * s / (2 * STEPS)),
    "cyclic_cosine": (
        {"kind": "cyclic_cosine", "period_epochs": 1, "decay_factor": 0.5},
        lambda s: 0.5 ** (s // STEPS) * 0.5 * (1 + np.cos(np.pi * (s % STEPS) / STEPS)),
    ),
}
"""Each schedule kind with the closed form of its factor at step s of a 2-epoch run."""


@pytest.mark.parametrize("kind", SCHEDULES)
def test_every_schedule_trains_with_the_factors_of_its_closed_form(
    kind, data_files, tmp_path, monkeypatch
):
    """Two epochs train with every schedule kind: the factor of each step (one per step, a
    constant schedule too) and the logged learning rate of each epoch's last step follow the
    closed form."""
    from apax_core.train import trainer

    schedule, closed_form = SCHEDULES[kind]
    used = []

    def recorded(*args):
        factors = epoch_factors(*args)
        used.extend(factors)
        return factors

    monkeypatch.setattr(trainer, "epoch_factors", recorded)
    job = tiny_config(tmp_path / kind, data_files, n_epochs=2, optimizer={"schedule": schedule})
    job.run()
    expected = closed_form(np.arange(2 * STEPS))
    np.testing.assert_allclose(used, expected, rtol=1e-6, atol=1e-12)
    logged = [float(r["lr_nn"]) for r in read_log(job.directory)]
    last_steps = expected[STEPS - 1 :: STEPS]
    np.testing.assert_allclose(logged, LearningRates().nn * last_steps, rtol=1e-6)


def test_training_learns_and_writes_the_model_directory(base_model, data_files):
    rows = read_log(base_model)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    for name in ("config.yaml", "statistics.json", "params.msgpack", "metrics.json"):
        assert (base_model / name).is_file()
    # the files' 12 + 4 frames carry no labeller record: counted, as "unknown"
    assert read_labellers(base_model) == [{"labeller": "unknown", "n_frames": 16}]


def test_moved_model_directory_loads_and_predicts_the_same(base_model, data_files, tmp_path):
    from apax_core.data import read_frames

    structures = [from_atoms(a) for a in read_frames(data_files["val"])]
    before = evaluate(load_model(base_model), structures)
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(base_model, moved)
    after = evaluate(load_model(moved), structures)
    assert after == before


def test_warm_start_freezes_groups_bit_identical(base_model, data_files, tmp_path):
    base = load_model(base_model)
    config = tiny_config(
        tmp_path / "warm",
        {**data_files, "train": data_files["more"]},
        n_epochs=2,
        base_model=base_model,
        warm_start={"freeze": ["representation", "scale"]},
    )
    warm = load_model(config.run())
    same = jax.tree.map(
        lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)), warm.params, base.params
    )
    assert all(jax.tree.leaves(same["representation"]))
    assert same["scale_shift"]["scale"]
    assert not all(jax.tree.leaves(same["readout"]))  # the rest did train
    assert not same["scale_shift"]["shift"]
    assert warm.stats == base.stats


def test_a_warm_start_keeps_every_frame_its_base_model_learned_from(base_model, data_files, caplog):
    """Iteration 3 of the water trial dropped a seed frame iterations 0-2 had trained on, once
    new frames moved the statistics. A strict screening (many frames beyond 1.5 robust sigma)
    now drops only new frames; with keep_trained off, the base model's lost frames are warned
    about by index and counted."""
    from apax_core.data.screening import structure_key
    from apax_core.train.data import load_training_data

    base_keys = json.loads((base_model / "training_set.json").read_text())
    train = [from_atoms(a) for a in read(data_files["train"], ":") + read(data_files["more"], ":")]
    val = [from_atoms(a) for a in read(data_files["val"], ":")]

    def load(keep_trained: bool):
        screening = {"max_robust_z": 1.5, "min_structures": 2, "keep_trained": keep_trained}
        spec = tiny_config(Path("unused"), data_files, data={"screening": screening}).spec
        return load_training_data(spec, train, val, base_model)

    kept = load(True)
    keys = {structure_key(s) for s in kept.train + kept.val}
    assert set(base_keys["train"]) | set(base_keys["val"]) <= keys
    assert kept.missing == ()
    assert len(kept.train) < len(train)  # new frames were screened as before
    caplog.clear()
    moved = load(False)
    assert moved.missing and all(m.split()[0] in ("train", "val") for m in moved.missing)
    assert f"{len(moved.missing)} frames the base model learned from" in caplog.text
    assert moved.missing[0] in caplog.text


def test_warm_start_rejects_unknown_element_and_changed_architecture(
    base_model, data_files, tmp_path
):
    from ase.build import bulk

    frames = emt_frames(3, seed=3)
    alloy = bulk("Cu", "fcc", a=3.7, cubic=True)
    alloy.numbers[1] = 79  # Au
    frames[1] = alloy
    from ase.calculators.emt import EMT

    alloy.calc = EMT()
    alloy.get_forces()
    write_frames(tmp_path / "gold.extxyz", frames)
    config = tiny_config(
        tmp_path / "m",
        {**data_files, "train": tmp_path / "gold.extxyz"},
        base_model=base_model,
    )
    with pytest.raises(DataError, match=r"Au \(first in structure 1\)"):
        config.run()
    config = tiny_config(
        tmp_path / "m2",
        data_files,
        base_model=base_model,
        model={**TINY, "hidden": [8]},
    )
    with pytest.raises(DataError, match="hidden"):
        config.run()


def test_validation_elements_the_training_set_lacks_are_rejected(data_files, tmp_path):
    """An element only in the validation data would get shift 0 and never be trained."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    frames = emt_frames(2, seed=5)
    alloy = bulk("Cu", "fcc", a=3.7, cubic=True)
    alloy.numbers[1] = 47  # Ag
    alloy.calc = EMT()
    alloy.get_forces()
    write_frames(tmp_path / "val.extxyz", [*frames, alloy])
    job = tiny_config(tmp_path / "m", {**data_files, "val": tmp_path / "val.extxyz"})
    with pytest.raises(DataError, match=r"val.extxyz.*Ag \(first in structure 2\)"):
        job.run()
    assert not (tmp_path / "m").exists()


def test_missing_labels_are_reported_before_training(data_files, tmp_path):
    frames = emt_frames(3, seed=4)
    frames[2].calc = None
    write_frames(tmp_path / "unlabelled.extxyz", frames)
    config = tiny_config(tmp_path / "m", {**data_files, "train": tmp_path / "unlabelled.extxyz"})
    with pytest.raises(DataError, match=r"unlabelled.extxyz: .*structure 2"):
        config.run()
    assert not (tmp_path / "m").exists()


def test_resume_after_sigkill_equals_uninterrupted_run(data_files, tmp_path):
    n_epochs = 8
    reference = tiny_config(tmp_path / "reference", data_files, n_epochs=n_epochs)
    reference.run()
    config = tiny_config(tmp_path / "killed", data_files, n_epochs=n_epochs)
    config_file = tmp_path / "train.yaml"
    config_file.write_text(yaml.safe_dump(config.yaml_dict()))
    command = [sys.executable, "-m", "apax_core.cli", "train", str(config_file)]

    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log_file = tmp_path / "killed" / "log.csv"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if log_file.is_file() and len(read_log(tmp_path / "killed")) >= 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    done_before = len(read_log(tmp_path / "killed"))
    assert proc.returncode == -signal.SIGKILL and done_before < n_epochs

    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert [int(r["epoch"]) for r in read_log(tmp_path / "killed")] == list(range(1, n_epochs + 1))
    assert_same_outputs(tmp_path / "killed", tmp_path / "reference")


def test_data_parallel_training_on_two_devices_equals_one_device(data_files, tmp_path):
    """Two simulated CPU devices (a fresh process: the device count is fixed at JAX start-up),
    each with half of every batch, follow the single-device loss trajectory."""
    one = tiny_config(tmp_path / "one", data_files, n_epochs=3)
    one.run()
    two = tiny_config(tmp_path / "two", data_files, n_epochs=3, n_devices=2)
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(two.yaml_dict()))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    done = run_cli("train", str(tmp_path / "two.yaml"), env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    for a, b in zip(read_log(tmp_path / "two"), read_log(tmp_path / "one"), strict=True):
        for key in ("train_loss", "val_loss", "val_forces_mae"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-6), key
    with pytest.raises(ValueError, match="n_devices: 2 requested, 1 cpu device"):
        two.run()  # this process has one device
    with pytest.raises(ValueError, match=r"data.batch_size \(3\) must be divisible by n_dev"):
        tiny_config(tmp_path / "odd", data_files, n_devices=2, data={"batch_size": 3})


# ------------------------------------------------------------------------------------- CLI


def run_cli(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "apax_core.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
    )


def test_validate_reports_every_error_with_its_path(tmp_path):
    bad = {"directory": "m", "nepochs": 3, "data": {"batch_size": "eight"}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    out = run_cli("validate", "train", str(tmp_path / "bad.yaml"))
    assert out.returncode != 0
    assert "n_epochs: Field required" in out.stderr
    assert "nepochs: Extra inputs are not permitted" in out.stderr
    assert "train_file: Field required" in out.stderr
    assert "data.batch_size: Input should be a valid integer" in out.stderr
    assert "model.hidden" not in out.stderr


def test_template_is_valid_and_validate_accepts_it(tmp_path, data_files):
    for args in (["template", "train"], ["template", "train", "--full"]):
        text = run_cli(*args).stdout
        raw = yaml.safe_load(text)
        raw["train_file"], raw["val_file"] = str(data_files["train"]), str(data_files["val"])
        (tmp_path / "t.yaml").write_text(yaml.safe_dump(raw))
        out = run_cli("validate", "train", str(tmp_path / "t.yaml"))
        assert out.returncode == 0, out.stderr


def test_template_ensemble_lines_validate_when_uncommented():
    from apax_core.cli import MINIMAL_TRAIN

    text = (
        MINIMAL_TRAIN.replace("#  ensemble", "  ensemble")
        .replace("# loss:", "loss:")
        .replace("#   - ", "  - ")
    )
    raw = yaml.safe_load(text)
    config = TrainConfig.model_validate(
        {k: v for k, v in raw.items() if k not in TrainRun.model_fields}
    )
    assert config.model.ensemble.kind == "shallow"
    assert [(t.quantity, t.kind, t.weight) for t in config.loss] == [
        ("energy", "crps", 1.0),
        ("forces", "crps", 1.0),
    ]


def test_template_equivmp_lines_validate_when_uncommented():
    from apax_core.cli import MINIMAL_TRAIN

    lines = [ln for ln in MINIMAL_TRAIN.splitlines() if not ln.startswith(("  kind:", "  r_max:"))]
    equivmp = ("#  kind", "#  r_max", "#  n_basis", "#  l_max", "#  n_channels", "#  n_layers")
    raw = yaml.safe_load("\n".join(ln[1:] if ln.startswith(equivmp) else ln for ln in lines))
    config = TrainConfig.model_validate(
        {k: v for k, v in raw.items() if k not in TrainRun.model_fields}
    )
    assert config.model.kind == "equivmp"
    assert (config.model.r_max, config.model.l_max, config.model.n_channels) == (6.0, 2, 32)


def test_checkpoint_of_a_different_run_is_not_resumed(data_files, tmp_path):
    first = tiny_config(tmp_path / "m", data_files, n_epochs=2)
    first.run()
    rows = read_log(tmp_path / "m")
    # Same directory, same epoch count, other seed: the old state must not be continued.
    tiny_config(tmp_path / "m", data_files, n_epochs=2, seed=7).run()
    again = read_log(tmp_path / "m")
    assert [int(r["epoch"]) for r in again] == [1, 2]
    assert again[0]["val_loss"] != rows[0]["val_loss"]
    # And the unchanged config resumes: nothing left to do, the log is kept as it is.
    tiny_config(tmp_path / "m", data_files, n_epochs=2, seed=7).run()
    assert read_log(tmp_path / "m") == again


def test_a_checkpoint_of_an_older_layout_is_not_resumed(data_files, tmp_path, caplog):
    """Checkpoints written before the schedule became a step input hold optimiser state of
    another layout: restoring them would fail deep in flax, so they start afresh."""
    tiny_config(tmp_path / "m", data_files, n_epochs=2).run()
    path = tmp_path / "m" / "checkpoint" / "latest.msgpack"
    payload = serialization.msgpack_restore(path.read_bytes())
    identity = json.loads(payload["run_id"])
    identity.pop("format", None)  # what the older layout's identity held
    payload["run_id"] = json.dumps(identity, sort_keys=True)
    path.write_bytes(serialization.msgpack_serialize(payload))
    with caplog.at_level("WARNING", logger="apax_core.train.state"):
        tiny_config(tmp_path / "m", data_files, n_epochs=2).run()
    assert "starting afresh" in caplog.text


def test_resume_after_the_outputs_were_deleted_equals_the_uninterrupted_run(
    data_files, tmp_path, monkeypatch
):
    """``dvc repro`` deletes a stage's outputs before it reruns it; the checkpoint lives
    elsewhere. A run killed at any epoch (after its best one too) and resumed writes the model
    directory of an uninterrupted run, byte for byte (a DVC hash does not change; the log's
    wall-time column aside); so does a finished one."""
    from apax_core.train import trainer

    n_epochs = 6
    reference = tiny_config(tmp_path / "reference", data_files, n_epochs=n_epochs).run()
    job, checkpoints = (
        tiny_config(tmp_path / "killed", data_files, n_epochs=n_epochs),
        tmp_path / "c",
    )
    save, calls = trainer.save_checkpoint, []

    def killed_after_four_epochs(*args, **kwargs):
        save(*args, **kwargs)
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(trainer, "save_checkpoint", killed_after_four_epochs)
    with pytest.raises(KeyboardInterrupt):
        trainer.train_run(job.spec, job.run_args, checkpoint_dir=checkpoints)
    monkeypatch.setattr(trainer, "save_checkpoint", save)
    for _ in range(2):  # resumed mid-run, then once more with nothing left to train
        shutil.rmtree(job.directory)
        trainer.train_run(job.spec, job.run_args, checkpoint_dir=checkpoints)
        assert [int(r["epoch"]) for r in read_log(job.directory)] == list(range(1, n_epochs + 1))
        assert_same_outputs(job.directory, reference)


@pytest.fixture
def cache_everything():
    """The persistent cache on, keeping even programs that compile faster than the threshold
    worth a file (tiny models do)."""
    from apax_core import compilation_cache

    compilation_cache.enable()
    key = "jax_persistent_cache_min_compile_time_secs"
    old = getattr(jax.config, key)
    jax.config.update(key, 0.0)
    yield
    jax.config.update(key, old)


def test_a_longer_run_on_more_data_reuses_the_compiled_steps(
    data_files, tmp_path, caplog, cache_everything
):
    """The learning-rate schedule is an input of the train step, and compiled programs go to
    the persistent cache: a warm start of another length on a grown training set (each loop
    iteration, in a fresh process) loads the train and validation steps instead of compiling
    them again."""
    from apax_core.data import read_frames
    from apax_core.train.trainer import train

    first = tiny_config(tmp_path / "first", data_files, n_epochs=1)
    first.run()
    grown = tmp_path / "grown.extxyz"
    write_frames(grown, read_frames(data_files["train"]) + read_frames(data_files["train"])[:4])
    second = tiny_config(tmp_path / "second", data_files, n_epochs=3)
    # No public way: only JAX's compiler log names the program a persistent-cache hit or miss
    # was for (jax.monitoring's cache_hits/cache_misses events carry no name, and a trace
    # counter runs on a hit as well), so this reads that log.
    caplog.set_level("DEBUG", logger="jax._src.compiler")
    train(second.spec, second.directory, grown, data_files["val"], base_model=first.directory)
    cache = [
        r.getMessage() for r in caplog.records if "ersistent compilation cache" in r.getMessage()
    ]
    for step in ("train_step", "eval_step"):
        assert [m for m in cache if step in m and "hit" in m], cache
        assert not [m for m in cache if step in m and "MISS" in m], cache
    assert len(read_log(second.directory)) == 3
