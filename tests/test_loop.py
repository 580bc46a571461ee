"""The active-learning loop end to end in real repositories: repro, from_rev through a DVC
remote, warm start across repositories, appending iterations, calculators in ASE MD."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
import zntrack
from ase.md.verlet import VelocityVerlet
from conftest import TINY
from test_nodes import TRAIN, commit, init_repo, inside, repro, seed_file, sh

import apax_nodes as an
from apax_core.config import ConfigError
from apax_nodes.loop import LoopSettings, build_loop
from apax_nodes.model import local_model_dir
from apax_nodes.project import build

SHALLOW = {
    **TRAIN,
    "model": {**TINY, "ensemble": {"kind": "shallow", "n_members": 3}},
    "loss": [{"quantity": "energy", "kind": "crps", "atoms_exponent": 1.0}, {"quantity": "forces"}],
}
MD = {
    "dynamics": {"kind": "langevin"},
    "temperature": {"kind": "oscillating", "T_low": 300.0, "T_high": 600.0, "period": 200.0},
    "dt": 2.0,
    "duration": 400.0,
    "n_inner": 50,
    "sampling_rate": 10,
    "skin": 0.4,
    "udd": {"height": 0.2, "width": 1.0},
    # A threshold nothing stays below: MD stops at its first kept frame, so every iteration
    # selects from a pool shorter than n_select (the loop must not crash on that).
    "checks": [{"kind": "forces_uncertainty", "threshold": 1e-9}],
}


def graph(n_iterations: int, md: dict = MD, n_walkers: int = 2, until: dict | None = None):
    project = zntrack.Project()
    with project.group("data"):
        crystal = an.BuildBulk(element="Cu", repeat=[3, 3, 3], vacancies=1)
        boot = an.Bootstrap(data=crystal.frames, n=6, rattle=0.08, seed=0)
        seed = an.Label(data=boot.frames, labeller=an.EMTLabeller())
        split = an.Split(data=seed.frames, fractions=[0.67, 0.33, 0.0])
        test = an.ReferenceMD(
            data=crystal.frames, labeller=an.EMTLabeller(), duration=80.0, sampling_rate=20
        )
    settings = LoopSettings(
        n_iterations=n_iterations,
        train=SHALLOW,
        warm_train={**SHALLOW, "warm_start": {"freeze": ["representation"]}},
        md=md,
        n_walkers=n_walkers,
        n_select=3,
        val_fraction=0.5,  # of 2 picks, 1 joins the validation set and calibrates iter1
    )
    build_loop(
        project,
        settings,
        initial_data=split,
        test_data=test,
        start_structures=crystal,
        labeller=an.EMTLabeller(),
        until=until,
    )
    build(project)


@pytest.fixture(scope="module")
def loop_repo(tmp_path_factory):
    root = init_repo(tmp_path_factory.mktemp("loop") / "project")
    with inside(root):
        graph(1)
    repro(root)
    remote = tmp_path_factory.mktemp("remote")
    sh("dvc", "remote", "add", "-d", "storage", str(remote), cwd=root)
    sha = commit(root, "one iteration")
    sh("dvc", "push", "-q", cwd=root)
    return root, sha


def test_loop_runs_and_warm_starts(loop_repo):
    root, _ = loop_repo
    with inside(root):
        first, second = zntrack.from_rev("iter0_Train"), zntrack.from_rev("iter1_Train")
        a, b = first.get_model(), second.get_model()
        n_train = first.metrics["n_train"], second.metrics["n_train"]
        md = zntrack.from_rev("iter0_MD")
        status, walkers = md.status, [f.info["walker"] for f in md.frames]
        select = zntrack.from_rev("iter0_Select")
        picked, select_metrics = select.selected_ids, select.metrics  # read lazily, from here
        dataset = zntrack.from_rev("iter0_Dataset")
        n_data, calibration = len(dataset.frames), dataset.calibration_frames
    key = ("representation", "radial_coeffs")
    assert np.array_equal(a.params[key[0]][key[1]], b.params[key[0]][key[1]])  # warm, frozen
    # ... while the readout continued training, on the grown dataset
    readout = a.params["readout"]["dense_1"]["kernel"], b.params["readout"]["dense_1"]["kernel"]
    assert not np.array_equal(*readout)
    assert status["n_stopped"] == status["n_walkers"] == 2
    assert status["reasons"] == {"forces_uncertainty": 2}
    assert walkers == [0, 1]  # each walker keeps the frame that fired, tagged
    assert picked == [0, 1] and select_metrics["shortfall"] == 1
    assert n_data == 4 + 1 and n_train == (4, n_data)
    # iter0 calibrates on the initial validation data, iter1 on the loop's own MD frame
    assert "walker" in calibration[0].info  # an MD frame, not a bootstrap one
    cal = [(m["n_calibration"], m["calibration_set"]) for m in (first.metrics, second.metrics)]
    assert cal == [(1, "validation"), (1, "calibration")] and len(calibration) == 1
    assert not list(root.glob("nodes/**/md_checkpoint.npz"))  # resume state stays out of outs
    table = sh("apax-nodes", "report", cwd=root).splitlines()
    assert table[0] == "Report:" and "F MAE meV/A" in table[1]
    assert [line.split()[0] for line in table[2:4]] == ["0", "1"]  # one row per iteration
    assert "2/2 stopped (forces_uncertainty)" in table[2]
    assert "1 val" in table[2] and "1 MD" in table[3]
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=root))
    assert {f for rev in shown.values() for f in rev["data"]} == {"nodes/Report/metrics.json"}
    assert (root / "nodes/Report/plots/progress.png").is_file()
    assert ".apax_checkpoints/" in (root / ".gitignore").read_text().splitlines()


def test_stages_depend_on_the_grown_dataset_and_models_answer_mlipx(loop_repo):
    root, _ = loop_repo
    deps = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["iter1_Train"]["deps"]
    assert not any("data/Label/" in d for d in deps)  # only through the Dataset node
    assert any("iter0/Dataset/frames.h5" in d for d in deps)
    assert any("iter0/Train/model" in d for d in deps)  # the warm start
    assert (root / "nodes/iter0/Evaluate/plots/force_parity.png").is_file()
    with inside(root):
        node = zntrack.from_rev("iter0_Train")
        assert node.available  # the engine imports here
        assert node.get_spec()["data"]["method"] == {"functional": "EMT"}  # its labeller
        atoms = zntrack.from_rev("data_Label").frames[0]
        atoms.calc = node.get_calculator()
        assert np.isfinite(atoms.get_potential_energy())
        assert node.metrics["n_implausible"] == 0  # rattled EMT cells are all plausible
        assert zntrack.from_rev("iter0_Evaluate").metrics["forces_mae"] > 0


def test_from_rev_through_a_dvc_remote_gives_a_working_calculator(loop_repo, tmp_path):
    root, sha = loop_repo
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(root), str(clone))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with inside(root):
        atoms = zntrack.from_rev("data_ReferenceMD").frames[0]
        local = zntrack.from_rev("iter1_Train").get_calculator()
        atoms.calc = local
        expected = atoms.get_potential_energy()
    with inside(elsewhere):  # not a repository: everything comes through git + the DVC remote
        node = zntrack.from_rev("iter1_Train", remote=str(clone), rev=sha)
        calc = node.get_calculator()
        fetched = local_model_dir(node)
        assert local_model_dir(node) == fetched and fetched.name == "model"  # fetched once
        assert not fetched.is_relative_to(elsewhere)  # a temporary copy, removed at exit
    atoms = atoms.copy()
    atoms.calc = calc
    assert atoms.get_potential_energy() == pytest.approx(expected, abs=1e-6)
    assert np.all(atoms.calc.results["forces_uncertainty"] > 0)
    # The calculator drives an ASE MD run.
    VelocityVerlet(atoms, timestep=1.0).run(3)
    assert np.isfinite(atoms.get_potential_energy())


def test_warm_start_from_a_from_rev_model_in_a_new_repository(loop_repo, tmp_path):
    root, sha = loop_repo
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(root), str(clone))
    new = init_repo(tmp_path / "new")
    with inside(new):
        base = zntrack.from_rev("iter1_Train", remote=str(clone), rev=sha)
        project = zntrack.Project()
        with project:
            labelled = an.LoadData(file=seed_file(new, 4, seed=5))
            an.Train(
                data=labelled.frames,
                model=base,
                config={**SHALLOW, "warm_start": {"freeze": ["representation"]}},
            )
        build(project)
    repro(new)
    with inside(new):
        warm = zntrack.from_rev("Train").get_model()
    with inside(root):
        original = zntrack.from_rev("iter1_Train").get_model()
    key = ("representation", "radial_coeffs")
    assert np.array_equal(warm.params[key[0]][key[1]], original.params[key[0]][key[1]])


def test_appending_an_iteration_runs_only_the_new_stages(loop_repo):
    root, _ = loop_repo
    with inside(root):
        graph(2)
    # what `dvc repro` would run, decided by DVC without running it (saves a repro)
    stale = set(json.loads(sh("dvc", "status", "--json", cwd=root)))
    assert stale == {
        "iter1_MD",
        "iter1_Select",
        "iter1_Label",
        "iter1_Dataset",
        "iter2_Train",
        "iter2_Evaluate",
        "Report",
    }


def test_named_loops_keep_their_stage_names_in_any_build_order(tmp_path):
    def names(order):
        root = init_repo(tmp_path / "-".join(str(n) for n in order))
        with inside(root):
            project = zntrack.Project()
            with project.group("data"):
                crystal = an.BuildBulk(element="Cu", repeat=[3, 3, 3], vacancies=1)
                split = an.Split(data=crystal.frames, fractions=[0.67, 0.33, 0.0])
            settings = LoopSettings(n_iterations=1, train=SHALLOW, md=MD, n_select=2)
            for name in order:
                build_loop(
                    project,
                    settings,
                    initial_data=split,
                    test_data=split,
                    start_structures=crystal,
                    labeller=an.EMTLabeller(),
                    name=name,
                )
            build(project)
        return set(yaml.safe_load((root / "dvc.yaml").read_text())["stages"])

    forward, backward = names(["cu", "ag"]), names(["ag", "cu"])
    assert forward == backward
    assert {"cu_iter0_Train", "ag_iter1_Evaluate", "cu_iter0_Select"} <= forward
    assert not any(n.endswith("_1") for n in forward)
    # a second loop of one name, or a second unnamed loop, once got `_1` stage names
    with pytest.raises(ConfigError, match="has a loop named 'cu' already"):
        names(["cu", "cu"])
    with pytest.raises(ConfigError, match="has an unnamed loop already"):
        names([None, None])
    with pytest.raises(ConfigError, match=r"loop name 'cu_2': .* without '_'"):
        names(["cu_2"])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("n_select", 0, "LoopSettings.n_select must be at least 1, got 0"),
        ("val_fraction", 1.0, r"LoopSettings.val_fraction must be in \[0, 1\), got 1.0"),
        ("max_calibration", 0, "LoopSettings.max_calibration must be at least 1, got 0"),
        ("md", {**MD, "dt": -1.0}, "(?s)LoopSettings.md: .*dt: Input should be greater than 0"),
        ("md_executor", {"kind": "cloud"}, "LoopSettings.md_executor: "),
    ],
)
def test_loop_settings_name_the_bad_field_as_bad_input(field, value, message):
    settings = LoopSettings(**{"n_iterations": 1, "train": SHALLOW, "md": MD, field: value})
    with pytest.raises(ConfigError, match=message):
        settings.validate()


def test_the_committed_default_loop_is_what_example_project_main_writes(tmp_path):
    """`dvc repro` at the repository root runs dvc.yaml + params.yaml as committed: they must
    be regenerated whenever a node's params change (a missing param fails the main job)."""
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    fresh = init_repo(tmp_path / "fresh")
    sh(sys.executable, str(root / "example_project" / "main.py"), cwd=fresh)
    for name in ("dvc.yaml", "params.yaml", "zntrack.json"):
        assert (fresh / name).read_text() == (root / name).read_text(), name


