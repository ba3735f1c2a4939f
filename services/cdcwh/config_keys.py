"""Unknown setting names, found before validation so that a misspelt one fails the start instead of being
ignored, with the closest valid name as a suggestion.

pydantic-settings reads only the ``CDCWH_*`` variables it knows, so ``CDCWH_KAFKA__TOPIC=x`` (for ``TOPICS``)
would otherwise change nothing and say nothing. These functions walk a settings model's fields: a field whose
type is a model is a section; a field of any other type (``kafka.extra``, a dict) takes any key below it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo


def _fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """The model's fields by the name a user writes (the alias where there is one: ``schema``)."""
    return {(field.alias or name): field for name, field in model.model_fields.items()}


def section(field: FieldInfo) -> type[BaseModel] | None:
    """The model a field holds, when the field is a section."""
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _is_mapping(field: FieldInfo) -> bool:
    annotation = field.annotation
    return (get_origin(annotation) or annotation) in (dict, Mapping)


def _hint(name: str, valid: Iterable[str], shown: str) -> str:
    """``did you mean X?`` with the closest valid name, or the valid names when none is close."""
    names = sorted(valid)
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if close:
        return f"did you mean {shown.format(close[0])}?"
    return "valid: " + ", ".join(shown.format(n) for n in names)


def unknown_variables(environ: Mapping[str, str], model: type[BaseModel], prefix: str) -> list[str]:
    """One problem per ``<prefix>...`` variable that names no setting of ``model`` (``__`` nests).

    The caller leaves out variables that are not settings (``CDCWH_CONFIG``...). Names are matched without
    regard to case, as pydantic-settings reads them.
    """
    problems = []
    for variable in sorted(environ):
        if not variable.upper().startswith(prefix):
            continue
        parts = variable[len(prefix) :].lower().split("__")
        current: type[BaseModel] = model
        for depth, part in enumerate(parts):
            fields = {name.lower(): info for name, info in _fields(current).items()}
            field = fields.get(part)
            if field is None:
                above = "".join(p.upper() + "__" for p in parts[:depth])
                hint = _hint(part.upper(), [name.upper() for name in fields], prefix + above + "{}")
                problems.append(f"{variable}: no such setting; {hint}")
                break
            inner = section(field)
            if inner is None:
                if depth + 1 < len(parts) and not _is_mapping(field):  # a dict (kafka.extra) takes any key
                    named = prefix + "__".join(parts[: depth + 1]).upper()
                    problems.append(f"{variable}: no such setting; {named} has no parts")
                break
            current = inner
    return problems


def unknown_keys(data: Mapping[str, Any], model: type[BaseModel], path: tuple[str, ...] = ()) -> list[str]:
    """One problem per key of a TOML document (nested tables) that names no setting of ``model``."""
    problems = []
    fields = _fields(model)
    for key, value in data.items():
        dotted = ".".join((*path, key))
        field = fields.get(key)
        if field is None:
            shown = ".".join((*path, "{}"))
            problems.append(f"{dotted}: no such setting; {_hint(key, fields, shown)}")
            continue
        inner = section(field)
        if inner is not None and isinstance(value, Mapping):
            problems.extend(unknown_keys(value, inner, (*path, key)))
    return problems


def suggestion(model: type[BaseModel], loc: tuple[int | str, ...], prefix: str) -> str:
    """For a validation error on an unknown key at ``loc`` (a section given as JSON in one variable): the hint
    among its siblings' names, written as variables."""
    current = model
    for part in loc[:-1]:
        field = _fields(current).get(str(part))
        inner = section(field) if field is not None else None
        if inner is None:
            return ""
        current = inner
    above = "".join(str(part).upper() + "__" for part in loc[:-1])
    return _hint(str(loc[-1]).upper(), [name.upper() for name in _fields(current)], prefix + above + "{}")
