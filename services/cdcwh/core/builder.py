"""Group builders: the rows of one topic that share a (value plan, key plan) become one Arrow table.

Rows are appended as tuples of plain values (no per-event dict is kept), transposed to one list per column at
the end of the batch and converted per column. Per-row problems found then (a bad value, a null key field, a
contract rule) reject that row only. :mod:`cdcwh.core.topic` unifies the groups of a topic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from operator import itemgetter
from typing import Any, Final, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from cdcwh.core.codec import Codec, IntCodec, StringCodec, decode_column
from cdcwh.core.contract import TableContract, check_contract
from cdcwh.core.nested import FieldCodec
from cdcwh.core.plan import INFER, RowPlan
from cdcwh.core.record import ROW_OPS, RejectReason
from cdcwh.core.semantic import LegacyVariableScaleDecimalCodec, VariableScaleDecimalCodec
from cdcwh.core.temporal import TimestampCodec

_ROW_OPS: Final = pa.array(sorted(ROW_OPS))
_TOASTED_TYPE: Final = pa.list_(pa.string())
_KAFKA_TS: Final = TimestampCodec("kafka timestamp", us_per=1000, tz="UTC")


class SnapshotCodec(StringCodec):
    """``source.snapshot``: a string (true/false/first/last/incremental...); old booleans become text."""

    def __init__(self) -> None:
        super().__init__("snapshot", toastable=False)

    def one(self, value: Any) -> Any:
        if type(value) is bool:
            return "true" if value else "false"
        return super().one(value)


_SOURCE: Final[tuple[tuple[str, str, Codec], ...]] = (
    ("__source_ts", "ts_ms", TimestampCodec("source.ts_ms", us_per=1000, tz="UTC")),
    ("__source_ts_ns", "ts_ns", IntCodec(64)),
    ("__lsn", "lsn", IntCodec(64)),
    ("__tx_id", "txId", IntCodec(64)),
    ("__snapshot", "snapshot", SnapshotCodec()),
    ("__db", "db", StringCodec("string", toastable=False)),
    ("__schema", "schema", StringCodec("string", toastable=False)),
    ("__table", "table", StringCodec("string", toastable=False)),
)
_SOURCE_KEYS: Final = tuple(key for _, key, _ in _SOURCE)
SOURCE_KEYS: Final = _SOURCE_KEYS
"""The ``source`` fields bronze keeps (the Avro reader reads past the others)."""
_SOURCE_NULLS: Final = (None,) * len(_SOURCE)

Problem = tuple[RejectReason, str]
Column: TypeAlias = list[Any] | pa.Array
"""A column's values: a list of plain values (rows added one at a time), or an Arrow array (a group given as
columns, :meth:`GroupBuilder.of_columns`), which :func:`cdcwh.core.codec.decode_column` takes either way."""


@dataclass(slots=True)
class GroupResult:
    """The good rows of a group as a table, their input positions, and the rejected positions."""

    table: pa.Table
    positions: list[int]
    rejected: list[tuple[int, RejectReason, str]] = field(default_factory=list)
    first: int = 0
    """The group's first input position, good rows and rejected ones alike (groups unify in that order)."""


