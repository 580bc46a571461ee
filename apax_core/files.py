"""Whole-file writes: a reader never sees a half-written file (temp name + atomic rename)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)

Writer = Callable[[Path], None]
"""Writes a whole file at the path it is given (``ase.io.write``, znh5md, h5py)."""


def atomic_write(path: str | Path, data: bytes | str | Writer) -> Path:
    """Write ``path`` whole: text, bytes, or whatever the writer ``data(tmp)`` puts at a
    temporary path in the same directory; then one atomic rename. A reader never sees a
    half-written file, and a failed or interrupted write leaves the old file as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp)
    try:
        _fill(tmp, fd, data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _fill(tmp: Path, fd: int, data: bytes | str | Writer) -> None:
    """Write ``data`` to the temporary file and flush it to disk. A writer is given a path
    that does not exist yet (HDF5 cannot open an empty file)."""
    if not callable(data):
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return
    os.close(fd)
    tmp.unlink()
    data(tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
