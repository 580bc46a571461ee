"""The command line given bad input: one line naming the file, structure or field, exit code 2,
no traceback, before any expensive work. The full MD template: valid, every field commented
with its unit."""

from __future__ import annotations

import re

import numpy as np
import pytest
import yaml
from ase.build import bulk
from conftest import emt_frames, save_model_dir

from apax_core.cli import main
from apax_core.config import MDConfig
from apax_core.data import DataError, write_frames


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
    close = bulk("Cu", "fcc", a=3.61, cubic=True)
    close.positions[1] = close.positions[0] + [0.2, 0.0, 0.0]
    write_frames(root / "close.extxyz", [close])
    (root / "md.yaml").write_text("dynamics: {kind: langevin}\nduration: 4\ndt: 2\n")
    broken = save_model_dir(root / "broken", cuag_model)
    config = yaml.safe_load((broken / "config.yaml").read_text())
    config["model"]["kind"] = "painn"
    (broken / "config.yaml").write_text(yaml.safe_dump(config))
    (root / "train.yaml").write_text(
        f"directory: {root / 'm'}\ntrain_file: {root / 'no.xyz'}\nn_epochs: 1\n"
    )
    (root / "zero.yaml").write_text(
        f"directory: {root / 'm'}\ntrain_file: {root / 'cu.extxyz'}\nn_epochs: 0\n"
    )
    return root