def test_grow_stops_by_its_criterion_and_at_the_maximum(loop_repo, tmp_path, monkeypatch):
    """grow on a copy of the one-iteration loop (its stages are cached): a criterion that never
    holds appends iteration 1, reproduces only the new stages and stops at the maximum."""
    from apax_nodes import grow as growing

    root = tmp_path / "grow"
    shutil.copytree(loop_repo[0], root, symlinks=True)
    never = {"patience": 1, "force_change_percent": 0.0, "max_iterations": 2}
    runs = []

    def repro_counting() -> None:
        runs.append(set(json.loads(sh("dvc", "status", "--json", cwd=root))))
        sh("dvc", "repro", cwd=root)

    with inside(root):
        n, why = growing.grow(lambda n: graph(n, until=never), repro=repro_counting)
        report = zntrack.from_rev("Report")
        assert report.metrics["done"] == 0 and report.verdict() == why
    assert n == 2 and why.startswith("stopped at the maximum of 2 iterations (iteration 1: 2/2")
    assert runs[0] == {"Report"}  # the criterion is the Report's param
    assert {"iter1_MD", "iter2_Train", "Report"} <= runs[1] and "iter0_Train" not in runs[1]
    # the grown graph is the one build_loop writes for that number of iterations
    fresh = init_repo(tmp_path / "fresh")
    with inside(fresh):
        graph(2, until=never)
    for name in ("dvc.yaml", "params.yaml", "zntrack.json"):
        assert (fresh / name).read_text() == (root / name).read_text(), name
    # the Report saying done ends grow at once (the verdict itself is tested below)
    monkeypatch.setattr(growing, "verdict", lambda rows, until: (True, "done: judged"))
    with inside(root):
        assert growing.grow(lambda n: runs.append(n), repro=lambda: None) == (1, "done: judged")


