"""The command line given bad input: one line naming the file, structure or field, exit code 2,
no traceback, before any expensive work."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from conftest import emt_frames, save_model_dir

from apax_core.cli import main
from apax_core.data import write_frames


@pytest.fixture(scope="module")
def files(tmp_path_factory, cuag_model):
    root = tmp_path_factory.mktemp("cli")
    save_model_dir(root / "model", cuag_model)
    write_frames(root / "cu.extxyz", emt_frames(2, seed=1))
    gold = bulk("Au", "fcc", a=4.08, cubic=True).repeat(3)
    write_frames(root / "gold.extxyz", [gold])
    nan = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    nan.positions[3] = np.nan
    write_frames(root / "nan.extxyz", [nan])
    write_frames(root / "small.extxyz", [bulk("Cu", "fcc", a=3.61, cubic=True)])
    (root / "md.yaml").write_text("dynamics: {kind: langevin}\nduration: 4\ndt: 2\n")
    (root / "train.yaml").write_text(
        f"directory: {root / 'm'}\ntrain_file: {root / 'no.xyz'}\nn_epochs: 1\n"
    )
    return root


CASES = {
    "eval: missing data file": (["eval", "{model}", "{root}/missing.extxyz"], "missing.extxyz"),
    "eval: no model directory": (["eval", "{root}/nomodel", "{root}/cu.extxyz"], "nomodel"),
    "eval: an element the model lacks": (["eval", "{model}", "{root}/gold.extxyz"], "Au"),
    "eval: NaN positions": (["eval", "{model}", "{root}/nan.extxyz"], "structure 0"),
    "md: index out of range": (
        ["md", "{model}", "{root}/md.yaml", "--structure", "{root}/cu.extxyz", "--index", "7"],
        "no structure 7",
    ),
    "md: cell too small": (
        ["md", "{model}", "{root}/md.yaml", "--structure", "{root}/small.extxyz"],
        "too small",
    ),
    "md: missing start structure": (
        ["md", "{model}", "{root}/md.yaml", "--structure", "{root}/none.extxyz"],
        "none.extxyz",
    ),
    "train: missing training file": (["train", "{root}/train.yaml"], "no.xyz"),
    "select: missing pool": (
        ["select", "{model}", "{root}/cu.extxyz", "{root}/none.extxyz", "-n", "1"],
        "none.extxyz",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_exit_code_2(case, files, capsys):
    args, named = CASES[case]
    args = [a.format(model=files / "model", root=files) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert named in err.strip().splitlines()[-1]
