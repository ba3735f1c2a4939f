"""Real Debezium 3.6.3 captures that once stopped ingest: a 2 MiB text column (a value over
``CDCWH_INGEST__MAX_VALUE_BYTES``) and tables without a primary key.

The bronze writer runs in-process against a real Iceberg SqlCatalog, the dead-letter publisher against the
session's real broker (read back to the end), with the captured key and value strings
(tests/fixtures/debezium).
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from prometheus_client import REGISTRY

from cdcwh.bronze.catalog import QUARANTINE_TABLE, bronze_table_name, open_catalog
from cdcwh.config import Settings
from cdcwh.core.record import RawRecord, Rejection, RejectReason
from cdcwh.ingest.bronze import IcebergBronzeWriter
from cdcwh.ingest.quarantine import (
    DEFAULT_DLQ_MAX_VALUE_BYTES,
    KafkaDeadLetterPublisher,
    dead_letter,
    dlq_topic,
    message_max_bytes,
)
from cdcwh.transform.silver import apply_changes, key_columns
from cdcwh.warehouse import open_warehouse
from tests.support.debezium import captured, table_rows
from tests.support.kafka_readback import read_to_end

KEYLESS = ("zoo.public.events_nokey", "zoo.public.audit_full")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def oversized(prefix: str) -> list[RawRecord]:
    """oversized.jsonl on a topic of this test's own: the 2 MiB insert is offset 1."""
    return [r._replace(topic=f"{prefix}.public.blobs") for r in captured("oversized")]