def test_the_verdict_needs_patience_quiet_iterations_in_a_row():
    from apax_nodes.grow import Until, verdict

    def row(stopped, mae):
        return {"n_md_stopped": stopped, "n_md_walkers": 2, "test_forces_mae": mae}

    rows = [row(0, 100.0), row(1, 90.0), row(0, 88.0), {"test_forces_mae": 87.0}]
    assert verdict(rows, Until(patience=1)) == (
        True,
        "done: iteration 2: walkers ran to the end, test F MAE changed 1.1 %",
    )
    assert verdict(rows, Until(patience=2)) == (
        False,
        "not done (iteration 1: 1/2 walkers stopped early)",
    )
    assert verdict(rows, Until(patience=2, max_iterations=3))[1].startswith(
        "stopped at the maximum of 3 iterations (iteration 1: 1/2"
    )
    assert verdict(rows, Until(patience=1, force_change_percent=1.0)) == (
        False,
        "not done (iteration 2: test F MAE changed 1.1 % (>= 1 %))",
    )
    assert verdict(rows[:2], Until(patience=2))[1] == "not done: 1 iterations, 2 quiet ones needed"


def test_grow_names_a_missing_script_and_a_failing_build(tmp_path, monkeypatch, capsys):
    from apax_nodes.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["grow", "nowhere.py"]) == 2
    assert "no script nowhere.py" in capsys.readouterr().err
    (tmp_path / "broken.py").write_text("raise SystemExit(3)\n")
    assert main(["grow", "broken.py", "--start", "2"]) == 3
    assert "broken.py --iterations 2 failed (exit 3)" in capsys.readouterr().err
