"""``PostgresMartSink`` against a real PostgreSQL, without Kafka: the version guard on upserts and deletes,
tombstones, newest-wins within a batch, exact money, a composite key, and the error the service retries on."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from cdcwh.config import PROJECT_ROOT
from cdcwh.goldfeed import GoldChange
from cdcwh.sink.postgres import PostgresMartSink

SQL_DIR = PROJECT_ROOT / "sql"


@pytest.fixture
def sink(postgres_dsn: str, pg_schema: str) -> Iterator[PostgresMartSink]:
    mart_sink = PostgresMartSink(postgres_dsn, pg_schema, Path(SQL_DIR))
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


def order_deleted(order_id: int, version: int) -> GoldChange:
    return GoldChange("orders", "delete", version, f'{{"order_id":{order_id}}}', None, None)


def rows(dsn: str, pg_schema: str, mart: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        query = sql.SQL("SELECT * FROM {} ORDER BY 1, 2").format(sql.Identifier(pg_schema, mart))
        return [dict(r) for r in conn.execute(query).fetchall()]


def orders(dsn: str, pg_schema: str) -> dict[int, tuple[int, str, Decimal]]:
    return {r["order_id"]: (r["_version"], r["status"], r["amount"]) for r in rows(dsn, pg_schema, "orders")}


def test_upserts_apply_only_when_newer(sink: PostgresMartSink, postgres_dsn: str, pg_schema: str) -> None:
    sink.apply([order(1, 5, "10.00", "placed")])
    assert orders(postgres_dsn, pg_schema) == {1: (5, "placed", Decimal("10.00"))}
    # an older version of the same key is ignored, and so is the same version again with other content
    sink.apply([order(1, 3, "99.00", "cancelled")])
    sink.apply([order(1, 5, "98.00", "returned")])
    assert orders(postgres_dsn, pg_schema) == {1: (5, "placed", Decimal("10.00"))}
    # a newer one updates
    sink.apply([order(1, 8, "11.00", "shipped")])
    assert orders(postgres_dsn, pg_schema) == {1: (8, "shipped", Decimal("11.00"))}


def test_repair_also_rewrites_the_same_version(
    sink: PostgresMartSink, postgres_dsn: str, pg_schema: str
) -> None:
    """The backfill's mode: a same-version row altered by hand is restored, an older change still ignored."""
    sink.apply([order(1, 5, "10.00", "placed")])
    sink.apply([order(1, 5, "10.00", "placed")], repair=True)
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute(sql.SQL("UPDATE {} SET amount = 999").format(sql.Identifier(pg_schema, "orders")))
    sink.apply([order(1, 4, "44.00", "returned")], repair=True)
    assert orders(postgres_dsn, pg_schema) == {1: (5, "placed", Decimal("999.00"))}
    sink.apply([order(1, 5, "10.00", "placed")], repair=True)
    assert orders(postgres_dsn, pg_schema) == {1: (5, "placed", Decimal("10.00"))}


def test_deletes_and_tombstones(sink: PostgresMartSink, postgres_dsn: str, pg_schema: str) -> None:
    sink.apply([order(1, 5), order(2, 9), order(3, 4)])
    # delete v7: removes order 1 (v5), not order 2 (v9, newer than the delete)
    sink.apply([order_deleted(1, 7), order_deleted(2, 7)])
    assert set(orders(postgres_dsn, pg_schema)) == {2, 3}
    assert orders(postgres_dsn, pg_schema)[2][0] == 9
    # a replayed upsert older than the recorded delete does not resurrect order 1, nor does an equal one
    sink.apply([order(1, 6)])
    sink.apply([order(1, 7)])
    assert set(orders(postgres_dsn, pg_schema)) == {2, 3}
    # an older delete replayed later does not lower the tombstone: v6 upsert still stays out
    sink.apply([order_deleted(1, 2), order(1, 6)])
    assert set(orders(postgres_dsn, pg_schema)) == {2, 3}
    # a newer upsert brings it back
    sink.apply([order(1, 10, "12.00", "completed")])
    assert orders(postgres_dsn, pg_schema)[1] == (10, "completed", Decimal("12.00"))
    # a delete of a key that never existed leaves a tombstone that keeps its older upserts out
    sink.apply([order_deleted(4, 20)])
    sink.apply([order(4, 19)])
    assert set(orders(postgres_dsn, pg_schema)) == {1, 2, 3}
    sink.apply([order(4, 21)])
    assert set(orders(postgres_dsn, pg_schema)) == {1, 2, 3, 4}


def test_one_batch_keeps_the_newest_change_per_key(
    sink: PostgresMartSink, postgres_dsn: str, pg_schema: str
) -> None:
    # newest last, newest first, and an upsert followed by a newer delete, all in one apply call
    sink.apply(
        [
            order(1, 2, "1.00", "placed"),
            order(1, 4, "4.00", "shipped"),
            order(2, 6, "6.00", "completed"),
            order(2, 3, "3.00", "placed"),
            order(3, 1, "1.00", "placed"),
            order_deleted(3, 2),
        ]
    )
    assert orders(postgres_dsn, pg_schema) == {
        1: (4, "shipped", Decimal("4.00")),
        2: (6, "completed", Decimal("6.00")),
    }
    # a delete followed by a newer upsert in one batch: the upsert wins
    sink.apply([order_deleted(1, 5), order(1, 7, "7.00", "returned")])
    assert orders(postgres_dsn, pg_schema)[1] == (7, "returned", Decimal("7.00"))


