"""Schema evolution: unify an existing schema (an Iceberg table's, an earlier batch's) with an incoming one.

Columns are matched by name, recursively inside structs, lists and maps. The target keeps the existing columns
in their order (with their field metadata, e.g. Iceberg field ids) and appends new ones, always nullable.
A type change is accepted only when Iceberg allows it as a promotion: int32 -> int64, float32 -> float64,
decimal(p, s) -> decimal(p', s) with p' > p. Either side may be the wider one; the target takes the wider.
string/large_string, binary/large_binary and list/large_list count as the same type, as do two timestamps
with a zone (Iceberg ``timestamptz`` reads back as ``+00:00``, cdcwh writes ``UTC``). Anything else (including
a decimal scale change) is incompatible: the target keeps the existing type and the top-level column is
listed in ``incompatible``; rows whose incompatible columns are non-null cannot be conformed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

_INT_RANK = {pa.int8(): 8, pa.int16(): 16, pa.int32(): 32, pa.int64(): 64}
_FLOAT_RANK = {pa.float16(): 16, pa.float32(): 32, pa.float64(): 64}


@dataclass(frozen=True, slots=True)
class EvolutionPlan:
    """The union of two schemas and what it took to get there."""

    target: pa.Schema
    added: tuple[str, ...] = ()
    """Dotted paths of columns (or nested fields) that only the incoming schema has."""
    widened: tuple[str, ...] = ()
    """Dotted paths whose type differs between the two and was promoted to the wider one."""
    incompatible: tuple[str, ...] = ()
    """Top-level incoming columns with a change that cannot be promoted."""
    conflicts: tuple[str, ...] = ()
    """Human-readable ``path: existing -> incoming`` for each incompatible change."""

    @property
    def compatible(self) -> bool:
        return not self.incompatible


@dataclass(slots=True)
class _Notes:
    added: list[str] = field(default_factory=list)
    widened: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


def plan_evolution(existing: pa.Schema, incoming: pa.Schema) -> EvolutionPlan:
    """Plan the union-by-name of ``existing`` and ``incoming`` (see the module docstring for the rules)."""
    notes = _Notes()
    incompatible: list[str] = []
    fields = []
    incoming_names = set(incoming.names)
    for existing_field in existing:
        if existing_field.name in incoming_names:
            before = len(notes.conflicts)
            fields.append(
                _unify_field(existing_field.name, existing_field, incoming.field(existing_field.name), notes)
            )
            if len(notes.conflicts) > before:
                incompatible.append(existing_field.name)
        else:
            fields.append(existing_field)
    existing_names = set(existing.names)
    for incoming_field in incoming:
        if incoming_field.name not in existing_names:
            notes.added.append(incoming_field.name)
            fields.append(incoming_field.with_nullable(True))
    return EvolutionPlan(
        target=pa.schema(fields, metadata=existing.metadata),
        added=tuple(notes.added),
        widened=tuple(notes.widened),
        incompatible=tuple(incompatible),
        conflicts=tuple(notes.conflicts),
    )


def _unify_field(path: str, old: pa.Field, new: pa.Field, notes: _Notes) -> pa.Field:
    unified = _unify_type(path, old.type, new.type, notes)
    return pa.field(old.name, unified, nullable=old.nullable or new.nullable, metadata=old.metadata)


def _unify_type(path: str, old: pa.DataType, new: pa.DataType, notes: _Notes) -> pa.DataType:
    if old == new or pa.types.is_null(new):
        return old
    if pa.types.is_null(old):
        notes.widened.append(path)
        return new
    if _same_family(old, new):
        return old
    wider = _promote(old, new)
    if wider is not None:
        notes.widened.append(path)
        return wider
    if pa.types.is_struct(old) and pa.types.is_struct(new):
        return _unify_struct(path, old, new, notes)
    if _is_list(old) and _is_list(new):
        element = _unify_field(f"{path}.element", old.value_field, new.value_field, notes)
        return pa.large_list(element) if pa.types.is_large_list(old) else pa.list_(element)
    if pa.types.is_map(old) and pa.types.is_map(new) and old.key_type == new.key_type:
        item = _unify_field(f"{path}.value", old.item_field, new.item_field, notes)
        return pa.map_(old.key_field, item)
    notes.conflicts.append(f"{path}: {old} -> {new}")
    return old


def _unify_struct(path: str, old: pa.StructType, new: pa.StructType, notes: _Notes) -> pa.DataType:
    new_fields = {f.name: f for f in new}
    old_names = {f.name for f in old}
    out = [
        _unify_field(f"{path}.{f.name}", f, new_fields[f.name], notes) if f.name in new_fields else f
        for f in old
    ]
    for f in new:
        if f.name not in old_names:
            notes.added.append(f"{path}.{f.name}")
            out.append(f.with_nullable(True))
    return pa.struct(out)


def _same_family(old: pa.DataType, new: pa.DataType) -> bool:
    strings = (pa.types.is_string(old) or pa.types.is_large_string(old)) and (
        pa.types.is_string(new) or pa.types.is_large_string(new)
    )
    binaries = (pa.types.is_binary(old) or pa.types.is_large_binary(old)) and (
        pa.types.is_binary(new) or pa.types.is_large_binary(new)
    )
    zoned = (
        pa.types.is_timestamp(old)
        and pa.types.is_timestamp(new)
        and old.unit == new.unit
        and old.tz is not None
        and new.tz is not None
    )
    return strings or binaries or zoned


def _promote(old: pa.DataType, new: pa.DataType) -> pa.DataType | None:
    if old in _INT_RANK and new in _INT_RANK:
        return old if _INT_RANK[old] >= _INT_RANK[new] else new
    if old in _FLOAT_RANK and new in _FLOAT_RANK:
        return old if _FLOAT_RANK[old] >= _FLOAT_RANK[new] else new
    if pa.types.is_decimal128(old) and pa.types.is_decimal128(new) and old.scale == new.scale:
        return old if old.precision >= new.precision else new
    return None


def _is_list(t: pa.DataType) -> bool:
    return bool(pa.types.is_list(t) or pa.types.is_large_list(t))


def conform(table: pa.Table, target: pa.Schema) -> pa.Table:
    """``table`` in the shape of ``target``: missing columns as nulls, promotions cast, columns reordered.

    A column whose type cannot be cast to the target (an incompatible change) is replaced by nulls when it
    holds only nulls; otherwise ``ValueError`` is raised: the caller must quarantine those rows first.
    A column of ``table`` that ``target`` lacks also raises ``ValueError`` (conforming never drops data).
    """
    extra = [name for name in table.column_names if target.get_field_index(name) < 0]
    if extra:
        raise ValueError(f"columns {extra} are not in the target schema")
    columns = []
    for target_field in target:
        if target_field.name not in table.column_names:
            columns.append(pa.chunked_array([pa.nulls(table.num_rows, target_field.type)], target_field.type))
            continue
        column = table.column(target_field.name)
        if column.type != target_field.type:
            column = _cast(target_field.name, column, target_field.type)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=target)


def _cast(name: str, column: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    try:
        return column.cast(target)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        if column.null_count == len(column):
            return pa.chunked_array([pa.nulls(len(column), target)], target)
        raise ValueError(
            f"column {name!r} of type {column.type} cannot be conformed to {target}: {exc}"
        ) from exc
