"""A config as commented YAML: every field with its value and, as a comment, the first sentence
of its docstring (where the unit is stated); the other kinds of every union follow their field
as commented blocks that validate when uncommented. One source: the field docstrings."""

from __future__ import annotations

import types
from typing import Annotated, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

COMMENT_COLUMN = 34
"""Column where a line's comment starts (later on long lines)."""


def commented_yaml(*models: BaseModel) -> str:
    """The fields of ``models`` (e.g. run arguments, then the spec) as one YAML mapping."""
    return "".join(line + "\n" for model in models for line in model_lines(model, 0, True))


def model_lines(model: BaseModel, indent: int, alternatives: bool) -> list[str]:
    """One or more lines per field of ``model`` at ``indent``; with ``alternatives`` the other
    kinds of each union field follow it, commented."""
    lines, data = [], model.model_dump(mode="json", warnings=False)
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        tag = name == "kind" and len(get_args(field.annotation)) == 1  # names a union's member
        note = first_sentence(type(model).__doc__) if tag else describe(field)
        lines += field_lines(name, value, data[name], note, indent)
        if alternatives:
            lines += alternative_lines(name, field, value, indent)
    return lines


def field_lines(name: str, value, data, note: str, indent: int) -> list[str]:
    """``name: data  # note`` (``data`` the JSON form of ``value``), or ``name:`` over the
    nested lines of a model or a list of models."""
    key = " " * indent + f"{name}:"
    if isinstance(value, BaseModel):
        return [commented(key, note), *model_lines(value, indent + 2, True)]
    if isinstance(value, list | tuple) and value and isinstance(value[0], BaseModel):
        return [commented(key, note), *(ln for v in value for ln in item_lines(v, indent + 2))]
    return [commented(f"{key} {flow(data)}", note)]


def item_lines(model: BaseModel, indent: int) -> list[str]:
    """``model`` as one item of a block sequence at ``indent``."""
    lines = model_lines(model, indent + 2, False)
    return [" " * indent + "- " + lines[0][indent + 2 :], *lines[1:]]


def alternative_lines(name: str, field: FieldInfo, value, indent: int) -> list[str]:
    """The kinds of a union (or optional model) field that ``value`` is not, each a commented
    block; for a list of models, one commented list holding an example of every kind."""
    pad = " " * indent
    kinds = model_classes(field.annotation)
    if get_origin(field.annotation) is list:
        if value or not kinds:
            return []
        items = [ln for cls in kinds for ln in item_lines(example(cls), indent + 2)]
        return [f"{pad}# {name}:  (example of each kind)", *comment_out(items, indent)]
    lines = []
    for cls in kinds:
        if not isinstance(value, cls):
            block = model_lines(example(cls), indent + 2, False)
            lines += [f"{pad}# {name}:  (instead)", *comment_out(block, indent)]
    return lines


def comment_out(lines: list[str], indent: int) -> list[str]:
    """``lines`` commented at ``indent``, their comments kept in their column."""
    return [" " * indent + "# " + line[indent:].replace("   # ", " # ", 1) for line in lines]


def model_classes(annotation) -> list[type[BaseModel]]:
    """The model classes a field annotation admits (through Annotated, unions and lists)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return model_classes(args[0])
    if origin in (Union, types.UnionType, list):
        return [cls for arg in args for cls in model_classes(arg)]
    return []


def example(cls: type[BaseModel]) -> BaseModel:
    """``cls`` with its defaults, required fields set to their first ``examples`` entry (None
    where the field has none; that line then says ``null``)."""
    required = {
        name: field.examples[0] if field.examples else None
        for name, field in cls.model_fields.items()
        if field.is_required()
    }
    return cls.model_construct(**required)


def flow(value) -> str:
    """``value`` in YAML flow style on one line."""
    return yaml.safe_dump([value], default_flow_style=True, width=10**6).strip()[1:-1]


def commented(code: str, note: str) -> str:
    if not note:
        return code
    return f"{code.ljust(COMMENT_COLUMN - 2)}  # {note}"


def describe(field: FieldInfo) -> str:
    """The first sentence of a field's docstring, ``required`` prepended where it has no
    default."""
    note = first_sentence(field.description)
    return f"required. {note}".strip() if field.is_required() else note


def first_sentence(text: str | None) -> str:
    """``text`` on one line up to its first full stop outside parentheses (double backticks
    dropped)."""
    text = " ".join((text or "").replace("``", "").split())
    depth = 0
    for k, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "." and depth == 0 and text[k + 1 : k + 2] in ("", " "):
            if k + 2 >= len(text) or text[k + 2].isupper():
                return text[: k + 1]
    return text
