"""Where stages keep what must outlive ``dvc repro`` deleting their outputs."""

from __future__ import annotations

from pathlib import Path

from apax_core.files import atomic_write

CHECKPOINTS = Path(".apax_checkpoints")
"""Resume state of every stage, relative to the directory ``dvc repro`` runs stages in (the
repository root), outside every stage's outputs."""


def checkpoint_dir(name: str) -> Path:
    """``.apax_checkpoints/<name>``: where stage ``name`` keeps its resume state (training
    checkpoints, MD walkers, finished reference calculations). ``dvc repro`` deletes a stage's
    outputs before it reruns the stage, so state kept there would be lost with a killed run;
    here a rerun finds it. The stage removes the directory once its outputs are complete.

    Side effect: unless it is there already, the line ``.apax_checkpoints/`` is appended to the
    ``.gitignore`` of the working directory (created if missing, written whole), so that
    ``git add -A`` never commits a leftover checkpoint. The directory itself is not created.
    """
    gitignore, line = Path(".gitignore"), f"{CHECKPOINTS.as_posix()}/"
    text = gitignore.read_text() if gitignore.is_file() else ""
    if line not in text.splitlines():
        atomic_write(
            gitignore, text + ("" if not text or text.endswith("\n") else "\n") + line + "\n"
        )
    return CHECKPOINTS / name
