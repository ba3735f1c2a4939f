"""Malformed and hostile records mixed with good ones: every good record lands in its bronze table, every bad
one is in ``bronze._quarantine`` and in ``<topic>.dlq`` with its reason and original bytes, and the service
never stops.

The records are crafted byte by byte and sent with a plain confluent-kafka producer; the good ones are the
shop generator's. The shop contracts are installed for the test's topic prefix, so contract rules apply.
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from pyiceberg.exceptions import NoSuchTableError

from cdcwh.bronze.catalog import bronze_table_name, open_catalog
from cdcwh.config import Settings
from cdcwh.core.record import RejectReason
from cdcwh.generate import ShopGenerator, encode
from cdcwh.kafka import ensure_topics
from tests.support.kafka_readback import read_to_end
from tests.support.pipeline import (
    TABLES,
    bronze,
    env_overrides,
    quarantine,
    run_ingest_until_caught_up,
    settings_for,
)
from tests.support.services import ingest_running

CONTRACTS = Path(__file__).resolve().parents[3] / "schemas" / "contracts"
MAX_VALUE_BYTES = 65_536
PARTITIONS = 3
UNKNOWN_TABLE = "mystery"

Position = tuple[str, int, int]  # topic, partition, offset


@dataclass(frozen=True)
class Outgoing:
    """A record to produce: a good one (``reason`` None) or a bad kind with the reason it must get."""

    label: str
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    reason: RejectReason | None = None


@dataclass(frozen=True)
class Sent:
    """A produced record and where it went."""

    record: Outgoing
    partition: int
    offset: int

    @property
    def position(self) -> Position:
        return (self.record.topic, self.partition, self.offset)

    @property
    def good(self) -> bool:
        return self.record.reason is None


# ---- the bad kinds -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BadKind:
    name: str
    table: str
    reason: RejectReason
    key: bytes | None
    value: bytes | None


class Templates:
    """The first snapshot/create record of each shop table, to derive bad records from."""

    def __init__(self, prefix: str, good: list[Outgoing]) -> None:
        self.prefix = prefix
        self._first: dict[str, Outgoing] = {}
        for record in good:
            table = record.topic.rsplit(".", 1)[1]
            if record.value is not None and orjson.loads(record.value)["payload"]["op"] in "rc":
                self._first.setdefault(table, record)
        assert set(self._first) == set(TABLES)

    def topic(self, table: str) -> str:
        return f"{self.prefix}.public.{table}"

    def key(self, table: str) -> bytes:
        key = self._first[table].key
        assert key is not None
        return key

    def value(self, table: str) -> bytes:
        value = self._first[table].value
        assert value is not None
        return value

    def doc(self, table: str) -> dict[str, Any]:
        """The template value parsed, to edit (``orjson.dumps`` gives back the same bytes if unchanged)."""
        parsed: dict[str, Any] = orjson.loads(self.value(table))
        return parsed

    def with_after(self, table: str, column: str, value: Any) -> bytes:
        doc = self.doc(table)
        doc["payload"]["after"][column] = value
        return orjson.dumps(doc)

    def with_payload(self, table: str, part: str, value: Any) -> bytes:
        doc = self.doc(table)
        doc["payload"][part] = value
        return orjson.dumps(doc)


def unscaled_base64(unscaled: int) -> str:
    """A Connect Decimal on the wire: base64 of the big-endian two's-complement unscaled value."""
    return base64.b64encode(unscaled.to_bytes(8, "big", signed=True)).decode()


