"""Schema evolution of bronze tables across ingest runs.

A new column is added to the bronze table (older rows read it as null) and an int32 column that later arrives
as int64 is widened; a decimal column that later arrives as a string cannot be widened: those records are
quarantined as ``schema_conflict``, the others land, whatever their order in the batch.

The Debezium JSON (with the schema envelope) is crafted by editing a generated ``orders`` event.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from cdcwh.config import Settings
from cdcwh.core.record import RejectReason
from cdcwh.generate import ShopGenerator, encode
from cdcwh.generate.output import ensure_topics
from tests.support.pipeline import bronze, quarantine, run_ingest_until_caught_up, settings_for

Fields = list[dict[str, Any]]

ID = {"type": "int64", "optional": False, "field": "id"}
NAME = {"type": "string", "optional": True, "field": "name"}
QTY_INT32 = {"type": "int32", "optional": True, "field": "qty"}
QTY_INT64 = {"type": "int64", "optional": True, "field": "qty"}
COLOUR = {"type": "string", "optional": True, "field": "colour"}
AMOUNT_DECIMAL = {
    "type": "bytes",
    "optional": True,
    "name": "org.apache.kafka.connect.data.Decimal",
    "version": 1,
    "parameters": {"scale": "2", "connect.decimal.precision": "10"},
    "field": "amount",
}
AMOUNT_TEXT = {"type": "string", "optional": True, "field": "amount"}


class Envelopes:
    """Debezium events with the JSON converter's schema envelope, for any row schema: a generated ``orders``
    event with its row schema, after image and source table replaced."""

    def __init__(self, prefix: str) -> None:
        change = next(c for c in ShopGenerator(1).changes(50) if c.table == "orders")
        record = encode(change, prefix=prefix)[0]
        assert record.value is not None
        self.key_template = orjson.loads(record.key)
        self.value_template = orjson.loads(record.value)

    def record(self, table: str, fields: Fields, after: dict[str, Any]) -> tuple[bytes, bytes]:
        key = dict(self.key_template, payload={"id": after["id"]})
        value: dict[str, Any] = orjson.loads(orjson.dumps(self.value_template))
        for part in value["schema"]["fields"]:
            if part["field"] in ("before", "after"):
                part["fields"] = fields
                part["name"] = f"{table}.Value"
        value["payload"].update(op="c", before=None, after=after)
        value["payload"]["source"]["table"] = table
        return orjson.dumps(key), orjson.dumps(value)


def decimal_text(unscaled: int) -> str:
    return base64.b64encode(unscaled.to_bytes(8, "big", signed=True)).decode()


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> list[int]:
    """Produce to partition 0 of a one-partition topic, in order; returns the offsets."""
    ensure_topics(AdminClient({"bootstrap.servers": bootstrap}), [topic], 1)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    offsets: dict[int, int] = {}
    for i, (key, value) in enumerate(records):
        producer.produce(
            topic,
            key=key,
            value=value,
            partition=0,
            on_delivery=lambda err, msg, i=i: offsets.__setitem__(i, -1 if err else msg.offset()),
        )
    assert producer.flush(30) == 0
    assert -1 not in offsets.values()
    return [offsets[i] for i in range(len(records))]


def by_offset(settings: Settings, topic: str) -> dict[int, dict[str, Any]]:
    rows = bronze(settings, topic).to_pylist()
    assert len(rows) == len({r["__offset"] for r in rows}), "an offset landed twice"
    return {r["__offset"]: r for r in rows}


@dataclass
class Evolved:
    settings: Settings
    widgets: str
    money: str
    offsets: dict[str, list[int]]
    """widgets_v1, widgets_v2, money_decimal (both runs), money_text: offsets of each group of events."""
    text_events: dict[int, tuple[bytes, bytes]]
    bronze_after_run1: pa.Schema


@pytest.fixture(scope="module")
def evolved(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Evolved:
    """Two ingest runs: the first creates the tables, the second brings the changed schemas."""
    prefix = f"evo{uuid.uuid4().hex[:8]}"
    settings = settings_for(tmp_path_factory.mktemp("evolution") / "data", kafka_bootstrap, prefix)
    envelopes = Envelopes(prefix)
    widgets, money = f"{prefix}.public.widgets", f"{prefix}.public.money"
    v1 = [ID, QTY_INT32, NAME]
    v2 = [ID, QTY_INT64, NAME, COLOUR]  # qty widened, colour added
    decimal_schema, text_schema = [ID, AMOUNT_DECIMAL], [ID, AMOUNT_TEXT]

    offsets: dict[str, list[int]] = {}
    offsets["widgets_v1"] = produce(
        kafka_bootstrap,
        widgets,
        [envelopes.record("widgets", v1, {"id": i, "qty": i, "name": f"w{i}"}) for i in range(10)],
    )
    offsets["money_decimal"] = produce(
        kafka_bootstrap,
        money,
        [
            envelopes.record("money", decimal_schema, {"id": i, "amount": decimal_text(i * 100 + 5)})
            for i in range(5)
        ],
    )
    run_ingest_until_caught_up(settings)
    after_run1 = bronze(settings, widgets).schema

    # run 2: widgets gain a column and a wider qty, mixed with old-schema events in one batch; money's amount
    # arrives as text, first in the batch and again after decimal events
    offsets["widgets_v2"] = produce(
        kafka_bootstrap,
        widgets,
        [
            envelopes.record("widgets", v2, {"id": 10, "qty": 2**40, "name": "w10", "colour": "red"}),
            envelopes.record("widgets", v1, {"id": 11, "qty": 11, "name": "w11"}),
            envelopes.record("widgets", v2, {"id": 12, "qty": -(2**35), "name": "w12", "colour": "blue"}),
            envelopes.record("widgets", v2, {"id": 13, "qty": None, "name": "w13", "colour": None}),
        ],
    )
    money_run2 = [
        ("text", envelopes.record("money", text_schema, {"id": 5, "amount": "12.50"})),
        ("decimal", envelopes.record("money", decimal_schema, {"id": 6, "amount": decimal_text(606)})),
        ("decimal", envelopes.record("money", decimal_schema, {"id": 7, "amount": decimal_text(707)})),
        ("text", envelopes.record("money", text_schema, {"id": 8, "amount": "8.08"})),
        ("decimal", envelopes.record("money", decimal_schema, {"id": 9, "amount": decimal_text(909)})),
    ]
    money_offsets = produce(kafka_bootstrap, money, [event for _, event in money_run2])
    pairs = list(zip(money_run2, money_offsets, strict=True))
    offsets["money_decimal"] += [offset for (kind, _), offset in pairs if kind == "decimal"]
    text_events = {offset: event for (kind, event), offset in pairs if kind == "text"}
    run_ingest_until_caught_up(settings)
    return Evolved(settings, widgets, money, offsets, text_events, after_run1)


def test_a_new_column_is_added_and_an_int32_column_widened(evolved: Evolved) -> None:
    assert evolved.bronze_after_run1.field("qty").type == pa.int32()
    assert "colour" not in evolved.bronze_after_run1.names

    table = bronze(evolved.settings, evolved.widgets)
    assert table.schema.field("qty").type == pa.int64()
    assert "colour" in table.schema.names
    rows = by_offset(evolved.settings, evolved.widgets)
    old, new = evolved.offsets["widgets_v1"], evolved.offsets["widgets_v2"]
    assert sorted(rows) == old + new
    for i, offset in enumerate(old):  # the rows landed before the change read the new column as null
        assert (rows[offset]["qty"], rows[offset]["name"], rows[offset]["colour"]) == (i, f"w{i}", None)
    assert [(rows[o]["id"], rows[o]["qty"], rows[o]["colour"]) for o in new] == [
        (10, 2**40, "red"),
        (11, 11, None),
        (12, -(2**35), "blue"),
        (13, None, None),
    ]
    quarantined = quarantine(evolved.settings)
    assert evolved.widgets not in quarantined["topic"].to_pylist()


def test_a_decimal_column_arriving_as_text_is_quarantined_and_the_rest_lands(evolved: Evolved) -> None:
    rows = by_offset(evolved.settings, evolved.money)
    quarantined = [r for r in quarantine(evolved.settings).to_pylist() if r["topic"] == evolved.money]
    assert {r["offset"]: r["reason"] for r in quarantined} == dict.fromkeys(
        evolved.text_events, RejectReason.SCHEMA_CONFLICT
    )
    for row in quarantined:
        assert "amount" in row["detail"]
        assert (row["key"], row["value"]) == evolved.text_events[row["offset"]]
    decimals = evolved.offsets["money_decimal"]
    assert sorted(rows) == decimals, "every decimal event lands, no text one"
    assert bronze(evolved.settings, evolved.money).schema.field("amount").type == pa.decimal128(10, 2)
    assert [rows[o]["amount"] for o in decimals[-3:]] == [Decimal("6.06"), Decimal("7.07"), Decimal("9.09")]
