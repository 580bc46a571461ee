"""Config base class, loading and error reporting shared by every config section."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class Strict(BaseModel):
    """Base for all config sections: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


# ------------------------------------------------------------------------------- load and errors


class ConfigError(ValueError):
    """A configuration file that does not validate; the message lists every error by field path."""


def format_errors(err: ValidationError, source: str) -> str:
    """One line per error: dotted field path, message, offending input."""
    lines = [f"{err.error_count()} validation error(s) in {source}:"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        shown = "" if e["type"] == "missing" else f" (got {e['input']!r})"
        lines.append(f"  {path}: {e['msg']}{shown}")
    return "\n".join(lines)


def load_config(path: str | Path, cls: type[Strict]) -> Strict:
    """Read a YAML file into ``cls``; raise ConfigError naming every bad field at once."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    try:
        return cls.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_errors(err, str(path))) from None