def bad_kinds(t: Templates) -> list[BadKind]:
    """One record per kind of malformed or hostile input, with the reason it must be quarantined for."""
    R = RejectReason  # noqa: N806 - a table reads better with a short name
    orders_key, orders = t.key("orders"), t.value("orders")
    customers_key, payments_key, payments = t.key("customers"), t.key("payments"), t.value("payments")
    products_key = t.key("products")

    without_op = t.doc("orders")
    del without_op["payload"]["op"]
    without_payload = {"schema": t.doc("orders")["schema"]}
    unknown_type = t.doc("orders")
    for part in unknown_type["schema"]["fields"]:
        for field in part["fields"] if part["field"] in ("before", "after") else ():
            if field["field"] == "customer_id":
                field["type"] = "int128"
    schema_not_struct = {**t.doc("orders"), "schema": "oops"}
    source_ts_text = t.doc("orders")
    source_ts_text["payload"]["source"]["ts_ms"] = "now"
    clash = t.doc("customers")["payload"]  # schemaless, so the column name comes from the data
    clash["after"]["__op"] = "sneaky"
    null_key = {**orjson.loads(payments_key), "payload": None}
    text_key = orjson.loads(payments_key)
    text_key["payload"]["id"] = "one"

    return [
        BadKind("truncated_json", "orders", R.INVALID_JSON, orders_key, orders[:-40]),
        BadKind("empty_value", "orders", R.INVALID_JSON, orders_key, b""),
        BadKind(
            "non_utf8",
            "payments",
            R.INVALID_JSON,
            payments_key,
            payments.replace(b'"method":"', b'"method":"\xff\xfe\xc3', 1),
        ),
        BadKind(
            "nested_10000_deep",
            "products",
            R.INVALID_JSON,
            products_key,
            b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        ),
        BadKind("key_not_json", "payments", R.INVALID_JSON, b"id=1", payments),
        # no registry configured: binary garbage is invalid JSON, as before Avro support (docs/decoding.md)
        BadKind("binary_garbage", "payments", R.INVALID_JSON, payments_key, b"\x05\x00\x00\x00\x01\x02"),
        BadKind("avro_shorter_than_header", "payments", R.INVALID_AVRO, payments_key, b"\x00\x00\x01"),
        BadKind(  # a leading 0 byte is the Confluent Avro framing: an unknown schema id (no registry to ask)
            "unknown_table_garbage",
            UNKNOWN_TABLE,
            R.UNKNOWN_SCHEMA,
            b"\x00\x01key",
            b"\x00\x01\x02 junk \xff <html>",
        ),
        BadKind(
            "huge_value",
            "products",
            R.TOO_LARGE,
            products_key,
            t.with_after("products", "description", "x" * (MAX_VALUE_BYTES + 1000)),
        ),
        BadKind("huge_key", "orders", R.TOO_LARGE, b'{"id":"' + b"9" * MAX_VALUE_BYTES + b'"}', orders),
        BadKind("json_array", "customers", R.INVALID_ENVELOPE, customers_key, b"[1,2,3]"),
        BadKind("json_string", "customers", R.INVALID_ENVELOPE, customers_key, b'"just text"'),
        BadKind("envelope_without_op", "orders", R.INVALID_ENVELOPE, orders_key, orjson.dumps(without_op)),
        BadKind(
            "envelope_without_payload",
            "orders",
            R.INVALID_ENVELOPE,
            orders_key,
            orjson.dumps(without_payload),
        ),
        BadKind(
            "row_op_without_after",
            "orders",
            R.INVALID_ENVELOPE,
            orders_key,
            t.with_payload("orders", "after", None),
        ),
        BadKind(
            "after_not_an_object",
            "orders",
            R.INVALID_ENVELOPE,
            orders_key,
            t.with_payload("orders", "after", [1]),
        ),
        BadKind("key_not_an_object", "payments", R.INVALID_ENVELOPE, b"[1]", payments),
        BadKind(
            "schema_unknown_connect_type",
            "orders",
            R.INVALID_ENVELOPE,
            orders_key,
            orjson.dumps(unknown_type),
        ),
        BadKind(
            "schema_not_a_struct", "orders", R.INVALID_ENVELOPE, orders_key, orjson.dumps(schema_not_struct)
        ),
        BadKind(
            "column_named_like_metadata", "customers", R.INVALID_ENVELOPE, customers_key, orjson.dumps(clash)
        ),
        BadKind("unknown_op", "orders", R.UNKNOWN_OP, orders_key, t.with_payload("orders", "op", "x")),
        BadKind("no_key", "payments", R.MISSING_KEY, None, payments),
        BadKind("null_key_payload", "payments", R.MISSING_KEY, orjson.dumps(null_key), payments),
        BadKind("tombstone_without_key", "orders", R.MISSING_KEY, None, None),
        BadKind(
            "string_in_int_column",
            "orders",
            R.TYPE_MISMATCH,
            orders_key,
            t.with_after("orders", "customer_id", "seven"),
        ),
        BadKind(
            "int32_out_of_range",
            "orders",
            R.TYPE_MISMATCH,
            orders_key,
            t.with_after("orders", "customer_id", 2**40),
        ),
        BadKind(
            "decimal_not_base64",
            "products",
            R.TYPE_MISMATCH,
            products_key,
            t.with_after("products", "price", "12.50 EUR!"),
        ),
        BadKind(
            "decimal_overflows_precision",
            "order_items",
            R.TYPE_MISMATCH,
            t.key("order_items"),
            t.with_after("order_items", "unit_price", unscaled_base64(10**10)),
        ),
        BadKind(
            "zoned_timestamp_not_a_timestamp",
            "payments",
            R.TYPE_MISMATCH,
            payments_key,
            t.with_after("payments", "created_at", "yesterday at noon"),
        ),
        BadKind(
            "source_ts_not_a_number", "orders", R.TYPE_MISMATCH, orders_key, orjson.dumps(source_ts_text)
        ),
        BadKind("key_field_wrong_type", "payments", R.TYPE_MISMATCH, orjson.dumps(text_key), payments),
        BadKind(
            "segment_not_accepted",
            "customers",
            R.CONTRACT_VIOLATION,
            customers_key,
            t.with_after("customers", "segment", "alien"),
        ),
        BadKind(
            "negative_price",
            "products",
            R.CONTRACT_VIOLATION,
            products_key,
            t.with_after("products", "price", unscaled_base64(-100)),
        ),
        BadKind(
            "null_in_not_null_column",
            "customers",
            R.CONTRACT_VIOLATION,
            customers_key,
            t.with_after("customers", "email", None),
        ),
    ]


