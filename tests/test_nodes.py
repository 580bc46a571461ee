"""Workflow nodes in real git + DVC repositories (tiny models, EMT labels)."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zntrack
from conftest import TINY, emt_frames

import apax_nodes as an
from apax_core.data import write_frames
from apax_nodes.project import build

TRAIN = {
    "n_epochs": 4,
    "model": dict(TINY),
    "data": {"batch_size": 4, "val_batch_size": 4},
    "loss": [{"quantity": "energy", "weight": 10.0, "atoms_exponent": 1.0}, {"quantity": "forces"}],
}


def sh(*cmd, cwd=None):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=cwd).stdout


def init_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    sh("git", "init", "-q", cwd=path)
    sh("git", "config", "user.email", "test@example.com", cwd=path)
    sh("git", "config", "user.name", "test", cwd=path)
    sh("dvc", "init", "-q", cwd=path)
    return path


def seed_file(root: Path, n: int, seed: int = 0) -> str:
    """``n`` EMT-labelled, rattled 2x2x2 Cu cells with a vacancy, written into ``root``: what
    BuildBulk -> Bootstrap -> Label make, for one LoadData stage instead of three."""
    write_frames(root / "seed.extxyz", emt_frames(n, seed=seed))
    return "seed.extxyz"


def commit(path: Path, message: str) -> str:
    sh("git", "add", "-A", cwd=path)
    sh("git", "commit", "-qm", message, cwd=path)
    return sh("git", "rev-parse", "HEAD", cwd=path).strip()


def repro(path: Path) -> str:
    return sh("dvc", "repro", cwd=path)


@contextlib.contextmanager
def inside(path: Path):
    """Nodes loaded with from_rev read lazily, relative to the working directory."""
    cwd = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(cwd)


def test_labelling_failures_are_recorded(tmp_path):
    from ase.build import bulk

    root = init_repo(tmp_path / "p")
    # EMT has no parameters for Si: that structure fails, the copper ones are labelled (two
    # identical ones: two tasks, two results).
    cu = bulk("Cu", cubic=True)
    write_frames(root / "mixed.extxyz", [cu, bulk("Si"), cu])
    with inside(root):
        project = zntrack.Project()
        with project:
            loaded = an.LoadData(file="mixed.extxyz")
            an.Label(data=loaded.frames, labeller=an.EMTLabeller())
        build(project)
        repro(root)
        node = zntrack.from_rev("Label")
        assert node.metrics == {"n_labelled": 2, "n_failed": 1}
        assert [f["index"] for f in node.failures] == [1]
        assert node.failures[0]["error"] == "NotImplementedError: No EMT-potential for Si"
        assert len(node.frames) == 2 and node.frames[0].get_stress().shape == (6,)


def test_killed_dvc_repro_resumes_train_from_its_checkpoint(tmp_path):
    from flax import serialization

    root = init_repo(tmp_path / "p")
    with inside(root):
        project = zntrack.Project()
        with project:
            labelled = an.LoadData(file=seed_file(root, 8))
            an.Train(data=labelled.frames, config={**TRAIN, "n_epochs": 60})
        build(project)
    sh("dvc", "repro", "LoadData", cwd=root)
    checkpoint = root / ".apax_checkpoints" / "Train" / "latest.msgpack"
    proc = subprocess.Popen(
        ["dvc", "repro"],
        cwd=root,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    before = None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if checkpoint.is_file():
            state = serialization.msgpack_restore(checkpoint.read_bytes())
            if state["epoch"] >= 3:
                os.killpg(proc.pid, signal.SIGKILL)
                before = state["log"]
                break
        time.sleep(0.01)
    proc.wait()
    assert before is not None and len(before) < 60, "the stage finished before it was killed"
    repro(root)  # `dvc repro` deletes the stage outputs; the checkpoint lives elsewhere
    with open(root / "nodes/Train/model/log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 61))
    # The epochs run before the kill were not run again: their recorded wall times survive.
    for old, new in zip(before, rows, strict=False):
        assert float(new["epoch_s"]) == pytest.approx(old["epoch_s"])
    assert not checkpoint.parent.exists()  # cleaned up after success


def test_an_empty_output_is_a_valid_zero_frame_h5md_file(tmp_path):
    """Split with a 0.0 fraction, Select from an empty pool: readers of H5MD (znh5md, IPSuite,
    mlipx, ZnDraw) see an empty trajectory, not a file they crash on."""
    import znh5md
    from ase.build import bulk

    from apax_nodes.frames import write_h5

    write_h5(tmp_path / "empty.h5", [])
    io = znh5md.IO(tmp_path / "empty.h5")
    assert len(io) == 0 and list(io[:]) == []
    io.extend([bulk("Cu", cubic=True)])  # and it is a trajectory one can append to
    assert len(znh5md.IO(tmp_path / "empty.h5")) == 1


FOREIGN = '''
import zntrack


class EMTModel(zntrack.Node):
    """A model node of another package: it offers get_calculator and nothing else."""

    def run(self):
        pass

    def get_calculator(self, **kwargs):
        from ase.calculators.emt import EMT

        return EMT()
'''


def test_evaluate_and_select_take_a_model_of_another_package(tmp_path, monkeypatch):
    root = init_repo(tmp_path / "p")
    (root / "foreign_models.py").write_text(FOREIGN)
    monkeypatch.syspath_prepend(str(root))
    import foreign_models

    with inside(root):
        project = zntrack.Project()
        with project:
            cells = an.LoadData(file=seed_file(root, 3))
            labelled = an.Label(data=cells.frames, labeller=foreign_models.EMTModel())
            emt = foreign_models.EMTModel(name="EMT")
            an.Evaluate(model=emt, data=labelled.frames)
            random = {"kind": "random", "seed": 0}
            an.Select(model=emt, pool=labelled.frames, train_data=[], n=2, method=random)
        build(project)
        repro(root)
        metrics = zntrack.from_rev("Evaluate").metrics
        assert len(zntrack.from_rev("Select").selected_ids) == 2
        # Where our engine is needed, the graph refuses the model when it is built.
        other = zntrack.Project()
        with other, pytest.raises(TypeError, match="MD.model: needs an apax model"):
            an.MD(model=foreign_models.EMTModel(), data=[], config={"duration": 4})
        with other, pytest.raises(TypeError, match="Select.model: needs an apax model"):
            an.Select(model=foreign_models.EMTModel(), pool=[], train_data=[], n=1)
    assert metrics["forces_mae"] < 1e-9 and metrics["energy_mae"] < 1e-9  # EMT against EMT


def test_only_bad_input_ends_a_stage_with_one_line(monkeypatch):
    """An InputError ends a stage with one line naming it; any other exception is a bug and
    keeps its traceback; APAX_TRACEBACK=1 keeps the traceback of bad input too."""
    from apax_core.errors import InputError
    from apax_nodes.errors import one_line_errors

    @one_line_errors
    class Stage:
        name = "iter2_Train"

        def __init__(self, error: Exception):
            self.error = error

        def run(self) -> None:
            raise self.error

    bad_input = Stage(InputError("train.extxyz: structure 3 has no forces"))
    with pytest.raises(SystemExit, match="^iter2_Train: train.extxyz: structure 3 has no forces$"):
        bad_input.run()
    with pytest.raises(ValueError, match="operands could not be broadcast"):
        Stage(ValueError("operands could not be broadcast")).run()
    monkeypatch.setenv("APAX_TRACEBACK", "1")
    with pytest.raises(InputError):
        bad_input.run()


def test_apax_nodes_report_of_a_stage_not_run_is_one_line_unless_apax_traceback(
    tmp_path, monkeypatch
):
    from apax_nodes.cli import main

    def not_run(name, rev=None):
        raise FileNotFoundError(f"nodes/{name}/metrics.json")

    (tmp_path / "dvc.yaml").write_text("stages:\n  Report:\n    cmd: zntrack run Report\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(zntrack, "from_rev", not_run)
    assert main(["report"]) == 2
    monkeypatch.setenv("APAX_TRACEBACK", "1")
    with pytest.raises(FileNotFoundError, match="nodes/Report/metrics.json"):
        main(["report"])


def test_bad_node_configs_are_bad_input_naming_the_field():
    """A node's config parameters are validated at the edge into a ConfigError (bad input,
    one message naming every bad field), not pydantic's ValidationError."""
    from apax_core.config import ConfigError
    from apax_nodes.md import md_config
    from apax_nodes.select import selection_method
    from apax_nodes.train import train_spec

    with pytest.raises(ConfigError, match=r"in config:\n  n_epochs: Input should be greater"):
        train_spec({"n_epochs": 0})
    with pytest.raises(ConfigError, match=r"in config:\n  dt: Input should be greater"):
        md_config({"duration": 10, "dt": -1})
    with pytest.raises(ConfigError, match=r"in method:\n  .*kind"):
        selection_method({"kind": "best"})


