"""Bad input is one exception family. The command line and the workflow nodes print an
:class:`InputError` as one line (exit code 2, or a failed stage named in the message); any
other exception is a bug and keeps its traceback. ``APAX_TRACEBACK=1`` shows the traceback
of bad input too.

The family subclasses ValueError, so ``except ValueError`` in callers keeps working.
"""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad user input: a config, a data file, a model directory, a labeller, a command-line
    argument. The message names the field, the file or the structure index."""


class MissingInput(InputError, FileNotFoundError):
    """A file or directory the user named does not exist (also a FileNotFoundError)."""


def show_traceback() -> bool:
    """Whether bad input should show its traceback too (``APAX_TRACEBACK`` set, not 0)."""
    return os.environ.get("APAX_TRACEBACK", "") not in ("", "0")
