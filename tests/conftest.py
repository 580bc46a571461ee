"""Shared fixtures: tiny models and small EMT-labelled structures, built once per session."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from pydantic import TypeAdapter

from apax_core.config import ModelConfig, TrainConfig, TrainRun
from apax_core.data import write_frames
from apax_core.model import ModelStatistics, build_model, init_params
from apax_core.model_dir import Model, save_config, save_params, save_stats
from apax_core.precision import x64
from apax_core.train.trainer import train_run

# Compiled programs go to a cache of this session (shared with its `dvc repro` subprocesses),
# not the user's: every run starts as cold as a fresh CI machine.
_XLA_CACHE = tempfile.mkdtemp(prefix="apax-test-xla-")
os.environ["APAX_COMPILATION_CACHE"] = _XLA_CACHE
atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
# The same for the compiled kernels (apax_core.native): every run builds them as CI would.
_NATIVE_CACHE = tempfile.mkdtemp(prefix="apax-test-native-")
os.environ["APAX_NATIVE_CACHE"] = _NATIVE_CACHE
atexit.register(shutil.rmtree, _NATIVE_CACHE, ignore_errors=True)

# Node tests call `dvc`, and DVC calls `zntrack run`: the executables of this interpreter's
# environment must come first on PATH however pytest was started (e.g. `.venv/bin/python -m`).
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

TINY = dict(r_max=4.0, n_basis=4, n_radial=3, hidden=[16])
TINY_EQUIVMP = dict(
    kind="equivmp", r_max=4.0, n_basis=4, n_channels=4, l_max=2, hidden=[16], radial_hidden=[8]
)
"""The tiniest EquivMP that still has every path: degrees 0-2 and two message-passing steps."""
KINDS = {"gmnn": TINY, "equivmp": TINY_EQUIVMP}


def make_model(elements=(29, 47), seed=0, kind="gmnn", **overrides) -> Model:
    """A randomly initialised tiny model of ``kind`` in fp64 (exact derivative tests need it)."""
    raw = {**KINDS[kind], "precision": "fp64", **overrides}
    config = TypeAdapter(ModelConfig).validate_python(raw)
    n = len(elements)
    stats = ModelStatistics(
        tuple(elements), tuple(-3.0 - 0.1 * i for i in range(n)), tuple([0.7] * n)
    )
    with x64():
        params = init_params(build_model(config, stats), jax.random.PRNGKey(seed))
    return Model(config, stats, params)


def save_model_dir(directory: Path, model: Model) -> Path:
    """``model`` written as a model directory (what training writes), for the file-based APIs."""
    directory.mkdir(parents=True, exist_ok=True)
    save_config(directory, TrainConfig(n_epochs=1, model=model.config))
    save_stats(directory, model.stats)
    save_params(directory, model.params)
    return directory


@pytest.fixture(scope="session", autouse=True)
def _capacities_not_remembered_across_tests():
    """A neighbour capacity one test's MD grew is not carried into another's
    (:mod:`apax_core.md.capacity`); tests of the memory point it at a file of their own."""
    from apax_core.md import capacity

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(capacity, "_path", lambda: None)
        yield


@pytest.fixture(autouse=True)
def _no_capacity_in_memory(monkeypatch):
    from apax_core.md import capacity

    monkeypatch.setattr(capacity, "_MEMORY", {})


@pytest.fixture(scope="session")
def cuag_model() -> Model:
    return make_model()


def emt_frames(n: int, seed: int = 0, size=(2, 2, 2), vacancy=True, rattle=0.08):
    """Rattled, strained fcc Cu supercells with EMT labels (the tests' stand-in for DFT)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(size)
        if vacancy:
            del atoms[0]
        atoms.set_cell(atoms.cell * (1 + rng.uniform(-0.02, 0.02)), scale_atoms=True)
        atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_potential_energy()
        atoms.get_forces()
        atoms.get_stress()
        results = {k: atoms.calc.results[k] for k in ("energy", "forces", "stress")}
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    return frames


@pytest.fixture(scope="session")
def data_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    files = {
        "train": emt_frames(12, seed=10),
        "val": emt_frames(4, seed=11),
        "more": emt_frames(16, seed=12, rattle=0.12),
    }
    for name, frames in files.items():
        write_frames(root / f"{name}.extxyz", frames)
    return {name: root / f"{name}.extxyz" for name in files}


@dataclass(frozen=True)
class TinyJob:
    """A quick training spec with its run arguments."""

    spec: TrainConfig
    run_args: TrainRun

    @property
    def directory(self) -> Path:
        return self.run_args.directory

    def run(self) -> Path:
        return train_run(self.spec, self.run_args)

    def yaml_dict(self) -> dict:
        """The command line's one-file form: run arguments and spec side by side."""
        run = self.run_args.model_dump(mode="json", exclude_none=True)
        return {**run, **self.spec.model_dump(mode="json")}


def tiny_config(directory, data_files, n_epochs=3, base_model=None, **overrides) -> TinyJob:
    """A quick training job on the session's EMT data; ``data`` overrides are merged."""
    data = {"batch_size": 4, "val_batch_size": 4, **overrides.pop("data", {})}
    raw = {"n_epochs": n_epochs, "data": data, "model": dict(TINY), **overrides}
    run = TrainRun(
        directory=directory,
        train_file=data_files["train"],
        val_file=data_files["val"],
        base_model=base_model,
        progress_bar=False,
    )
    return TinyJob(TrainConfig.model_validate(raw), run)


def crash_at_checkpoint(monkeypatch, run, n: int = 3) -> None:
    """Call ``run()`` with the MD checkpoint's ``save`` raising KeyboardInterrupt on its ``n``-th
    call: the chunk's frames are appended, its checkpoint is not (a crash at the worst moment)."""
    import pytest

    from apax_core.md import run as md_run

    save, calls = md_run.ckpt.save, {"n": 0}

    def crashing_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt("simulated crash")
        save(*args, **kwargs)

    monkeypatch.setattr(md_run.ckpt, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(md_run.ckpt, "save", save)