class GroupBuilder:
    """Rows of one topic that share a value plan and a key plan."""

    def __init__(self, value_plan: RowPlan, key_plan: RowPlan) -> None:
        self.value_plan, self.key_plan = value_plan, key_plan
        self.names, self.key_names = value_plan.names, key_plan.names
        self.positions: list[int] = []
        self.ops: list[str] = []
        self.after_rows: list[tuple[Any, ...]] = []
        self.before_rows: list[tuple[Any, ...]] = []
        self.before_at: list[int] = []
        """Before images are sparse (null on inserts, and on updates under REPLICA IDENTITY DEFAULT):
        ``before_rows[j]`` belongs to row ``before_at[j]``."""
        self.key_rows: list[tuple[Any, ...]] = []
        self.has_key: list[bool] = []
        self.source_rows: list[tuple[Any, ...]] = []
        self.partitions: list[int] = []
        self.offsets: list[int] = []
        self.kafka_ts: list[int | None] = []
        self._nulls = (None,) * len(self.names)
        self._key_nulls = (None,) * len(self.key_names)
        self._value_columns: tuple[list[Column], list[Column]] | None = None
        self._key_columns: list[Column] | None = None
        self._source_columns: list[Column] | None = None

    @classmethod
    def of_columns(
        cls,
        plans: tuple[RowPlan, RowPlan],
        positions: list[int],
        ops: list[str],
        values: tuple[list[Column], list[Column], list[int]],
        keys: tuple[list[Column], list[bool]],
        source: list[Column],
        coordinates: tuple[list[int], list[int], list[int | None]],
    ) -> GroupBuilder:
        """A group given as columns rather than rows (:mod:`cdcwh.core.avro_batch`), in the plans' column
        order: ``values`` are the after columns, the sparse before columns and the rows they belong to;
        ``keys`` the key columns and which rows have a key; ``source`` the :data:`SOURCE_KEYS` columns."""
        group = cls(*plans)
        group.positions, group.ops = positions, ops
        after, before, group.before_at = values
        group._value_columns = after, before
        group._key_columns, group.has_key = keys
        group._source_columns = source
        group.partitions, group.offsets, group.kafka_ts = coordinates
        return group

    def add(
        self,
        position: int,
        coordinates: tuple[int, int, int | None],
        op: str,
        images: tuple[dict[str, Any] | None, dict[str, Any] | None],
        source: dict[str, Any] | None,
        key: dict[str, Any] | None,
    ) -> None:
        """Append one event as tuples of plain values; must not raise (all lists grow by exactly one)."""
        assert self._value_columns is None, "a group given as columns takes no rows"  # noqa: S101
        self.positions.append(position)
        self.ops.append(op)
        after, before = images
        names = self.names
        self.after_rows.append(self._nulls if after is None else tuple(map(after.get, names)))
        if before is not None:
            self.before_at.append(len(self.ops) - 1)
            self.before_rows.append(tuple(map(before.get, names)))
        self.key_rows.append(self._key_nulls if key is None else tuple(map(key.get, self.key_names)))
        self.has_key.append(key is not None)
        self.source_rows.append(_SOURCE_NULLS if source is None else tuple(map(source.get, _SOURCE_KEYS)))
        partition, offset, timestamp_ms = coordinates
        self.partitions.append(partition)
        self.offsets.append(offset)
        self.kafka_ts.append(timestamp_ms)

    def value_columns(self) -> tuple[list[Column], list[Column]]:
        """After images and the (sparse) before images, one list per column (transposed once, then kept)."""
        if self._value_columns is None:
            width = len(self.names)
            self._value_columns = _transpose(self.after_rows, width), _transpose(self.before_rows, width)
            self.after_rows, self.before_rows = [], []
        return self._value_columns

    def key_columns(self) -> list[Column]:
        """The keys as one list per key column (transposed once, then kept)."""
        if self._key_columns is None:
            self._key_columns = _transpose(self.key_rows, len(self.key_names))
            self.key_rows = []
        return self._key_columns

    def source_columns(self) -> list[Column]:
        """The kept ``source`` fields as one list per field (transposed once, then kept)."""
        if self._source_columns is None:
            self._source_columns = _transpose(self.source_rows, len(_SOURCE))
            self.source_rows = []
        return self._source_columns

    def finish(
        self,
        topic: str,
        contract: TableContract | None,
        inferred: Mapping[tuple[bool, str], Codec | None],
        legacy: frozenset[tuple[bool, str]] = frozenset(),
    ) -> GroupResult:
        """Convert the columns, find bad rows, and return the good ones as a bronze table.

        ``legacy``: ``(is_key, column)`` whose bronze column is decimal(38, 18) from before
        VariableScaleDecimal became text (:func:`cdcwh.core.semantic.legacy_decimal_columns`)."""
        problems: dict[int, Problem] = {}
        ops = pa.array(self.ops, pa.string())
        active = pc.is_in(ops, value_set=_ROW_OPS)
        fields = [_resolve(f, inferred, legacy) for f in self.value_plan.fields]
        data: dict[str, pa.Array] = {}
        toasted: dict[str, list[int]] = {}
        before_children: list[pa.Array] = []
        after_columns, before_columns = self.value_columns()
        for fc, after_values, before_values in zip(fields, after_columns, before_columns, strict=True):
            if fc is None:
                continue
            column = decode_column(fc.codec, after_values)
            _note(problems, column.errors, RejectReason.TYPE_MISMATCH, f"after.{fc.name}")
            if not fc.optional:
                nulls = _where(pc.and_(pc.is_null(column.array), active))
                missing = dict.fromkeys(set(nulls) - set(column.toasted), "null in a non-optional field")
                _note(problems, missing, RejectReason.TYPE_MISMATCH, f"after.{fc.name}")
            data[fc.name] = column.array
            if column.toasted:
                toasted[fc.name] = column.toasted
            old = decode_column(fc.codec, before_values)  # TOASTed before values stay null
            errors = {self.before_at[j]: message for j, message in old.errors.items()}
            _note(problems, errors, RejectReason.TYPE_MISMATCH, f"before.{fc.name}")
            before_children.append(old.array)
        kept = [f for f in fields if f is not None]
        key = self._key(problems, contract, inferred, legacy)
        columns: dict[str, pa.Array] = dict(data)
        columns["__op"] = ops
        columns["__key"] = key
        columns["__before"] = self._before(before_children, kept)
        columns["__toasted"] = _toasted_column(len(ops), self.names, toasted)
        for (name, source_key, codec), values in zip(_SOURCE, self.source_columns(), strict=True):
            column = decode_column(codec, values)
            _note(problems, column.errors, RejectReason.TYPE_MISMATCH, f"source.{source_key}")
            columns[name] = column.array
        columns["__topic"] = pa.repeat(pa.scalar(topic, pa.string()), len(ops))
        columns["__partition"] = pa.array(self.partitions, pa.int32())
        columns["__offset"] = pa.array(self.offsets, pa.int64())
        kafka_ts = decode_column(_KAFKA_TS, self.kafka_ts)
        _note(problems, kafka_ts.errors, RejectReason.TYPE_MISMATCH, "kafka timestamp")
        columns["__kafka_ts"] = kafka_ts.array
        if contract is not None:
            violations = check_contract(contract, data, active, toasted)
            _note(problems, violations, RejectReason.CONTRACT_VIOLATION, "contract")
        table = pa.Table.from_pydict(columns)
        first = min(self.positions)
        if not problems:
            return GroupResult(table, self.positions, first=first)
        good = [i not in problems for i in range(len(ops))]
        rejected = [(self.positions[i], reason, detail) for i, (reason, detail) in sorted(problems.items())]
        positions = [p for p, ok in zip(self.positions, good, strict=True) if ok]
        return GroupResult(table.filter(pa.array(good, pa.bool_())), positions, rejected, first)

    def _before(self, children: list[pa.Array], fields: list[FieldCodec]) -> pa.Array:
        struct_type = pa.struct([pa.field(f.name, f.codec.arrow_type) for f in fields])
        if not self.before_at:
            return pa.nulls(len(self.ops), struct_type)
        sparse = _struct(children, fields, [True] * len(self.before_at))
        if len(self.before_at) == len(self.ops):
            return sparse
        index: list[int | None] = [None] * len(self.ops)
        for j, i in enumerate(self.before_at):
            index[i] = j
        return sparse.take(pa.array(index, pa.int32()))

    def _key(
        self,
        problems: dict[int, Problem],
        contract: TableContract | None,
        inferred: Mapping[tuple[bool, str], Codec | None],
        legacy: frozenset[tuple[bool, str]],
    ) -> pa.Array:
        has_key = pa.array(self.has_key, pa.bool_())
        fields = [_resolve(f, inferred, legacy, key=True) for f in self.key_plan.fields]
        children: dict[str, pa.Array] = {}
        for fc, values in zip(fields, self.key_columns(), strict=True):
            if fc is None:
                continue
            column = decode_column(fc.codec, values)
            _note(problems, column.errors, RejectReason.TYPE_MISMATCH, f"key.{fc.name}")
            if not fc.optional:
                nulls = dict.fromkeys(
                    _where(pc.and_(pc.is_null(column.array), has_key)), "null in a non-optional key field"
                )
                _note(problems, nulls, RejectReason.MISSING_KEY, f"key.{fc.name}")
            children[fc.name] = column.array
        if contract is not None:
            for name in contract.key:  # rows without any key were already checked per op
                array = children.get(name)
                missing = has_key if array is None else pc.and_(pc.is_null(array), has_key)
                lacking = dict.fromkeys(_where(missing), "the key lacks this key column or it is null")
                _note(problems, lacking, RejectReason.MISSING_KEY, f"key.{name}")
        kept = [f for f in fields if f is not None]
        return _struct([children[f.name] for f in kept], kept, self.has_key)


