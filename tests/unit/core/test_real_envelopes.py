"""Debezium 3.x envelope fields, decoded from the real 3.6.3 captures (tests/fixtures/debezium): what the
decoder keeps and what it ignores.

- ``source.origin`` / ``origin_lsn`` / ``xmin`` / ``sequence`` / ``ts_us`` and the payload's ``transaction``
  block are not kept (bronze keeps ``lsn``, ``txId``, ``ts_ms``, ``ts_ns``, ``snapshot``, ``db``, ``schema``,
  ``table``); a ``transaction`` block, present or absent, changes nothing;
- ``source.snapshot`` is kept as the connector's text, ``first_in_data_collection`` and
  ``last_in_data_collection`` included;
- a field schema's ``default`` is not applied by the decoder: the value is what the payload carries;
- a delete's before image under REPLICA IDENTITY DEFAULT holds the key and, for NOT NULL columns, the type's
  zero value (``""``, ``0``): kept as sent in ``__before``; the data columns of a delete are null.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pyarrow as pa

from cdcwh.core import RawRecord, decode_batch
from cdcwh.core.envelope import clear_plan_caches
from tests.support.debezium import captured


def rows_of(name: str, topic: str) -> list[dict[str, Any]]:
    clear_plan_caches()
    batch = decode_batch(captured(name), {})
    assert batch.rejected == []
    return list(batch.tables[topic].to_pylist())


def edit(record: RawRecord, change: Any) -> RawRecord:
    document = json.loads(record.value or b"")
    change(document["payload"] if "payload" in document else document)
    return record._replace(value=json.dumps(document).encode())


def test_origin_and_other_source_fields_are_ignored_lsn_and_tx_kept() -> None:
    records = captured("type_zoo")
    source = json.loads(records[0].value or b"")["payload"]["source"]
    assert {"origin", "origin_lsn", "xmin", "sequence", "ts_us"} <= set(source)
    rows = rows_of("type_zoo", "zoo.public.type_zoo")
    assert not any(name.startswith("__origin") or "xmin" in name for name in rows[0])
    assert rows[0]["__lsn"] == source["lsn"] and rows[0]["__tx_id"] == source["txId"]
    assert rows[0]["__source_ts_ns"] == source["ts_ns"]
    # a replication origin (a change replayed from another node) decodes like any other event
    filled = edit(records[0], lambda p: p["source"].update(origin="node_a", origin_lsn=123))
    clear_plan_caches()
    batch = decode_batch([filled], {})
    assert batch.rejected == [] and batch.tables["zoo.public.type_zoo"].num_rows == 1


def test_snapshot_markers_are_kept_as_text() -> None:
    snapshot = [
        (row["__table"], row["__snapshot"])
        for name in ("keys",)
        for topic in ("zoo.public.countries", "zoo.public.order_lines", "zoo.public.devices")
        for row in rows_of(name, topic)
        if row["__op"] == "r"
    ]
    assert ("countries", "first_in_data_collection") in snapshot
    assert ("countries", "last_in_data_collection") in snapshot
    assert ("order_lines", "last") in snapshot
    assert {s for _, s in snapshot} <= {
        "first",
        "first_in_data_collection",
        "true",
        "last_in_data_collection",
        "last",
    }


def test_transaction_metadata_present_or_absent_changes_nothing() -> None:
    records = captured("type_zoo")[5:6]  # the streaming insert of id 6, "transaction": null
    with_tx = edit(
        records[0],
        lambda p: p.update(transaction={"id": "747:25672352", "total_order": 1, "data_collection_order": 1}),
    )
    without = edit(records[0], lambda p: p.pop("transaction"))
    tables = []
    for record in (records[0], with_tx, without):
        clear_plan_caches()
        batch = decode_batch([record], {})
        assert batch.rejected == []
        tables.append(batch.tables["zoo.public.type_zoo"])
    assert tables[0].equals(tables[1]) and tables[0].equals(tables[2])


def test_field_defaults_are_not_applied_by_the_decoder() -> None:
    records = [r for r in captured("real_schemas") if r.topic == "zoo.public.evolving"]
    last = records[-1]
    schema = json.loads(last.value or b"")["schema"]
    after = next(f for f in schema["fields"] if f["field"] == "after")
    assert {"type": "string", "optional": True, "default": "new", "field": "tag"} in after["fields"]
    null_tag = edit(last, lambda p: p["after"].update(tag=None))
    clear_plan_caches()
    batch = decode_batch([last, null_tag], {})
    assert batch.rejected == []
    assert batch.tables["zoo.public.evolving"]["tag"].to_pylist() == ["x", None]
    # the serial key's "default": 0 likewise: keys decode from the payload
    key_schema = json.loads(captured("type_zoo")[0].key or b"")["schema"]
    assert key_schema["fields"][0].get("default") == 0


def test_delete_before_images_keep_the_type_defaults_as_sent() -> None:
    rows = rows_of("keys", "zoo.public.devices")
    (delete,) = [r for r in rows if r["__op"] == "d"]
    assert delete["__before"] == {"id": "22222222-2222-4222-8222-222222222222", "name": "", "seen_at": None}
    assert delete["name"] is None and delete["id"] is None  # no after image: every data column null
    assert delete["__key"] == {"id": "22222222-2222-4222-8222-222222222222"}
    lines = [r for r in rows_of("keys", "zoo.public.order_lines") if r["__op"] == "d"]
    assert [r["__before"] for r in lines][0] == {"order_id": 1, "line_no": 2, "sku": "", "qty": 0}


def test_full_replica_identity_before_images_are_real() -> None:
    rows = rows_of("keys", "zoo.public.audit_full")
    (update,) = [r for r in rows if r["__op"] == "u"]
    assert update["__before"]["actor"] == "alice" and update["__before"]["n"] == 1
    assert "__key" not in rows[0] or all(r["__key"] is None for r in rows)


def test_a_bronze_column_made_decimal_38_18_keeps_its_type() -> None:
    """Releases before the decimal text made an unconstrained numeric decimal(38,18); such a bronze column
    cannot become a string, so VariableScaleDecimal keeps decoding into it: what fits lands (also in
    ``__before``), the huge numeric of ids 4 and 8 is a type_mismatch as it was. A new table gets the text."""
    topic = "zoo.public.type_zoo"
    existing = pa.schema([("id", pa.int32()), ("c_numeric", pa.decimal128(38, 18))])
    clear_plan_caches()
    batch = decode_batch(captured("type_zoo"), {}, schemas={topic: existing})
    rejected = {(r.offset, r.reason) for r in batch.rejected}
    assert {o for o, _ in rejected} == {3, 7}  # the r of id 4 and the c of id 8
    assert all("c_numeric" in r.detail and "18 fractional" in r.detail for r in batch.rejected)
    table = batch.tables[topic]
    assert table.schema.field("c_numeric").type == pa.decimal128(38, 18)
    assert table.schema.field("__before").type.field("c_numeric").type == pa.decimal128(38, 18)
    by_id = {r["id"]: r for r in table.to_pylist() if r["__op"] in ("r", "c")}
    assert by_id[1]["c_numeric"] == Decimal("1234.5678")
    # the same records for a new table: text, nothing rejected
    clear_plan_caches()
    fresh = decode_batch(captured("type_zoo"), {})
    assert fresh.rejected == [] and fresh.tables[topic].schema.field("c_numeric").type == pa.string()
