"""Config base class, loading and error reporting shared by every config section."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from apax_core.errors import InputError


class Strict(BaseModel):
    """Base for all config sections: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


# ------------------------------------------------------------------------------- load and errors


class ConfigError(InputError):
    """A configuration that does not validate; the message lists every error by field path."""


def format_errors(err: ValidationError, source: str) -> str:
    """One line per error: dotted field path, message, offending input."""
    lines = [f"{err.error_count()} validation error(s) in {source}:"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        shown = "" if e["type"] == "missing" else f" (got {e['input']!r})"
        lines.append(f"  {path}: {e['msg']}{shown}")
    return "\n".join(lines)


def read_mapping(path: str | Path) -> dict:
    """The top-level mapping of a YAML file; ConfigError if missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    return raw


def validate(kind, raw, source: str):
    """``raw`` validated as ``kind`` (a config class or union); a ConfigError naming every bad
    field and ``source`` (a file, a node parameter) instead of pydantic's ValidationError."""
    try:
        return TypeAdapter(kind).validate_python(raw)
    except ValidationError as err:
        raise ConfigError(format_errors(err, source)) from None


def load_job(path: str | Path, spec_cls: type[Strict], run_cls: type[Strict]):
    """(spec, run arguments) from one YAML file: the keys of ``run_cls`` are run arguments,
    every other key belongs to the spec. Every bad field of both is named at once."""
    raw = read_mapping(path)
    run_raw = {k: raw.pop(k) for k in list(raw) if k in run_cls.model_fields}
    errors, out = [], []
    for cls, part in ((spec_cls, raw), (run_cls, run_raw)):
        try:
            out.append(cls.model_validate(part))
        except ValidationError as err:
            errors.extend(format_errors(err, str(path)).splitlines()[1:])
    if errors:
        raise ConfigError("\n".join([f"{len(errors)} validation error(s) in {path}:", *errors]))
    return tuple(out)
