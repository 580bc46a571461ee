"""Building a project: ``project.build()`` plus a tidier dvc.yaml.

ZnTrack registers every stage's ``node-meta.json`` (run counts, times, dependency lockfiles) as
a DVC metric, which floods ``dvc metrics show``. :func:`build` moves those files to the stages'
cached outputs, and in a loop project every per-stage metrics file too: ``dvc metrics show``
then lists the loop reports, and ``zntrack`` still reads every file through the DVC cache
exactly as before. :func:`ignore_outputs` git-ignores every cached output when the graph is
built, so a failed ``dvc repro`` leaves nothing for ``git add -A`` to capture.
"""

from __future__ import annotations

from pathlib import Path

import yaml
import zntrack

from apax_core.files import atomic_write


def tidy_dvc_yaml(path: str | Path = "dvc.yaml") -> None:
    """Move node-meta.json files from metrics to outs; in a project with a loop Report, every
    other stage's metrics too, so that ``dvc metrics show`` lists the reports only."""
    path = Path(path)
    spec = yaml.safe_load(path.read_text())
    stages = spec.get("stages", {})
    has_report = any(name.endswith("Report") for name in stages)
    for name, stage in stages.items():
        metrics = stage.get("metrics", [])
        moved = [
            m
            for m in metrics
            if _path_of(m).endswith("node-meta.json")
            or (has_report and not name.endswith("Report"))
        ]
        if not moved:
            continue
        stage["metrics"] = [m for m in metrics if m not in moved]
        if not stage["metrics"]:
            del stage["metrics"]
        stage.setdefault("outs", []).extend(_path_of(m) for m in moved)
    atomic_write(path, yaml.safe_dump(spec, sort_keys=False))


def _path_of(entry) -> str:
    """The file of a dvc.yaml output entry (a path, or {path: options})."""
    return str(next(iter(entry))) if isinstance(entry, dict) else str(entry)


def ignore_outputs(root: str | Path = ".") -> None:
    """Git-ignore every cached stage output now, as ``dvc repro`` would once the stage ran.

    DVC writes a stage's .gitignore entries only when the whole repro succeeds (its issue
    11091): after a failed repro the outputs of the stages that did run are untracked files,
    and ``git add -A`` commits them, which breaks the next repro ("already tracked by SCM").
    Entries written when the graph is built close that gap; DVC finds them and adds none.
    """
    from dvc.repo import Repo  # deferred: dvc's import is slow

    if not (Path(root) / ".dvc").is_dir():
        return  # not a DVC repository (yet): dvc init, then build again
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            for out in stage.outs:
                if out.use_cache:
                    Path(out.fs_path).parent.mkdir(parents=True, exist_ok=True)
                    repo.scm.ignore(out.fs_path)


def build(project: zntrack.Project) -> None:
    """Write params.yaml, zntrack.json and a tidy dvc.yaml for ``project``, and git-ignore the
    stages' cached outputs."""
    project.build()
    tidy_dvc_yaml()
    ignore_outputs()
