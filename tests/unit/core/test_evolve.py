"""plan_evolution and conform: union by name, Iceberg promotions, incompatible changes."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
import pytest

from cdcwh.core import conform, plan_evolution

FIELD_ID = {b"PARQUET:field_id": b"1"}


def test_identical_schemas_need_nothing() -> None:
    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    plan = plan_evolution(schema, schema)
    assert plan.target.equals(schema)
    assert (plan.added, plan.widened, plan.incompatible, plan.compatible) == ((), (), (), True)


def test_union_by_name_keeps_existing_order_and_metadata() -> None:
    existing = pa.schema(
        [pa.field("id", pa.int64(), nullable=False, metadata=FIELD_ID), ("name", pa.string())]
    )
    incoming = pa.schema([pa.field("note", pa.string(), nullable=False), ("id", pa.int64())])
    plan = plan_evolution(existing, incoming)
    assert plan.target.names == ["id", "name", "note"]
    assert plan.target.field("id").metadata == FIELD_ID
    assert plan.target.field("note").nullable  # added columns are always optional
    assert plan.target.field("id").nullable  # optional on either side makes it optional
    assert plan.added == ("note",)


@pytest.mark.parametrize(
    ("old", "new", "wider"),
    [
        (pa.int32(), pa.int64(), pa.int64()),
        (pa.int64(), pa.int32(), pa.int64()),
        (pa.float32(), pa.float64(), pa.float64()),
        (pa.decimal128(10, 2), pa.decimal128(12, 2), pa.decimal128(12, 2)),
        (pa.decimal128(12, 2), pa.decimal128(10, 2), pa.decimal128(12, 2)),
    ],
)
def test_promotions(old: pa.DataType, new: pa.DataType, wider: pa.DataType) -> None:
    plan = plan_evolution(pa.schema([("x", old)]), pa.schema([("x", new)]))
    assert plan.compatible
    assert plan.target.field("x").type == wider
    assert plan.widened == ("x",)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (pa.string(), pa.int32()),
        (pa.int64(), pa.string()),
        (pa.int64(), pa.float64()),
        (pa.decimal128(10, 2), pa.decimal128(10, 3)),  # scale change
        (pa.timestamp("us"), pa.timestamp("us", tz="UTC")),
        (pa.date32(), pa.timestamp("us")),
    ],
)
def test_incompatible_changes_keep_the_existing_type(old: pa.DataType, new: pa.DataType) -> None:
    plan = plan_evolution(
        pa.schema([("x", old), ("y", pa.int32())]), pa.schema([("x", new), ("y", pa.int32())])
    )
    assert not plan.compatible
    assert plan.incompatible == ("x",)
    assert plan.target.field("x").type == old
    assert plan.conflicts[0].startswith("x:")


def test_same_family_types_are_not_changes() -> None:
    existing = pa.schema(
        [
            ("s", pa.large_string()),
            ("b", pa.large_binary()),
            ("t", pa.timestamp("us", tz="+00:00")),
            ("l", pa.list_(pa.field("element", pa.string()))),
        ]
    )
    incoming = pa.schema(
        [
            ("s", pa.string()),
            ("b", pa.binary()),
            ("t", pa.timestamp("us", tz="UTC")),
            ("l", pa.list_(pa.string())),
        ]
    )
    plan = plan_evolution(existing, incoming)
    assert plan.compatible and plan.widened == ()
    assert plan.target.equals(existing)


def test_nested_struct_union_and_widening() -> None:
    existing = pa.schema([("k", pa.struct([("id", pa.int32()), ("a", pa.string())]))])
    incoming = pa.schema([("k", pa.struct([("b", pa.bool_()), ("id", pa.int64())]))])
    plan = plan_evolution(existing, incoming)
    assert plan.target.field("k").type == pa.struct(
        [("id", pa.int64()), ("a", pa.string()), ("b", pa.bool_())]
    )
    assert plan.added == ("k.b",)
    assert plan.widened == ("k.id",)


def test_nested_conflict_marks_the_top_level_column() -> None:
    existing = pa.schema([("k", pa.struct([("id", pa.int32())]))])
    incoming = pa.schema([("k", pa.struct([("id", pa.string())]))])
    plan = plan_evolution(existing, incoming)
    assert plan.incompatible == ("k",)
    assert plan.conflicts == ("k.id: int32 -> string",)


def test_lists_and_maps_widen_their_elements() -> None:
    existing = pa.schema([("l", pa.list_(pa.int32())), ("m", pa.map_(pa.string(), pa.float32()))])
    incoming = pa.schema([("l", pa.list_(pa.int64())), ("m", pa.map_(pa.string(), pa.float64()))])
    plan = plan_evolution(existing, incoming)
    assert plan.target.field("l").type == pa.list_(pa.int64())
    assert plan.target.field("m").type == pa.map_(pa.string(), pa.float64())


def test_conform_adds_casts_and_reorders() -> None:
    table = pa.table(
        {
            "price": pa.array([Decimal("1.50")], pa.decimal128(10, 2)),
            "id": pa.array([7], pa.int32()),
            "k": pa.array([{"id": 7}], pa.struct([("id", pa.int32())])),
        }
    )
    target = pa.schema(
        [
            pa.field("id", pa.int64(), metadata=FIELD_ID),
            ("note", pa.string()),
            ("price", pa.decimal128(12, 2)),
            ("k", pa.struct([("id", pa.int64()), ("extra", pa.string())])),
        ]
    )
    out = conform(table, target)
    assert out.schema.equals(target, check_metadata=True)
    assert out.to_pylist() == [
        {"id": 7, "note": None, "price": Decimal("1.50"), "k": {"id": 7, "extra": None}}
    ]


def test_conform_replaces_an_all_null_incompatible_column_and_refuses_otherwise() -> None:
    target = pa.schema([("x", pa.int64())])
    nulls = pa.table({"x": pa.array([None, None], pa.string())})
    assert conform(nulls, target).column("x").to_pylist() == [None, None]
    with pytest.raises(ValueError, match="cannot be conformed"):
        conform(pa.table({"x": pa.array(["a"], pa.string())}), target)


def test_conform_refuses_columns_missing_from_the_target() -> None:
    with pytest.raises(ValueError, match="not in the target"):
        conform(pa.table({"x": [1], "y": [2]}), pa.schema([("x", pa.int64())]))


def test_plan_then_conform_round_trip() -> None:
    existing = pa.schema([("id", pa.int32()), ("ts", pa.timestamp("us", tz="+00:00"))])
    batch = pa.table({"id": pa.array([2**40], pa.int64()), "new": ["n"]})
    plan = plan_evolution(existing, batch.schema)
    out = conform(batch, plan.target)
    assert out.schema.names == ["id", "ts", "new"]
    assert out.column("id").to_pylist() == [2**40]
    assert out.column("ts").type == pa.timestamp("us", tz="+00:00")
