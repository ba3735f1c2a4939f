"""Helpers for the transform scenario, feed and crash tests: hand-built shop changes, runs in parallel
threads, reads of the warehouse and of the gold change topics.

``ChangeScript`` writes ``SourceChange`` sequences by hand (strictly increasing LSN, transaction id and commit
time, delete ``before`` images as REPLICA IDENTITY DEFAULT gives them). ``read_feed`` reads every gold change
topic of a prefix from offset 0 to the end (the embedded broker's ListOffsets is unreliable, so it reads to
partition EOF); ``parse_row`` turns a message's JSON row back into the values ``gold.<mart>`` holds.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import duckdb
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from cdcwh.bronze.catalog import bronze_table_name, open_catalog
from cdcwh.bronze.offsets import landed_offsets
from cdcwh.config import Settings
from cdcwh.generate import SHOP_TABLES, TOAST_PLACEHOLDER, KafkaRecord, SourceChange
from tests.support.marts_reference import MART_KEYS
from tests.support.services import RunningIngest

Row = dict[str, Any]
T = TypeVar("T")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MONEY_TEXT = re.compile(r"^-?\d+\.\d{2}$")


def source_time(ts_ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ts_ms)


class ChangeScript:
    """Hand-written source changes of the shop tables, one transaction each, in source order.

    ``changes`` collects everything written so far (the input of ``replay_state`` / ``reference_marts``).
    """

    def __init__(self, start: datetime = datetime(2026, 3, 1, tzinfo=UTC)) -> None:
        self.lsn = 50_000_000
        self.tx_id = 9_000
        self.ts_ms = int((start - EPOCH) / timedelta(milliseconds=1))
        self.rows: dict[tuple[str, int], Row] = {}
        self.changes: list[SourceChange] = []

    def _emit(
        self,
        table: str,
        op: str,
        key: int,
        before: Row | None,
        after: Row | None,
        toasted: frozenset[str] = frozenset(),
    ) -> SourceChange:
        self.advance()
        change = SourceChange(
            table=table,
            op=op,  # type: ignore[arg-type]
            key={"id": key},
            before=before,
            after=after,
            toasted=toasted,
            lsn=self.lsn,
            tx_id=self.tx_id,
            ts_ms=self.ts_ms,
            snapshot="false",
            last_commit_lsn=self.lsn - 32,
        )
        self.changes.append(change)
        return change

    def advance(self) -> tuple[int, int]:
        """The next change's position: new LSN, transaction and commit time (1 s later); (lsn, ts_ms)."""
        self.lsn += 64
        self.tx_id += 1
        self.ts_ms += 1_000
        return self.lsn, self.ts_ms

    def create(self, table: str, **row: Any) -> SourceChange:
        columns = SHOP_TABLES[table].column_names
        assert set(row) == set(columns), f"{table}: columns {sorted(row)} != {sorted(columns)}"
        full = {column: row[column] for column in columns}
        self.rows[table, full["id"]] = full
        return self._emit(table, "c", full["id"], None, dict(full))

    def update(self, table: str, key: int, toasted: Iterable[str] = (), **values: Any) -> SourceChange:
        """An update of ``values``; columns in ``toasted`` arrive as the TOAST placeholder (unchanged)."""
        row = self.rows[table, key]
        row.update(values)
        toasted = frozenset(toasted)
        after = {column: (TOAST_PLACEHOLDER if column in toasted else value) for column, value in row.items()}
        return self._emit(table, "u", key, None, after, toasted)

    def delete(self, table: str, key: int) -> SourceChange:
        del self.rows[table, key]
        before: Row = dict.fromkeys(SHOP_TABLES[table].column_names)
        before["id"] = key
        return self._emit(table, "d", key, before, None)


def run_parallel(function: Callable[..., T], items: Iterable[Any], **extra: str) -> list[T]:
    """``function(item, **extra)`` for every item at once, in threads; the results."""
    items = list(items)
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return [future.result() for future in [pool.submit(function, item, **extra) for item in items]]


