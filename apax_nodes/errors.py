"""Bad input in a stage ends it with one line naming the stage, as the CLI does; a traceback
is for bugs. ``APAX_TRACEBACK=1`` shows the traceback of bad input too."""

from __future__ import annotations

import functools

from apax_core.errors import InputError, show_traceback


def one_line_errors(cls):
    """Class decorator for nodes: ``run`` turns an :class:`~apax_core.errors.InputError` into
    ``SystemExit("<stage>: ...")``, which ``zntrack run`` prints as one line before
    ``dvc repro`` reports the failed stage. Any other exception keeps its traceback."""
    run = cls.run

    @functools.wraps(run)
    def checked(self) -> None:
        try:
            run(self)
        except InputError as err:
            if show_traceback():
                raise
            raise SystemExit(f"{self.name}: {err}") from None

    cls.run = checked
    return cls
