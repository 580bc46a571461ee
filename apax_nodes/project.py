"""Building a project: ``project.build()`` plus a tidier dvc.yaml.

ZnTrack registers every stage's ``node-meta.json`` (run counts, times, dependency lockfiles) as
a DVC metric, which floods ``dvc metrics show``. :func:`build` moves those files to the stages'
cached outputs: ``dvc metrics show`` then lists the iteration metrics only, and ``zntrack``
still reads node-meta through the DVC cache exactly as before.
"""

from __future__ import annotations

from pathlib import Path

import yaml
import zntrack

from apax_core.files import atomic_write


def tidy_dvc_yaml(path: str | Path = "dvc.yaml") -> None:
    path = Path(path)
    spec = yaml.safe_load(path.read_text())
    for stage in spec.get("stages", {}).values():
        metrics = stage.get("metrics", [])
        meta = [
            m
            for m in metrics
            if isinstance(m, dict) and any(str(k).endswith("node-meta.json") for k in m)
        ]
        if not meta:
            continue
        stage["metrics"] = [m for m in metrics if m not in meta]
        if not stage["metrics"]:
            del stage["metrics"]
        stage.setdefault("outs", []).extend(next(iter(m)) for m in meta)
    atomic_write(path, yaml.safe_dump(spec, sort_keys=False))


def build(project: zntrack.Project) -> None:
    """Write params.yaml, zntrack.json and a tidy dvc.yaml for ``project``."""
    project.build()
    tidy_dvc_yaml()
