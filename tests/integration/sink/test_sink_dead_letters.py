"""Dead letters: a gold change PostgreSQL refuses (a CHECK constraint, a numeric out of range, a NUL byte in a
text) is narrowed out of its batch and recorded in ``<schema>._dead_letters``; the rest of the batch applies.
A replay records no second row, a fixed change clears its dead letter, and an error that is not about the
data lands nothing. Real PostgreSQL; the last test adds a real broker and the sink service."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg import sql
from psycopg.rows import dict_row

from cdcwh import metrics
from cdcwh.config import PROJECT_ROOT
from cdcwh.goldfeed import GoldChange
from cdcwh.kafka import ensure_topics
from cdcwh.sink.postgres import DEAD_LETTERS, PostgresMartSink
from cdcwh.sink.service import SinkService, sink_group
from tests.support.pipeline import settings_for

SQL_DIR = PROJECT_ROOT / "sql"


@pytest.fixture
def sink(postgres_dsn: str, pg_schema: str) -> Iterator[PostgresMartSink]:
    mart_sink = PostgresMartSink(postgres_dsn, pg_schema, Path(SQL_DIR))
    mart_sink.connect()
    yield mart_sink
    mart_sink.close()


def order(order_id: int, version: int, amount: str = "10.00", status: str = "placed") -> GoldChange:
    row = {
        "order_id": order_id,
        "customer_id": 7,
        "order_date": "2024-03-01",
        "status": status,
        "credit_card_amount": amount,
        "coupon_amount": "0.00",
        "bank_transfer_amount": "0.00",
        "gift_card_amount": "0.00",
        "amount": amount,
    }
    return GoldChange("orders", "upsert", version, f'{{"order_id":{order_id}}}', row, None)


def product(product_id: int, version: int, price: str) -> GoldChange:
    row = {
        "product_id": product_id,
        "sku": f"SKU-{product_id}",
        "name": "thing",
        "category": "tools",
        "price": price,
        "active": True,
        "description": None,
    }
    return GoldChange("dim_products", "upsert", version, f'{{"product_id":{product_id}}}', row, None)


def execute(dsn: str, query: sql.Composable) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(query)


def orders(dsn: str, pg_schema: str) -> dict[int, tuple[int, str, Decimal]]:
    with psycopg.connect(dsn) as conn:
        query = sql.SQL("SELECT order_id, _version, status, amount FROM {}").format(
            sql.Identifier(pg_schema, "orders")
        )
        return {r[0]: (r[1], r[2], r[3]) for r in conn.execute(query).fetchall()}


def dead_letters(dsn: str, pg_schema: str) -> dict[tuple[str, str, int], dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        query = sql.SQL("SELECT * FROM {}").format(sql.Identifier(pg_schema, DEAD_LETTERS))
        return {(r["mart"], r["key"], r["version"]): dict(r) for r in conn.execute(query).fetchall()}


def add_amount_check(dsn: str, pg_schema: str) -> None:
    execute(
        dsn,
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT amount_below_1000 CHECK (amount < 1000)").format(
            sql.Identifier(pg_schema, "orders")
        ),
    )


def test_poison_rows_become_dead_letters_and_the_rest_applies(
    sink: PostgresMartSink, postgres_dsn: str, pg_schema: str
) -> None:
    sink.apply([order(i, 1) for i in range(1, 11)])
    add_amount_check(postgres_dsn, pg_schema)
    batch = [
        *(order(i, 2, "20.00", "shipped") for i in range(1, 11) if i != 7),  # updates: the guarded merge
        order(7, 2, "5000.00", "shipped"),  # an update the CHECK constraint refuses
        *(order(i, 2) for i in range(11, 21) if i != 13),  # new keys: the direct COPY
        order(13, 2, "13.00", "pla\x00ced"),  # a NUL byte: PostgreSQL text cannot hold it
        product(1, 2, "12.00"),
        product(2, 2, "123456789012.00"),  # does not fit numeric(12,2)
    ]
    result = sink.apply(batch)

    state = orders(postgres_dsn, pg_schema)
    assert state[7] == (1, "placed", Decimal("10.00")), "the refused update left the row as it was"
    assert 13 not in state
    assert {k: v for k, v in state.items() if k not in (7, 13)} == {
        **{i: (2, "shipped", Decimal("20.00")) for i in range(1, 11) if i != 7},
        **{i: (2, "placed", Decimal("10.00")) for i in range(11, 21) if i != 13},
    }
    with psycopg.connect(postgres_dsn) as conn:
        products = conn.execute(
            sql.SQL("SELECT product_id, price FROM {}").format(sql.Identifier(pg_schema, "dim_products"))
        ).fetchall()
    assert products == [(1, Decimal("12.00"))]

    letters = dead_letters(postgres_dsn, pg_schema)
    assert set(letters) == {
        ("orders", '{"order_id":7}', 2),
        ("orders", '{"order_id":13}', 2),
        ("dim_products", '{"product_id":2}', 2),
    }
    check = letters[("orders", '{"order_id":7}', 2)]
    assert (check["op"], check["reason"], check["sqlstate"], check["attempts"]) == (
        "upsert",
        "check_violation",
        "23514",
        1,
    )
    assert "amount_below_1000" in check["error"]
    assert json.loads(check["change"])["row"]["amount"] == "5000.00"
    nul = letters[("orders", '{"order_id":13}', 2)]
    assert (nul["reason"], nul["sqlstate"]) == ("nul_in_text", None)
    assert json.loads(nul["change"])["row"]["status"] == "pla\x00ced"  # kept, escaped in the JSON text
    overflow = letters[("dim_products", '{"product_id":2}', 2)]
    assert (overflow["reason"], overflow["sqlstate"]) == ("numeric_value_out_of_range", "22003")

    assert sorted((d.mart, d.key, d.reason) for d in result.dead_letters) == [
        ("dim_products", '{"product_id":2}', "numeric_value_out_of_range"),
        ("orders", '{"order_id":13}', "nul_in_text"),
        ("orders", '{"order_id":7}', "check_violation"),
    ]
    assert result.upserts == {"orders": 18, "dim_products": 1}

    # the same batch again (a replay, a redelivery): no second dead-letter row, one more attempt each
    sink.apply(batch)
    again = dead_letters(postgres_dsn, pg_schema)
    assert set(again) == set(letters)
    assert all(row["attempts"] == 2 for row in again.values())
    assert orders(postgres_dsn, pg_schema) == state


def test_a_fixed_change_clears_its_dead_letter(
    sink: PostgresMartSink, postgres_dsn: str, pg_schema: str
) -> None:
    sink.apply([order(1, 1), order(2, 1)])
    add_amount_check(postgres_dsn, pg_schema)
    sink.apply([order(1, 2, "5000.00"), order(2, 2, "6000.00"), order(3, 2, "7000.00")])
    assert len(dead_letters(postgres_dsn, pg_schema)) == 3
    # the operator drops the constraint and replays: the changes apply and their dead letters go
    execute(
        postgres_dsn,
        sql.SQL("ALTER TABLE {} DROP CONSTRAINT amount_below_1000").format(
            sql.Identifier(pg_schema, "orders")
        ),
    )
    sink.apply([order(1, 2, "5000.00"), order(3, 2, "7000.00")])
    # and a newer change of order 2 makes its dead letter moot too; an older replay clears nothing
    sink.apply([order(2, 1)])
    assert set(dead_letters(postgres_dsn, pg_schema)) == {("orders", '{"order_id":2}', 2)}
    sink.apply([order(2, 3, "30.00")])
    assert dead_letters(postgres_dsn, pg_schema) == {}
    assert orders(postgres_dsn, pg_schema) == {
        1: (2, "placed", Decimal("5000.00")),
        2: (3, "placed", Decimal("30.00")),
        3: (2, "placed", Decimal("7000.00")),
    }


def test_an_error_not_about_the_data_lands_nothing(
    sink: PostgresMartSink, postgres_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection failing half-way through the narrowing: nothing of the batch lands, dead letters
    included, and the error reaches the service (which retries the batch)."""
    add_amount_check(postgres_dsn, pg_schema)

    def lost(*args: object) -> None:
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(sink, "_dead_letter", lost)
    with pytest.raises(psycopg.OperationalError):
        sink.apply([order(1, 1), order(2, 1, "5000.00"), order(3, 1), order(4, 1)])
    sink.close()
    assert orders(postgres_dsn, pg_schema) == {}
    assert dead_letters(postgres_dsn, pg_schema) == {}


def committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        offsets = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in offsets)


def test_the_sink_service_commits_past_a_poison_change_and_keeps_consuming(
    tmp_path: Path, kafka_bootstrap: str, postgres_dsn: str, pg_schema: str
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = settings_for(
        tmp_path / "data", kafka_bootstrap, prefix, postgres={"dsn": postgres_dsn, "schema": pg_schema}
    )
    topic = f"{settings.kafka.gold_topic_prefix}.orders"
    ensure_topics(AdminClient({"bootstrap.servers": kafka_bootstrap}), [topic], 1)
    sink = PostgresMartSink(postgres_dsn, pg_schema, Path(SQL_DIR))
    sink.connect()
    sink.close()
    add_amount_check(postgres_dsn, pg_schema)

    producer = Producer({"bootstrap.servers": kafka_bootstrap})

    def produce(changes: list[GoldChange]) -> None:
        for change in changes:
            value = {"mart": change.mart, "op": change.op, "version": change.version, "row": change.row}
            producer.produce(topic, key=change.key.encode(), value=json.dumps(value))
        assert producer.flush(10) == 0

    dead = metrics.SINK_DEAD_LETTERS.labels("orders", "check_violation")
    before = dead._value.get()
    produce([order(1, 1), order(2, 1, "5000.00"), order(3, 1)])
    assert SinkService(settings).run(until_caught_up=True, idle_s=0.2) == 0
    assert orders(postgres_dsn, pg_schema) == {
        1: (1, "placed", Decimal("10.00")),
        3: (1, "placed", Decimal("10.00")),
    }
    assert set(dead_letters(postgres_dsn, pg_schema)) == {("orders", '{"order_id":2}', 1)}
    assert dead._value.get() == before + 1
    assert committed(kafka_bootstrap, sink_group(settings), topic) == 3

    # the sink goes on: the next changes apply, the offsets move on
    produce([order(4, 2), order(2, 2, "20.00")])
    assert SinkService(settings).run(until_caught_up=True, idle_s=0.2) == 0
    assert set(orders(postgres_dsn, pg_schema)) == {1, 2, 3, 4}
    assert dead_letters(postgres_dsn, pg_schema) == {}  # order 2 applied at a newer version
    assert committed(kafka_bootstrap, sink_group(settings), topic) == 5