# sent again in the second phase, to the running service
PHASE_TWO_KINDS = (
    "truncated_json",
    "nested_10000_deep",
    "unknown_op",
    "no_key",
    "segment_not_accepted",
    "decimal_not_base64",
    "unknown_table_garbage",
)


# ---- producing and reading back ----------------------------------------------------------------------------


def install_contracts(directory: Path, prefix: str) -> Path:
    """The shop contracts, rewritten for topics ``<prefix>.public.<table>``."""
    directory.mkdir(parents=True)
    for path in CONTRACTS.glob("shop.public.*.toml"):
        text = path.read_text()
        assert 'topic = "shop.public.' in text
        text = text.replace('topic = "shop.public.', f'topic = "{prefix}.public.')
        (directory / path.name.replace("shop.", f"{prefix}.", 1)).write_text(text)
    return directory


def good_records(prefix: str, seed: int, events: int) -> list[Outgoing]:
    """The shop generator's records (with the schema envelope), tombstones included."""
    changes = ShopGenerator(seed).changes(events)
    return [Outgoing("good", r.topic, r.key, r.value) for c in changes for r in encode(c, prefix=prefix)]


def interleave(good: list[Outgoing], bad: list[Outgoing]) -> list[Outgoing]:
    """Bad records spread through the good ones, the first ``PARTITIONS`` before any good record."""
    head, rest = bad[:PARTITIONS], bad[PARTITIONS:]
    out = list(head)
    step = max(1, len(good) // (len(rest) + 1))
    for i, record in enumerate(good):
        out.append(record)
        if rest and (i + 1) % step == 0:
            out.append(rest.pop(0))
    return out + rest


def produce(bootstrap: str, records: list[Outgoing]) -> list[Sent]:
    """Produce in order (idempotent, so per-partition order is kept); returns where each record went."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    ensure_topics(admin, sorted({r.topic for r in records}), PARTITIONS)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    sent: list[Sent] = []
    errors: list[str] = []

    def delivered(record: Outgoing) -> Callable[[Any, Any], None]:
        def callback(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(f"{record.label}: {err}")
            else:
                sent.append(Sent(record, msg.partition(), msg.offset()))

        return callback

    for record in records:
        extra = {} if record.partition is None else {"partition": record.partition}
        producer.produce(
            record.topic, key=record.key, value=record.value, on_delivery=delivered(record), **extra
        )
        producer.poll(0)
    assert producer.flush(30) == 0
    assert not errors, errors
    assert len(sent) == len(records)
    return sent


def bad_records(templates: Templates, kinds: list[BadKind]) -> list[Outgoing]:
    """The kinds as records, spread over the partitions."""
    return [
        Outgoing(kind.name, templates.topic(kind.table), kind.key, kind.value, i % PARTITIONS, kind.reason)
        for i, kind in enumerate(kinds)
    ]


def read_topics(bootstrap: str, topics: list[str]) -> list[Any]:
    """Every record of ``topics``, read to partition EOF (the embedded broker's "latest" offset is wrong)."""
    return read_to_end(bootstrap, topics=topics, timeout_s=30)


# ---- checks ------------------------------------------------------------------------------------------------


def bronze_positions(settings: Settings, topic: str) -> list[Position]:
    rows = bronze(settings, topic)
    return list(
        zip(
            rows["__topic"].to_pylist(),
            rows["__partition"].to_pylist(),
            rows["__offset"].to_pylist(),
            strict=True,
        )
    )


def check_everything_accounted_for(settings: Settings, bootstrap: str, prefix: str, sent: list[Sent]) -> None:
    """Good records in bronze exactly once, bad ones in quarantine and the DLQ exactly once, nothing else."""
    good = [s for s in sent if s.good]
    bad = {s.position: s.record for s in sent if not s.good}
    for table in TABLES:
        topic = f"{prefix}.public.{table}"
        landed = bronze_positions(settings, topic)
        duplicates = [p for p, n in Counter(landed).items() if n > 1]
        assert not duplicates, f"{table}: landed twice: {duplicates[:5]}"
        expected = {s.position for s in good if s.record.topic == topic}
        assert set(landed) == expected, (
            f"{table}: missing {sorted(expected - set(landed))[:5]}, "
            f"unexpected {sorted(set(landed) - expected)[:5]}"
        )

    rows = quarantine(settings).to_pylist()
    by_position = {(r["topic"], r["partition"], r["offset"]): r for r in rows}
    assert len(by_position) == len(rows), "a record was quarantined twice"
    assert set(by_position) == set(bad), {bad[p].label for p in set(bad) - set(by_position)}
    for position, record in bad.items():
        row = by_position[position]
        assert (row["reason"], record.label) == (record.reason, record.label), row["detail"]
        assert row["detail"], record.label
        assert row["key"] == record.key, record.label
        assert row["value"] == record.value, record.label
        assert row["kafka_ts"] is not None and row["quarantined_at"] is not None

    dlq_topics = sorted({f"{topic}.dlq" for topic, _, _ in bad})
    published: Counter[Position] = Counter()
    for m in read_topics(bootstrap, dlq_topics):
        headers = dict(m.headers() or [])
        topic = m.topic().removesuffix(".dlq")
        position = (topic, int(headers["cdcwh.source.partition"]), int(headers["cdcwh.source.offset"]))
        published[position] += 1
        record = bad[position]
        assert headers["cdcwh.reason"].decode() == record.reason, record.label
        assert headers["cdcwh.detail"], record.label
        assert (m.key(), m.value()) == (record.key, record.value), record.label
    assert published == Counter(list(bad)), "the DLQ topics do not hold every bad record exactly once"


# ---- the test ----------------------------------------------------------------------------------------------


def landed_positions(settings: Settings, prefix: str) -> set[Position]:
    catalog = open_catalog(settings)
    landed: set[Position] = set()
    for table in TABLES:
        try:
            iceberg = catalog.load_table(
                (settings.iceberg.namespace, bronze_table_name(f"{prefix}.public.{table}"))
            )
        except NoSuchTableError:
            continue
        rows = iceberg.scan(selected_fields=("__topic", "__partition", "__offset")).to_arrow()
        landed.update(
            zip(*(rows[c].to_pylist() for c in ("__topic", "__partition", "__offset")), strict=True)
        )
    return landed


def test_bad_records_are_quarantined_good_ones_land_and_the_service_goes_on(
    tmp_path: Path, kafka_bootstrap: str, unique_prefix: str
) -> None:
    prefix = unique_prefix
    settings = settings_for(tmp_path / "data", kafka_bootstrap, prefix)
    extra = {
        "CDCWH_CONTRACTS_DIR": str(install_contracts(tmp_path / "contracts", prefix)),
        "CDCWH_INGEST__MAX_VALUE_BYTES": str(MAX_VALUE_BYTES),
    }
    good = good_records(prefix, seed=21, events=300)
    templates = Templates(prefix, good)
    kinds = bad_kinds(templates)
    assert len(kinds) >= 15 and len({k.name for k in kinds}) == len(kinds)
    assert {k.reason for k in kinds} == set(RejectReason) - {
        RejectReason.SCHEMA_CONFLICT,  # test_ingest_evolution.py
        RejectReason.INTERNAL_ERROR,  # a decoder bug: nothing to trigger on purpose
        RejectReason.UNWRITABLE,  # test_ingest_real_debezium.py (injected: the decoder stops the known ones)
    }

    # phase 1: a backlog of good and bad records, landed by --until-caught-up
    sent = produce(kafka_bootstrap, interleave(good, bad_records(templates, kinds)))
    first_of_partition: dict[tuple[str, int], Sent] = {}
    for s in sorted(sent, key=lambda s: s.offset):
        first_of_partition.setdefault(s.position[:2], s)
    starts_bad = [
        s
        for s in first_of_partition.values()
        if not s.good and s.record.topic != templates.topic(UNKNOWN_TABLE)
    ]
    assert starts_bad, "no partition of a shop topic starts with a bad record"

    run_ingest_until_caught_up(settings, **extra)
    check_everything_accounted_for(settings, kafka_bootstrap, prefix, sent)

    # phase 2: the long-running service gets more bad records, then good ones, and keeps going
    with ingest_running(env_overrides(settings, CDCWH_INGEST__COMMIT_INTERVAL_S="0.5", **extra)) as ingest:
        by_name = {k.name: k for k in kinds}
        more_bad = bad_records(templates, [by_name[name] for name in PHASE_TWO_KINDS])
        more_good = good_records(prefix, seed=22, events=60)
        sent += produce(kafka_bootstrap, more_bad + more_good)
        expected = {s.position for s in sent if s.good}
        deadline = time.monotonic() + 60
        while not expected <= landed_positions(settings, prefix):
            assert ingest.alive(), "ingest stopped"
            assert time.monotonic() < deadline, "the good records did not land"
            time.sleep(0.5)
        assert ingest.alive(), "ingest stopped"
    # leaving the block stops it as SIGTERM does (final checkpoint), and re-raises what it failed with
    check_everything_accounted_for(settings, kafka_bootstrap, prefix, sent)