def _transpose(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [list(map(itemgetter(i), rows)) for i in range(width)]


_LEGACY_DECIMAL: Final = LegacyVariableScaleDecimalCodec()


def _resolve(
    fc: FieldCodec,
    inferred: Mapping[tuple[bool, str], Codec | None],
    legacy: frozenset[tuple[bool, str]],
    *,
    key: bool = False,
) -> FieldCodec | None:
    if fc.codec is not INFER:
        if legacy and isinstance(fc.codec, VariableScaleDecimalCodec) and (key, fc.name) in legacy:
            return FieldCodec(fc.name, _LEGACY_DECIMAL, fc.optional)
        return fc
    codec = inferred.get((key, fc.name))
    return None if codec is None else FieldCodec(fc.name, codec)


def _note(problems: dict[int, Problem], errors: Mapping[int, str], reason: RejectReason, where: str) -> None:
    for i, message in errors.items():
        problems.setdefault(i, (reason, f"{where}: {message}"))


def _where(mask: pa.Array) -> list[int]:
    return [int(i) for i in pc.indices_nonzero(mask.fill_null(False)).to_pylist()]


def _struct(children: list[pa.Array], fields: list[FieldCodec], present: list[bool]) -> pa.Array:
    mask = pc.invert(pa.array(present, pa.bool_()))
    struct_fields = [pa.field(f.name, f.codec.arrow_type) for f in fields]
    return pa.StructArray.from_arrays(children, fields=struct_fields, mask=mask)


def _toasted_column(length: int, names: tuple[str, ...], toasted: dict[str, list[int]]) -> pa.Array:
    if not toasted:
        return pa.repeat(pa.scalar([], _TOASTED_TYPE), length)
    entries = sorted((i, order, name) for order, name in enumerate(names) for i in toasted.get(name, ()))
    counts = [0] * length
    for i, _, _ in entries:
        counts[i] += 1
    offsets = pa.array(list(accumulate(counts, initial=0)), pa.int32())
    return pa.ListArray.from_arrays(offsets, pa.array([name for _, _, name in entries], pa.string()))