def test_bad_input_ends_a_stage_with_one_line_naming_it(tmp_path):
    """A data error inside a stage reads like the CLI's: the stage, the file, the structure."""
    import ase.io
    from ase.build import bulk

    root = init_repo(tmp_path / "p")
    atoms = bulk("Cu", cubic=True)
    atoms.positions[1] = np.nan
    ase.io.write(root / "bad.extxyz", [bulk("Cu", cubic=True), atoms])
    with inside(root):
        project = zntrack.Project()
        with project:
            an.LoadData(file="bad.extxyz")
        build(project)
    out = subprocess.run(["dvc", "repro"], cwd=root, capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "LoadData: bad.extxyz: structure 1 has non-finite positions" in text
    assert "Traceback" not in text


def test_a_failed_repro_leaves_no_stage_output_for_git_to_capture(tmp_path):
    """DVC git-ignores a stage's outputs only when the whole repro succeeds: here the second
    stage fails, and the first one's outputs must still be ignored (entries made at build)."""
    root = init_repo(tmp_path / "p")
    with inside(root):
        project = zntrack.Project()
        with project:
            crystal = an.BuildBulk(element="Cu", repeat=[2, 2, 2])
            an.Split(data=crystal.frames, fractions=[0.5, 0.5])  # bad input: fails at run
        build(project)
    out = subprocess.run(["dvc", "repro"], cwd=root, capture_output=True, text=True)
    assert out.returncode != 0 and (root / "nodes/BuildBulk/frames.h5").is_file()
    listed = sh("git", "status", "--porcelain", "--untracked-files=all", cwd=root).split("\n")
    outputs = [line for line in listed if line.strip() and not line.endswith(".gitignore")]
    outputs = [line for line in outputs if not line.endswith(("dvc.yaml", "params.yaml"))]
    assert not [line for line in outputs if "nodes/" in line], outputs


def test_a_stage_process_imports_jax_md_and_e3nn_only_when_it_needs_them():
    """Every `zntrack run` imports apax_nodes; jax-md (even its light parts) and e3nn-jax (a
    second or more) are time per stage that Train, Label or Select of a GMNN never use."""
    code = (
        "import sys, apax_nodes, apax_core.md.walkers, apax_core.train.trainer; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'jax_md', 'e3nn_jax'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_md_engine_imports_the_jax_md_parts_it_uses_and_leaves_jax_md_whole():
    """An MD process imports jax-md's space, partition, simulate and dataclasses without the
    package's __init__, whose rigid_body and energy modules run ~120 XLA programs (4-5 s); a
    later `import jax_md` still gets the whole package, sharing those module objects."""
    code = (
        "import sys, apax_core.md.run; from apax_core.md.jax_md_parts import space; "
        "heavy = sorted({'jax_md.rigid_body', 'jax_md.energy', 'e3nn_jax'} & set(sys.modules)); "
        "import jax_md; from jax_md import energy, rigid_body; "
        "print(heavy, jax_md.space is space, callable(energy.lennard_jones_pair))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] True True"


def test_a_data_stage_process_imports_no_jax():
    """`zntrack run apax_nodes.split.Split` (and the other data stages) imports its own node's
    dependencies only (apax_nodes resolves its names on first use): no JAX, flax or optax, whose
    import is seconds per stage of every iteration."""
    modules = ["split", "label", "dataset", "build_bulk", "bootstrap", "report"]
    code = "import sys, apax_nodes; " + "; ".join(f"import apax_nodes.{m}" for m in modules)
    code += "; print(sorted({'jax', 'flax', 'optax'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