def refused_address() -> str:
    """A local address nothing listens on: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


def test_the_dead_letter_of_a_long_value_is_cut_with_its_size_and_hash() -> None:
    record = captured("oversized")[1]
    assert record.value is not None and len(record.value) > 2_000_000
    limit = DEFAULT_DLQ_MAX_VALUE_BYTES
    rejection = Rejection.of(record._replace(key=b"k" * 70_000), RejectReason.TOO_LARGE, "value is big")
    key, value, headers = dead_letter(rejection, limit)
    found = dict(headers)
    assert key == rejection.key  # a key that fits goes whole, the value gets what is left
    assert value == record.value[: limit - 70_000]
    assert found["cdcwh.value.size"] == str(len(record.value)).encode()
    assert found["cdcwh.value.sha256"] == hashlib.sha256(record.value).hexdigest().encode()
    assert found["cdcwh.truncated"] == b"value"
    assert found["cdcwh.reason"] == b"too_large"
    size = len(key) + len(value) + sum(len(k) + len(v) for k, v in headers)
    assert size < message_max_bytes(limit) < 1_000_000
    huge_key = Rejection.of(record._replace(key=b"k" * 2 * limit), RejectReason.TOO_LARGE, "key is big")
    key, value, headers = dead_letter(huge_key, limit)
    assert key == b"k" * limit and value == b""
    assert dict(headers)["cdcwh.key.size"] == str(2 * limit).encode()
    assert dict(headers)["cdcwh.truncated"] == b"key,value"
    small = dead_letter(Rejection.of(captured("oversized")[0], RejectReason.TOO_LARGE, "x"), limit)
    assert "cdcwh.truncated" not in dict(small[2])  # a record that fits goes whole, without the extra headers


def test_an_oversized_record_is_quarantined_whole_and_its_dead_letter_cut(
    tmp_path: Path, kafka_bootstrap: str, unique_prefix: str
) -> None:
    """The 2 MiB insert (a 2.1 MB value) with the default max_value_bytes: too_large, every byte in the
    quarantine table, a DLQ record cut to CDCWH_INGEST__DLQ_MAX_VALUE_BYTES with its full size and sha256;
    the rest of the batch (the TOASTed update, an update, the delete and its tombstone) lands."""
    settings = Settings(data_dir=tmp_path / "data")
    records = oversized(unique_prefix)
    topic = records[0].topic
    big = records[1].value
    assert big is not None and len(big) > settings.ingest.max_value_bytes
    publisher = KafkaDeadLetterPublisher({"bootstrap.servers": kafka_bootstrap})
    assert publisher.max_value_bytes == settings.ingest.dlq_max_value_bytes == DEFAULT_DLQ_MAX_VALUE_BYTES
    bronze = IcebergBronzeWriter(
        open_catalog(settings),
        settings.iceberg.namespace,
        {},
        max_value_bytes=settings.ingest.max_value_bytes,
        dead_letters=publisher,
    )
    failures = metric("cdcwh_dead_letter_failures_total", topic=topic)

    result = bronze.land(records)

    assert [(r.offset, r.reason) for r in result.quarantined] == [(1, RejectReason.TOO_LARGE)]
    assert result.landed == {topic: len(records) - 1}
    quarantine = table_rows(settings, QUARANTINE_TABLE)
    assert quarantine.num_rows == 1
    assert quarantine["value"][0].as_py() == big  # every byte
    assert quarantine["reason"][0].as_py() == "too_large"
    [letter] = read_to_end(kafka_bootstrap, topics=[dlq_topic(topic)])
    headers = dict(letter.headers() or [])
    key = records[1].key or b""
    assert letter.key() == key
    assert letter.value() == big[: settings.ingest.dlq_max_value_bytes - len(key)]
    assert headers["cdcwh.value.size"] == str(len(big)).encode()
    assert headers["cdcwh.value.sha256"] == hashlib.sha256(big).hexdigest().encode()
    assert headers["cdcwh.reason"] == b"too_large"
    assert headers["cdcwh.source.offset"] == b"1"
    assert metric("cdcwh_dead_letter_failures_total", topic=topic) == failures
    rows = table_rows(settings, bronze_table_name(topic))
    assert sorted(rows["__offset"].to_pylist()) == [0, 2, 3, 4, 5]


def test_a_failing_dead_letter_publish_does_not_stop_landing(tmp_path: Path, unique_prefix: str) -> None:
    """The DLQ broker refuses connections: the publish is retried within its (short) budget, then counted and
    logged; the record is in the quarantine table and the rest of the batch lands."""
    settings = Settings(data_dir=tmp_path / "data")
    records = oversized(unique_prefix)
    topic = records[0].topic
    publisher = KafkaDeadLetterPublisher(
        {"bootstrap.servers": refused_address()}, retry_budget_s=1.0, timeout_s=0.3
    )
    bronze = IcebergBronzeWriter(
        open_catalog(settings),
        settings.iceberg.namespace,
        {},
        max_value_bytes=settings.ingest.max_value_bytes,
        dead_letters=publisher,
    )
    failures = metric("cdcwh_dead_letter_failures_total", topic=topic)

    result = bronze.land(records)

    assert [(r.offset, r.reason) for r in result.quarantined] == [(1, RejectReason.TOO_LARGE)]
    assert metric("cdcwh_dead_letter_failures_total", topic=topic) == failures + 1
    quarantine = table_rows(settings, QUARANTINE_TABLE)
    assert quarantine["offset"].to_pylist() == [1]
    assert quarantine["value"][0].as_py() == records[1].value
    assert result.landed == {topic: len(records) - 1}


def test_keyless_tables_land_and_their_tombstones_are_ignored(tmp_path: Path) -> None:
    """keys.jsonl: events_nokey (default replica identity: r/c only) and audit_full (REPLICA IDENTITY FULL:
    r/c/u/d, then a tombstone with a null key and a null value), beside tables with keys."""
    records = captured("keys")
    settings = Settings(data_dir=tmp_path / "data")
    bronze = IcebergBronzeWriter(
        open_catalog(settings),
        settings.iceberg.namespace,
        {},
        max_value_bytes=settings.ingest.max_value_bytes,
    )
    tombstones = [r for r in records if r.topic == KEYLESS[1] and r.key is None and r.value is None]
    assert len(tombstones) == 1
    ignored = metric("cdcwh_events_ignored_total", topic=KEYLESS[1], reason="keyless_tombstone")

    result = bronze.land(records)

    assert result.quarantined == []
    assert result.ignored == {KEYLESS[1]: 1}
    assert metric("cdcwh_events_ignored_total", topic=KEYLESS[1], reason="keyless_tombstone") == ignored + 1
    assert sum(result.landed.values()) == len(records) - 1
    nokey = table_rows(settings, bronze_table_name(KEYLESS[0]))
    full = table_rows(settings, bronze_table_name(KEYLESS[1]))
    assert nokey["__op"].to_pylist() == ["r", "c", "c"]
    assert full["__op"].to_pylist() == ["r", "c", "u", "d"]
    for rows in (nokey, full):
        assert "__key" not in rows.column_names
    deleted = full.filter(pc.equal(full["__op"], "d"))["__before"][0].as_py()
    assert deleted is not None and all(
        v is not None for k, v in deleted.items() if k != "n"
    )  # the full old row
    keyed = table_rows(settings, bronze_table_name("zoo.public.order_lines"))
    assert keyed.schema.field("__key").type.num_fields == 2
    # redelivered: nothing lands twice, the tombstone is ignored again
    again = bronze.land(records)
    assert sum(again.landed.values()) == 0 and again.quarantined == [] and again.ignored == {KEYLESS[1]: 1}


def test_silver_keeps_a_keyless_tables_history_only(tmp_path: Path) -> None:
    """The transform sees no key columns and applies every change to silver_history; silver holds no current
    state for a table without a primary key."""
    settings = Settings(data_dir=tmp_path / "data")
    bronze = IcebergBronzeWriter(
        open_catalog(settings),
        settings.iceberg.namespace,
        {},
        max_value_bytes=settings.ingest.max_value_bytes,
    )
    bronze.land(captured("keys"))
    con = open_warehouse(settings)
    try:
        for seq, topic in enumerate(KEYLESS):
            rows = table_rows(settings, bronze_table_name(topic)).drop_columns(["__ingested_at"])
            assert key_columns(rows) == []
            applied = apply_changes(con, topic.split(".")[-1], rows, seq * 100)
            assert applied == rows.num_rows
        history = con.execute(
            "SELECT __op, count(*) FROM silver_history.audit_full GROUP BY ALL ORDER BY 1"
        ).fetchall()
        assert history == [("c", 1), ("d", 1), ("r", 1), ("u", 1)]
        assert con.execute("SELECT count(*) FROM silver_history.events_nokey").fetchone() == (3,)
        for name in ("audit_full", "events_nokey"):
            assert con.execute(f"SELECT count(*) FROM silver.{name}").fetchone() == (0,)
    finally:
        con.close()


def test_a_bronze_table_created_with_an_empty_key_struct_is_repaired(tmp_path: Path) -> None:
    """Before the fix a keyless topic's table was created with ``__key: struct<>``, which no row can be
    written with: the writer drops that column and the rows land."""
    settings = Settings(data_dir=tmp_path / "data")
    catalog = open_catalog(settings)
    records = [r for r in captured("keys") if r.topic == KEYLESS[0]]
    first = IcebergBronzeWriter(catalog, settings.iceberg.namespace, {}, max_value_bytes=10_000_000)
    first.land(records[:1])
    table = catalog.load_table((settings.iceberg.namespace, bronze_table_name(KEYLESS[0])))
    with table.update_schema() as update:  # what the old decoder's first batch created
        update.union_by_name(pa.schema([pa.field("__key", pa.struct([]))]))
    bronze = IcebergBronzeWriter(catalog, settings.iceberg.namespace, {}, max_value_bytes=10_000_000)
    result = bronze.land(records)
    assert result.quarantined == []
    rows = table_rows(settings, bronze_table_name(KEYLESS[0]))
    assert "__key" not in rows.column_names
    assert sorted(rows["__offset"].to_pylist()) == [r.offset for r in records]


@pytest.mark.parametrize("max_value_bytes", [DEFAULT_DLQ_MAX_VALUE_BYTES, 3_000_000])
def test_the_dlq_producer_accepts_its_limit(max_value_bytes: int) -> None:
    publisher = KafkaDeadLetterPublisher(
        {"bootstrap.servers": refused_address()}, max_value_bytes=max_value_bytes, retry_budget_s=0
    )
    assert publisher.max_value_bytes == max_value_bytes
