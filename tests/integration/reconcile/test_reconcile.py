"""``cdcwh reconcile`` against a real PostgreSQL source and a real DuckDB warehouse file.

The silver tables are copies of the source's rows with the transform's types (``helpers.copy_to_silver``,
standing in for the transform); then the source and silver are made to differ outside CDC.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from cdcwh.cli import main
from cdcwh.config import Settings
from cdcwh.generate.sql_workload import apply_workload
from cdcwh.reconcile import ReconcileResult, reconcile
from cdcwh.warehouse import open_warehouse
from tests.integration.reconcile.helpers import copy_to_silver, fresh_database


@pytest.fixture
def source(postgres_dsn: str) -> Iterator[str]:
    with fresh_database(postgres_dsn) as dsn:
        # a workload on top of shop.sql's rows: TOASTed descriptions, a re-keyed order, loyalty_tier added
        apply_workload(dsn, events=400, seed=11)
        yield dsn


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("CDCWH_DATA_DIR", str(tmp_path / "data"))
    return Settings(data_dir=tmp_path / "data")


def differences(result: ReconcileResult) -> set[tuple[str, str, str, str | None, str | None]]:
    return {
        (table.silver_table, d.key_text, d.column, d.source, d.silver)
        for table in result.tables
        for d in table.differences
    }


def test_equal_source_and_silver(source: str, settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    copy_to_silver(source, settings)

    result = reconcile(settings, source_dsn_override=source, ranges=8)
    assert result.equal, differences(result)
    for table in result.tables:
        # the range digests computed by PostgreSQL and DuckDB agree: no range needed a row-by-row look
        assert table.method == "digest"
        assert table.ranges_compared == 0, table.silver_table
        assert table.source_rows == table.silver_rows > 0

    assert main(["reconcile", "--source-dsn", source, "--ranges", "4"]) == 0
    out = capsys.readouterr().out
    with psycopg.connect(source) as conn:
        row = conn.execute("SELECT count(*) FROM orders").fetchone()
    assert row is not None
    assert f"orders: {row[0]:,} rows, equal" in out


def test_differences_are_found_with_both_sides(
    source: str, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    copy_to_silver(source, settings)
    with psycopg.connect(source) as conn:
        payment = conn.execute("SELECT id, amount FROM payments ORDER BY id DESC LIMIT 1").fetchone()
        customer = conn.execute(
            "SELECT id FROM customers c WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id) "
            "ORDER BY id LIMIT 1"
        ).fetchone()
        assert payment is not None and customer is not None
        # a row deleted in the source outside CDC
        conn.execute("DELETE FROM customers WHERE id = %s", (customer[0],))
    con = open_warehouse(settings)
    try:
        # a value changed in silver, and a row silver has that the source never had
        con.execute("UPDATE silver.payments SET amount = amount + 0.01 WHERE id = ?", [payment[0]])
        con.execute(
            "INSERT INTO silver.orders (id, customer_id, status, order_date, created_at, __op, __seq) "
            "VALUES (99999999, 1, 'placed', DATE '2026-03-01', TIMESTAMP '2026-03-01 10:00:00', 'c', 2)"
        )
    finally:
        con.close()

    result = reconcile(settings, source_dsn_override=source, ranges=8)
    assert not result.equal
    amount = payment[1]
    assert differences(result) == {
        ("payments", f"id={payment[0]}", "amount", _number(amount), _number(amount + Decimal("0.01"))),
        ("customers", f"id={customer[0]}", "(row)", "(no row)", "(row present)"),
        ("orders", "id=99999999", "(row)", "(no row)", "(row present)"),
    }
    assert result.table("payments").changed == 1
    assert result.table("customers").only_in_silver == 1
    assert result.table("orders").only_in_silver == 1
    assert result.table("products").equal and result.table("order_items").equal
    # only the ranges holding a difference were fetched row by row
    assert result.table("payments").ranges_compared == 1
    assert result.differing_keys == 3

    assert main(["reconcile", "--source-dsn", source, "--table", "payments", "--table", "customers"]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert f"id={payment[0]} │ amount" in out
    assert "customers: " in out and "1 key differs (1 only in silver)" in out
    assert "orders" not in out


def _number(value: Decimal) -> str:
    """A numeric's canonical text: exact, without trailing zeros."""
    return format(value.normalize(), "f")


def test_a_missing_row_in_silver_and_a_new_column(source: str, settings: Settings) -> None:
    copy_to_silver(source, settings)
    con = open_warehouse(settings)
    try:
        # silver has not seen the ALTER TABLE yet, and missed a delete... of a row it never got
        con.execute("ALTER TABLE silver.customers DROP COLUMN loyalty_tier")
        row = con.execute("SELECT max(id) FROM silver.products").fetchone()
        assert row is not None
        con.execute("DELETE FROM silver.products WHERE id = ?", [row[0]])
    finally:
        con.close()
    result = reconcile(settings, source_dsn_override=source, ranges=4)
    products = result.table("products")
    assert products.missing_in_silver == 1 and products.differing_keys == 1
    assert products.differences[0].key_text == f"id={row[0]}"
    customers = result.table("customers")
    # every customer with a tier now differs on that column; the notes say why
    assert customers.changed > 0
    assert {d.column for d in customers.differences} == {"loyalty_tier"}
    assert {d.silver for d in customers.differences} == {None}
    assert any("silver lacks loyalty_tier" in note for note in customers.notes)