def test_money_is_exact(sink: PostgresMartSink, postgres_dsn: str, pg_schema: str) -> None:
    change = order(1, 1, "12.30")
    row = dict(change.row or {}, amount=Decimal("12.30"), credit_card_amount=Decimal("0.10"))
    row["coupon_amount"] = Decimal("0.20")
    row["bank_transfer_amount"] = Decimal("12345678.99")
    sink.apply([GoldChange("orders", "upsert", 1, change.key, row, None)])
    [stored] = rows(postgres_dsn, pg_schema, "orders")
    assert stored["amount"] == Decimal("12.30") and str(stored["amount"]) == "12.30"
    assert stored["credit_card_amount"] + stored["coupon_amount"] == Decimal("0.30")
    assert stored["bank_transfer_amount"] == Decimal("12345678.99")
    assert all(type(stored[c]) is Decimal for c in ("amount", "credit_card_amount", "gift_card_amount"))
    assert stored["order_date"] == date(2024, 3, 1)


def dim_customer(customer_id: int, version: int, segment: str, current: bool, at: int) -> GoldChange:
    row = {
        "customer_id": customer_id,
        "version": version,
        "email": f"c{customer_id}@example.com",
        "segment": segment,
        "country": "FR",
        "valid_from": f"2024-01-0{version} 10:00:00+00",
        "valid_to": None if current else f"2024-01-0{version + 1} 10:00:00+00",
        "is_current": current,
    }
    key = f'{{"customer_id":{customer_id},"version":{version}}}'
    return GoldChange("dim_customers", "upsert", at, key, row, None)


def test_composite_key_mart(sink: PostgresMartSink, postgres_dsn: str, pg_schema: str) -> None:
    def state() -> dict[tuple[int, int], tuple[str, bool, int]]:
        return {
            (r["customer_id"], r["version"]): (r["segment"], r["is_current"], r["_version"])
            for r in rows(postgres_dsn, pg_schema, "dim_customers")
        }

    sink.apply([dim_customer(1, 1, "consumer", True, 10), dim_customer(2, 1, "consumer", True, 10)])
    # customer 1 changes segment: version 1 closes, version 2 opens; customer 2 untouched
    sink.apply([dim_customer(1, 1, "consumer", False, 11), dim_customer(1, 2, "corporate", True, 11)])
    assert state() == {
        (1, 1): ("consumer", False, 11),
        (1, 2): ("corporate", True, 11),
        (2, 1): ("consumer", True, 10),
    }
    # replaying the opening of version 1 does not reopen it
    sink.apply([dim_customer(1, 1, "consumer", True, 10)])
    assert state()[(1, 1)] == ("consumer", False, 11)
    # deleting one composite key removes that row only
    sink.apply([GoldChange("dim_customers", "delete", 12, '{"customer_id":1,"version":2}', None, None)])
    assert set(state()) == {(1, 1), (2, 1)}
    sink.apply([dim_customer(1, 2, "corporate", True, 11)])
    assert set(state()) == {(1, 1), (2, 1)}


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_postgres_raises_operational_error() -> None:
    dsn = f"host=127.0.0.1 port={closed_port()} dbname=cdcwh user=cdcwh connect_timeout=2"
    sink = PostgresMartSink(dsn, "marts", Path(SQL_DIR))
    with pytest.raises(psycopg.OperationalError):
        sink.apply([order(1, 1)])
    sink.close()


def test_a_key_inserted_by_another_writer_meanwhile_takes_the_guarded_path(
    sink: PostgresMartSink, postgres_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New keys are COPied straight into the mart; when another writer inserted one of them between the
    lookup and the COPY, the COPY fails inside its savepoint and the batch still applies, version-guarded."""
    sink.apply([order(1, 5, "10.00", "placed"), order(2, 5, "20.00", "placed")])
    # every key taken for new, as if keys 1 and 2 had been inserted by another writer after the check
    monkeypatch.setattr(sink, "_split", lambda conn, mart, changes: (list(changes), []))
    sink.apply([order(1, 9, "11.00", "shipped"), order(2, 4, "99.00", "cancelled"), order(3, 1, "30.00")])
    assert orders(postgres_dsn, pg_schema) == {
        1: (9, "shipped", Decimal("11.00")),  # newer: updated
        2: (5, "placed", Decimal("20.00")),  # older: ignored by the guard
        3: (1, "placed", Decimal("30.00")),  # new: inserted
    }


def test_keys_below_and_above_the_largest_held_key(
    sink: PostgresMartSink, postgres_dsn: str, pg_schema: str
) -> None:
    """Integer keys above the mart's largest are inserted without a probe; those below are probed."""
    sink.apply([order(10, 2), order(20, 2)])
    sink.apply([order(5, 3), order(10, 1, "1.00", "stale"), order(20, 3, "21.00", "shipped"), order(30, 3)])
    assert orders(postgres_dsn, pg_schema) == {
        5: (3, "placed", Decimal("10.00")),
        10: (2, "placed", Decimal("10.00")),
        20: (3, "shipped", Decimal("21.00")),
        30: (3, "placed", Decimal("10.00")),
    }


def test_a_replayed_insert_above_the_largest_key_respects_its_tombstone(
    sink: PostgresMartSink, postgres_dsn: str, pg_schema: str
) -> None:
    """Key 5 is deleted, so it is above the mart's largest key again: its older upsert, replayed, must not
    come back through the direct COPY, and a newer one must."""
    sink.apply([order(1, 2), order(5, 2)])
    sink.apply([order_deleted(5, 9)])
    sink.apply([order(5, 3, "55.00", "stale")])
    assert orders(postgres_dsn, pg_schema) == {1: (2, "placed", Decimal("10.00"))}
    sink.apply([order(5, 12, "56.00", "reopened")])
    assert orders(postgres_dsn, pg_schema) == {
        1: (2, "placed", Decimal("10.00")),
        5: (12, "reopened", Decimal("56.00")),
    }
