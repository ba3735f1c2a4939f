"""All rows of one topic in a batch: groups by (value plan, key plan), unified into one bronze table.

Groups are unified in order of first appearance with :func:`cdcwh.core.evolve.plan_evolution`; a group whose
schema cannot be unified with the earlier ones is rejected as a whole (``schema_conflict``). Columns of
schemaless rows that no contract types are inferred here, once per topic, from all their values in the batch.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cdcwh.core.builder import GroupBuilder, GroupResult
from cdcwh.core.codec import Codec
from cdcwh.core.contract import TableContract
from cdcwh.core.evolve import conform, plan_evolution
from cdcwh.core.plan import INFER, METADATA_COLUMNS, RowPlan, infer_codec
from cdcwh.core.record import RejectReason


class TopicBuilder:
    """All groups of one topic in a batch."""

    def __init__(self, topic: str, contract: TableContract | None) -> None:
        self.topic, self.contract = topic, contract
        self.groups: dict[tuple[RowPlan, RowPlan], GroupBuilder] = {}
        self.schemaless: dict[tuple[bool, tuple[str, ...]], RowPlan] = {}
        self.memo: dict[str, tuple[bytes, RowPlan, int]] = {}
        """By "value"/"key": the last verified raw schema bytes, their plan, and where the separator after
        them starts (see ``envelope._parse``)."""

    def group(self, value_plan: RowPlan, key_plan: RowPlan) -> GroupBuilder:
        group = self.groups.get((value_plan, key_plan))
        if group is None:
            group = self.groups[(value_plan, key_plan)] = GroupBuilder(value_plan, key_plan)
        return group

    def finish(self) -> tuple[pa.Table | None, list[tuple[int, RejectReason, str]]]:
        """The topic's good rows in input order, and its rejected positions."""
        inferred = self._infer()
        results: list[GroupResult] = []
        rejected: list[tuple[int, RejectReason, str]] = []
        for group in sorted(self.groups.values(), key=lambda g: g.positions[0]):
            result = group.finish(self.topic, self.contract, inferred)
            rejected.extend(result.rejected)
            if result.table.num_rows:
                results.append(result)
        if not results:
            return None, rejected
        target = results[0].table.schema
        accepted = [results[0]]
        for result in results[1:]:
            plan = plan_evolution(target, result.table.schema)
            if plan.compatible:
                target = plan.target
                accepted.append(result)
            else:
                detail = "schema change within the batch cannot be unified: " + "; ".join(plan.conflicts)
                rejected.extend((p, RejectReason.SCHEMA_CONFLICT, detail) for p in result.positions)
        if len(accepted) == 1:
            return accepted[0].table, rejected
        data_fields = [f for f in target if f.name not in METADATA_COLUMNS]
        target = pa.schema(data_fields + [target.field(name) for name in METADATA_COLUMNS])
        table = pa.concat_tables([conform(r.table, target) for r in accepted])
        positions = pa.array([p for r in accepted for p in r.positions], pa.int64())
        return table.take(pc.sort_indices(positions)), rejected

    def _infer(self) -> dict[tuple[bool, str], Codec | None]:
        values: dict[tuple[bool, str], list[list[Any]]] = {}
        for group in self.groups.values():
            after_columns, before_columns = group.value_columns()
            for fc, after, before in zip(group.value_plan.fields, after_columns, before_columns, strict=True):
                if fc.codec is INFER:
                    values.setdefault((False, fc.name), []).extend((after, before))
            for fc, key_values in zip(group.key_plan.fields, group.key_columns(), strict=True):
                if fc.codec is INFER:
                    values.setdefault((True, fc.name), []).append(key_values)
        return {name: infer_codec(columns) for name, columns in values.items()}
