"""Bad input in a stage ends it with one line naming the stage, as the CLI does; a traceback
is for bugs. ``APAX_TRACEBACK=1`` shows the traceback of bad input too."""

from __future__ import annotations

import functools
import os

BAD_INPUT = (ValueError, FileNotFoundError, IsADirectoryError)
"""What the project raises for bad input: DataError, ConfigError and pydantic's ValidationError
are ValueErrors."""


def one_line_errors(cls):
    """Class decorator for nodes: ``run`` turns bad input into ``SystemExit("<stage>: ...")``,
    which ``zntrack run`` prints as one line before ``dvc repro`` reports the failed stage."""
    run = cls.run

    @functools.wraps(run)
    def checked(self) -> None:
        try:
            run(self)
        except BAD_INPUT as err:
            if os.environ.get("APAX_TRACEBACK"):
                raise
            raise SystemExit(f"{self.name}: {err}") from None

    cls.run = checked
    return cls
