"""``cdcwh generate --into-source``: the shop workload as SQL transactions against a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdcwh.cli import main
from cdcwh.generate.sql_workload import apply_workload
from tests.integration.reconcile.helpers import fresh_database

ORPHANS = {
    "orders without their customer": "SELECT count(*) FROM orders o "
    "WHERE NOT EXISTS (SELECT 1 FROM customers c WHERE c.id = o.customer_id)",
    "items without their order": "SELECT count(*) FROM order_items i "
    "WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = i.order_id)",
    "items without their product": "SELECT count(*) FROM order_items i "
    "WHERE NOT EXISTS (SELECT 1 FROM products p WHERE p.id = i.product_id)",
    "payments without their order": "SELECT count(*) FROM payments p "
    "WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = p.order_id)",
}


@pytest.fixture
def source(postgres_dsn: str) -> Iterator[str]:
    with fresh_database(postgres_dsn) as dsn:
        yield dsn


def scalar(conn: psycopg.Connection[tuple[Any, ...]], query: str) -> Any:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def test_generate_into_source_leaves_a_consistent_shop(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CDCWH_DATA_DIR", str(tmp_path / "data"))
    with psycopg.connect(source) as conn:
        seed_rows = conn.execute("SELECT * FROM customers WHERE id <= 3 ORDER BY id").fetchall()

    code = main(["generate", "--into-source", "--events", "300", "--seed", "3", "--source-dsn", source])
    assert code == 0

    with psycopg.connect(source) as conn:
        for what, query in ORPHANS.items():
            assert scalar(conn, query) == 0, what
        # the rows shop.sql inserted are untouched: generated ids start above them
        after = conn.execute("SELECT * FROM customers WHERE id <= 3 ORDER BY id").fetchall()
        assert [row[: len(seed_rows[0])] for row in after] == seed_rows
        assert scalar(conn, "SELECT count(*) FROM orders WHERE id > 4") > 0
        # the ALTER TABLE happened mid-stream, and later customers carry the new column
        columns = [r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns "
                                             "WHERE table_name = 'customers'").fetchall()]  # fmt: skip
        assert "loyalty_tier" in columns
        assert scalar(conn, "SELECT count(*) FROM customers WHERE loyalty_tier IS NOT NULL") > 0
        # the descriptions are large and stored out of line (an unchanged one is sent as the TOAST
        # placeholder)
        assert scalar(conn, "SELECT min(octet_length(description)) FROM products WHERE id > 3") > 2048
        toast = scalar(conn, "SELECT reltoastrelid::regclass::text FROM pg_class WHERE relname = 'products'")
        assert scalar(conn, f"SELECT count(*) FROM {toast}") > 0
        # statuses moved on, and some rows were deleted (ids missing below the highest)
        assert scalar(conn, "SELECT count(DISTINCT status) FROM orders WHERE id > 4") >= 2
        assert scalar(conn, "SELECT count(*) FROM orders") < scalar(conn, "SELECT max(id) FROM orders")


def test_a_second_run_does_not_collide_and_rekeys_an_order(source: str) -> None:
    first = apply_workload(source, events=300, seed=5)
    second = apply_workload(source, events=300, seed=5)
    assert first.events == second.events == 300
    assert second.id_offsets["orders"] >= first.id_offsets["orders"] + 1
    assert first.added_column and second.added_column
    assert first.rekeyed_order is not None
    old, new = first.rekeyed_order
    with psycopg.connect(source) as conn:
        assert scalar(conn, f"SELECT count(*) FROM orders WHERE id = {old}") == 0
        assert scalar(conn, f"SELECT count(*) FROM orders WHERE id = {new}") == 1
        # its items and payments moved with it
        assert scalar(conn, f"SELECT count(*) FROM order_items WHERE order_id = {old}") == 0
        for what, query in ORPHANS.items():
            assert scalar(conn, query) == 0, what
    # multi-table transactions: more changes than transactions
    assert first.transactions < sum(first.counts.values())