class Landing:
    """Counts the records produced per topic, and waits until bronze has landed all of them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.produced: Counter[str] = Counter()

    def add(self, records: Iterable[KafkaRecord]) -> list[KafkaRecord]:
        records = list(records)
        self.produced.update(r.topic for r in records)
        return records

    def wait(self, ingest: RunningIngest, timeout_s: float = 90.0) -> None:
        """Until every produced offset (tombstones included: offsets start at 0, no gaps) has landed."""
        catalog = open_catalog(self.settings)
        deadline = time.monotonic() + timeout_s
        while True:
            missing = {}
            for topic, count in self.produced.items():
                identifier = (self.settings.iceberg.namespace, bronze_table_name(topic))
                landed = 0
                if catalog.table_exists(identifier):
                    offsets = landed_offsets(catalog.load_table(identifier))
                    landed = sum(o + 1 for (t, _), o in offsets.items() if t == topic)
                if landed < count:
                    missing[topic] = (landed, count)
            if not missing:
                return
            assert ingest.alive(), "ingest stopped"
            assert time.monotonic() < deadline, f"not landed (landed, produced): {missing}"
            time.sleep(0.2)


@contextmanager
def reading(settings: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    """One read-only connection to the warehouse file, for many queries (each connect reads the file)."""
    con = duckdb.connect(str(Path(settings.data_dir) / "warehouse.duckdb"), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        yield con
    finally:
        con.close()


def query(settings: Settings, sql: str, con: duckdb.DuckDBPyConnection | None = None) -> list[Row]:
    """Rows of one read-only query against the warehouse file (on ``con`` when given)."""
    if con is not None:
        rows: list[Row] = con.sql(sql).to_arrow_table().to_pylist()
        return rows
    with reading(settings) as own:
        return query(settings, sql, own)


def tables_in(settings: Settings, schema: str) -> list[str]:
    rows = query(
        settings,
        f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{schema}' ORDER BY 1",
    )
    return [str(row["table_name"]) for row in rows]


def sort_key(row: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(repr(row[c]) for c in sorted(row))


def table_rows(
    settings: Settings,
    table: str,
    exclude: Iterable[str] = (),
    con: duckdb.DuckDBPyConnection | None = None,
) -> list[Row]:
    """Every row of ``table`` without the ``exclude`` columns, in a canonical order."""
    excluded = list(exclude)
    columns = f"* EXCLUDE ({', '.join(excluded)})" if excluded else "*"
    return sorted(query(settings, f"SELECT {columns} FROM {table}", con), key=sort_key)


def column_types(settings: Settings, table: str) -> dict[str, str]:
    return {str(row["column_name"]): str(row["column_type"]) for row in query(settings, f"DESCRIBE {table}")}


# ---- the gold change feed ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedMessage:
    topic: str
    partition: int
    offset: int
    key: bytes
    value: dict[str, Any]

    @property
    def mart(self) -> str:
        return str(self.value["mart"])

    @property
    def version(self) -> int:
        return int(self.value["version"])

    @property
    def key_text(self) -> str:
        return self.key.decode()


def read_feed(bootstrap: str, gold_prefix: str, timeout_s: float = 60.0) -> dict[str, list[FeedMessage]]:
    """Every message of every ``<gold_prefix>.<mart>`` topic, per mart in partition-then-offset order."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = {
        name: sorted(meta.partitions)
        for name, meta in admin.list_topics(timeout=10).topics.items()
        if name.startswith(gold_prefix + ".")
    }
    feed: dict[str, list[FeedMessage]] = {name[len(gold_prefix) + 1 :]: [] for name in topics}
    if not topics:
        return feed
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"feed-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.assign(
            [TopicPartition(t, p, OFFSET_BEGINNING) for t, parts in topics.items() for p in parts]
        )
        pending = {(t, p) for t, parts in topics.items() for p in parts}
        deadline = time.monotonic() + timeout_s
        while pending:
            assert time.monotonic() < deadline, f"gold topics not read to the end: {sorted(pending)}"
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error
                pending.discard((message.topic(), message.partition()))
                continue
            topic = str(message.topic())
            feed[topic[len(gold_prefix) + 1 :]].append(
                FeedMessage(
                    topic=topic,
                    partition=int(message.partition()),
                    offset=int(message.offset()),
                    key=bytes(message.key()),
                    value=json.loads(message.value()),
                )
            )
    finally:
        consumer.close()
    for messages in feed.values():
        messages.sort(key=lambda m: (m.partition, m.offset))
    return feed


def parse_value(column_type: str, value: Any) -> Any:
    """A JSON value of the feed as the Python value DuckDB gives for ``column_type``."""
    if value is None:
        return None
    if column_type.startswith("DECIMAL"):
        assert isinstance(value, str) and MONEY_TEXT.match(value), f"money must travel as 'n.nn': {value!r}"
        return Decimal(value)
    if column_type == "DATE":
        return date.fromisoformat(value)
    if column_type.startswith("TIMESTAMP"):
        return datetime.fromisoformat(value)
    return value


def parse_row(types: Mapping[str, str], row: Mapping[str, Any]) -> Row:
    return {column: parse_value(types[column], value) for column, value in row.items()}


def key_of(mart: str, row: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(row[column] for column in MART_KEYS[mart])


def replay(
    feed: Mapping[str, list[FeedMessage]], types: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[tuple[Any, ...], Row]]:
    """The state the feed leaves: per mart and key, the highest version wins; a delete removes the row.
    Rows carry ``_version``."""
    state: dict[str, dict[tuple[Any, ...], Row]] = {}
    for mart, messages in feed.items():
        latest: dict[tuple[Any, ...], FeedMessage] = {}
        for message in messages:
            key = key_of(mart, parse_row(types[mart], message.value["key"]))
            if key not in latest or message.version >= latest[key].version:
                latest[key] = message
        state[mart] = {
            key: {**parse_row(types[mart], m.value["row"]), "_version": m.version}
            for key, m in latest.items()
            if m.value["op"] == "upsert"
        }
    return state


def gold_state(
    settings: Settings, marts: Iterable[str], *, with_version: bool = True
) -> dict[str, dict[tuple[Any, ...], Row]]:
    """``gold.<mart>`` by primary key, without ``_updated_at`` (and without ``_version`` unless asked)."""
    drop = ["_updated_at"] if with_version else ["_updated_at", "_version"]
    state = {}
    for mart in marts:
        rows = table_rows(settings, f"gold.{mart}", drop)
        state[mart] = {key_of(mart, row): row for row in rows}
        assert len(state[mart]) == len(rows), f"gold.{mart}: duplicate primary keys"
    return state