CASES = {
    "eval: missing data file": (["eval", "{model}", "{root}/missing.extxyz"], "missing.extxyz"),
    "eval: no model directory": (["eval", "{root}/nomodel", "{root}/cu.extxyz"], "nomodel"),
    "eval: an element the model lacks": (["eval", "{model}", "{root}/gold.extxyz"], "Au"),
    "eval: NaN positions": (["eval", "{model}", "{root}/nan.extxyz"], "structure 0"),
    "eval: a model directory with a bad config": (
        ["eval", "{root}/broken", "{root}/cu.extxyz"],
        "unknown model kind",
    ),
    "calibrate: a single model": (
        ["calibrate", "{model}", "{root}/cu.extxyz"],
        "calibration needs an ensemble model",
    ),
    "md: index out of range": (
        ["md", "{model}", "{root}/md.yaml", "--structure", "{root}/cu.extxyz", "--index", "7"],
        "no structure 7",
    ),
    "md: overlapping atoms": (
        ["md", "{model}", "{root}/md.yaml", "--structure", "{root}/close.extxyz"],
        "atoms 0 (Cu) and 1 (Cu) are 0.200 A apart",
    ),
    "md: missing start structure": (
        ["md", "{model}", "{root}/md.yaml", "--structure", "{root}/none.extxyz"],
        "none.extxyz",
    ),
    "md: no start structure given": (["md", "{model}", "{root}/md.yaml"], "no initial structure"),
    "train: missing training file": (["train", "{root}/train.yaml"], "no.xyz"),
    "train: a field out of range": (["train", "{root}/zero.yaml"], "n_epochs: Input should be"),
    "select: missing pool": (
        ["select", "{model}", "{root}/cu.extxyz", "{root}/none.extxyz", "-n", "1"],
        "none.extxyz",
    ),
    "select: n of 0": (
        ["select", "{model}", "{root}/cu.extxyz", "{root}/cu.extxyz", "-n", "0"],
        "n must be at least 1",
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


def test_a_bug_below_the_command_line_keeps_its_traceback(files, monkeypatch):
    """Only bad input (an InputError) becomes one line and exit code 2: a ValueError of an
    internal invariant (here from loading the model) propagates with its traceback."""

    def shape_bug(path):
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setattr("apax_core.model_dir.load_model", shape_bug)
    with pytest.raises(ValueError, match="could not be broadcast"):
        main(["eval", str(files / "model"), str(files / "cu.extxyz")])


@pytest.mark.parametrize("command", ["eval", "select"])
def test_apax_traceback_shows_the_traceback_of_bad_input(command, files, monkeypatch):
    monkeypatch.setenv("APAX_TRACEBACK", "1")
    args = {
        "eval": ["eval", str(files / "model"), str(files / "none.extxyz")],
        "select": ["select", str(files / "model"), str(files / "cu.extxyz")]
        + [str(files / "none.extxyz"), "-n", "1"],
    }[command]
    with pytest.raises(DataError, match="none.extxyz: file not found"):
        main(args)


# ------------------------------------------------------------------------------------ template


def full_md_template(capsys) -> str:
    assert main(["template", "md", "--full"]) == 0
    return capsys.readouterr().out


def commented_blocks(text: str) -> list[tuple[str, object]]:
    """(field, YAML content) of every top-level commented block of a full template: the lines
    under a ``# name:  (...)`` header that start with ``#  ``, uncommented."""
    blocks, lines = [], text.splitlines()
    for k, line in enumerate(lines):
        if line.startswith("# ") and line.endswith(")") and ":  (" in line:
            body = []
            for below in lines[k + 1 :]:
                if not below.startswith("#  "):
                    break
                body.append(below[2:])
            blocks.append((line[2:].split(":")[0], yaml.safe_load("\n".join(body))))
    return blocks


def test_the_full_md_template_validates_and_says_every_unit(tmp_path, capsys):
    """`apax-core template md --full` is YAML that `apax-core validate md` accepts; every field
    line carries a comment (its docstring), and the units a user must not guess are in it."""
    text = full_md_template(capsys)
    write_frames(tmp_path / "start.extxyz", [bulk("Cu", "fcc", a=3.61, cubic=True)])
    raw = yaml.safe_load(text)
    raw["structure"] = str(tmp_path / "start.extxyz")
    (tmp_path / "md.yaml").write_text(yaml.safe_dump(raw))
    assert main(["validate", "md", str(tmp_path / "md.yaml")]) == 0
    assert capsys.readouterr().out.endswith("valid\n")
    field_line = re.compile(r"^(# )?\s*(- )?\w+:( |$)")  # commented or not, list items too
    fields = [ln for ln in text.splitlines() if field_line.match(ln) and not ln.endswith(")")]
    assert len(fields) > 60
    assert [ln for ln in fields if " # " not in ln] == [], "fields without a comment"
    units = {
        "dt:": "in fs",
        "duration:": "in fs",
        "skin:": "in A",
        "tau:": "in time steps, not fs",
        "tau_p:": "in fs, not time steps",
        "friction:": "in 1/fs",
        "compressibility:": "in 1/bar",
        "P:": "in bar",
        "T:": "in K",
        "period:": "in fs",
        "threshold: 0.05": "In eV/atom",
        "per_atom:": "in eV/atom",
        "threshold: 1.0": "In eV/A",
        "max_T:": "In K",
        "height:": "in eV",
    }
    notes = [ln.rpartition(" # ")[::2] for ln in text.splitlines()]
    for field, unit in units.items():
        found = [note for code, note in notes if code.lstrip("# ").startswith(field)]
        assert found and all(unit in note for note in found), (field, found)


def test_every_commented_kind_of_the_full_md_template_validates(capsys):
    """Each commented block (another dynamics, schedule, the stop checks, UDD) validates when
    uncommented: the NPT kinds and every stop check with its example threshold."""
    blocks = commented_blocks(full_md_template(capsys))
    kinds = {
        (field, (content or {}).get("kind") if isinstance(content, dict) else "list")
        for field, content in blocks
    }
    assert {("dynamics", k) for k in ("nve", "langevin", "npt_scr", "npt_mtk")} <= kinds
    assert {("temperature", "piecewise"), ("checks", "list"), ("udd", None)} <= kinds
    for field, content in blocks:
        npt = {"dynamics": {"kind": "npt_scr"}} if field == "checks" else {}
        config = MDConfig.model_validate({"duration": 10.0, **npt, field: content})
        assert getattr(config, field) is not None
    checks = dict(blocks)["checks"]
    assert [c["kind"] for c in checks] == [
        "energy_uncertainty",
        "forces_uncertainty",
        "max_temperature",
        "volume",
    ]
