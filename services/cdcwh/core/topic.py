"""All rows of one topic in a batch: groups by (value plan, key plan), unified into one bronze table.

Groups are unified in order of first appearance with :func:`cdcwh.core.evolve.plan_evolution`; a group whose
schema cannot be unified with the earlier ones, or with the bronze table's schema when the caller passes it,
is rejected as a whole (``schema_conflict``). Columns of schemaless rows that no contract types are inferred
here, once per topic, from all their values in the batch.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cdcwh.core.builder import Column, GroupBuilder, GroupResult
from cdcwh.core.codec import Codec
from cdcwh.core.contract import TableContract
from cdcwh.core.evolve import conform, plan_evolution
from cdcwh.core.plan import INFER, METADATA_COLUMNS, RowPlan, infer_codec
from cdcwh.core.record import RejectReason
from cdcwh.core.semantic import legacy_decimal_columns


class TopicBuilder:
    """All groups of one topic in a batch."""

    def __init__(self, topic: str, contract: TableContract | None, existing: pa.Schema | None = None) -> None:
        self.topic, self.contract = topic, contract
        self.existing = existing
        """The bronze table's current schema, if known: every accepted group must unify with it too."""
        self.legacy = legacy_decimal_columns(existing)
        """Columns the bronze table holds as decimal(38, 18) from before VariableScaleDecimal became text."""
        self.groups: dict[tuple[object, ...], GroupBuilder] = {}
        """By (value plan, key plan) for rows added one at a time; groups given whole
        (:meth:`add_group`) have keys of their own."""
        self.schemaless: dict[tuple[bool, tuple[str, ...]], RowPlan] = {}
        self.memo: dict[str, tuple[bytes, RowPlan]] = {}
        """By "value"/"key": the last verified envelope head ``{"schema":S,"payload":`` and the plan of
        ``S`` (see ``envelope._parse``)."""

    def group(self, value_plan: RowPlan, key_plan: RowPlan) -> GroupBuilder:
        group = self.groups.get((value_plan, key_plan))
        if group is None:
            group = self.groups[(value_plan, key_plan)] = GroupBuilder(value_plan, key_plan)
        return group

    def add_group(self, group: GroupBuilder) -> None:
        """A group given whole, as columns (:mod:`cdcwh.core.avro_batch`)."""
        self.groups[(group.value_plan, group.key_plan, len(self.groups))] = group

    def finish(self) -> tuple[pa.Table | None, list[tuple[int, RejectReason, str]]]:
        """The topic's good rows in input order, and its rejected positions."""
        inferred = self._infer()
        parts: dict[tuple[RowPlan, RowPlan], list[GroupResult]] = {}
        for group in self.groups.values():
            result = group.finish(self.topic, self.contract, inferred, self.legacy)
            parts.setdefault((group.value_plan, group.key_plan), []).append(result)
        results: list[GroupResult] = []
        rejected: list[tuple[int, RejectReason, str]] = []
        for merged in sorted(map(_merged, parts.values()), key=lambda r: r.first):
            rejected.extend(merged.rejected)
            if merged.table.num_rows:
                results.append(merged)
        accepted: list[GroupResult] = []
        target: pa.Schema | None = None  # the union of the accepted groups
        bound = self.existing  # the union of the bronze table's schema and the accepted groups
        for result in results:
            schema = result.table.schema
            against_table = None if bound is None else plan_evolution(bound, schema)
            against_batch = None if target is None else plan_evolution(target, schema)
            conflicts = [
                c for plan in (against_table, against_batch) if plan is not None for c in plan.conflicts
            ]
            if conflicts:
                where = "the bronze table" if against_table and against_table.conflicts else "the batch"
                detail = f"schema cannot be unified with {where}: " + "; ".join(dict.fromkeys(conflicts))
                rejected.extend((p, RejectReason.SCHEMA_CONFLICT, detail) for p in result.positions)
                continue
            bound = None if against_table is None else against_table.target
            target = schema if against_batch is None else against_batch.target
            accepted.append(result)
        if target is None:
            return None, rejected
        if len(accepted) == 1 and _ascending(accepted[0].positions):
            return without_empty_key(accepted[0].table), rejected
        data_fields = [f for f in target if f.name not in METADATA_COLUMNS]
        target = pa.schema(data_fields + [target.field(name) for name in METADATA_COLUMNS])
        table = pa.concat_tables([conform(r.table, target) for r in accepted])
        positions = pa.array([p for r in accepted for p in r.positions], pa.int64())
        return without_empty_key(table.take(pc.sort_indices(positions))), rejected

    def _infer(self) -> dict[tuple[bool, str], Codec | None]:
        values: dict[tuple[bool, str], list[list[Any]]] = {}
        for group in self.groups.values():
            after_columns, before_columns = group.value_columns()
            for fc, after, before in zip(group.value_plan.fields, after_columns, before_columns, strict=True):
                if fc.codec is INFER:
                    values.setdefault((False, fc.name), []).extend(map(_plain, (after, before)))
            for fc, key_values in zip(group.key_plan.fields, group.key_columns(), strict=True):
                if fc.codec is INFER:
                    values.setdefault((True, fc.name), []).append(_plain(key_values))
        return {name: infer_codec(columns) for name, columns in values.items()}


def _plain(column: Column) -> list[Any]:
    """A column as plain values (schemaless columns are inferred from those; Avro columns are typed)."""
    if isinstance(column, pa.Array):
        values: list[Any] = column.to_pylist()
        return values
    return column


def _merged(parts: list[GroupResult]) -> GroupResult:
    """The parts of one (value plan, key plan) as one group: rows of a plan added one at a time and given
    as columns (:meth:`TopicBuilder.add_group`) are unified and conflict-checked as one group would be."""
    if len(parts) == 1:
        return parts[0]
    table = pa.concat_tables([p.table for p in parts])
    rejected = [r for p in parts for r in p.rejected]
    return GroupResult(table, [i for p in parts for i in p.positions], rejected, min(p.first for p in parts))


def _ascending(positions: list[int]) -> bool:
    """Whether rows are in input order: a group's rows are not when some of them were read one at a time
    after the columnar branch gave them back (:func:`cdcwh.core.envelope.decode_batch`)."""
    return all(a < b for a, b in zip(positions, positions[1:], strict=False))


def without_empty_key(table: pa.Table) -> pa.Table:
    """The table without ``__key`` when no row of the batch had a key (a table without a primary key, or a
    batch of truncates only): the column would be a struct without fields, which Parquet cannot store (and
    Iceberg v2 has no null type). The bronze table reads an absent ``__key`` as null."""
    key_type = table.schema.field("__key").type
    if pa.types.is_struct(key_type) and key_type.num_fields == 0:
        return table.drop_columns(["__key"])
    return table
