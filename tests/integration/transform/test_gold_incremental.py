"""Incremental gold models: a batch recomputes only the mart rows its changes touch, follows a row that moves
between refresh values, falls back to a full recompute when it must, and rejects a header that leaves out an
input. A real DuckDB warehouse file; the batch's captured changes are written the way silver.py writes them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from cdcwh.config import Settings
from cdcwh.errors import ConfigError
from cdcwh.models import GoldModel, load_models
from cdcwh.transform.gold import refresh_model
from cdcwh.transform.silver import apply_changes
from cdcwh.warehouse import ChangeSet, changes_table, open_warehouse

TOTALS = """-- mart: totals
-- primary key: order_id
-- incremental: order_id from silver.orders.id, silver.payments.order_id
SELECT o.id AS order_id, CAST(coalesce(sum(p.amount), 0) AS DECIMAL(12, 2)) AS amount
FROM silver.orders AS o LEFT JOIN silver.payments AS p ON p.order_id = o.id
GROUP BY o.id
"""


def model_from(tmp_path: Path, sql: str) -> GoldModel:
    directory = tmp_path / "gold"
    directory.mkdir(exist_ok=True)
    (directory / "model.sql").write_text(sql)
    return load_models(directory)[0]


@pytest.fixture
def con(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    con = open_warehouse(Settings(data_dir=tmp_path / "data"))
    con.execute("CREATE TABLE silver.orders AS SELECT * FROM (VALUES (1), (2), (3)) AS t(id)")
    con.execute(
        "CREATE TABLE silver.payments AS SELECT * FROM "
        "(VALUES (10, 1, 5.00::DECIMAL(12, 2)), (20, 2, 7.00::DECIMAL(12, 2))) AS t(id, order_id, amount)"
    )
    return con


def update_payment(
    con: duckdb.DuckDBPyConnection, payment: int, order_id: int, amount: str, *, capture: bool
) -> None:
    """Change a payment in silver; with ``capture`` record its images before and after as silver.py does."""
    table = changes_table("silver", "payments")
    if capture:
        con.execute(f"CREATE TEMP TABLE IF NOT EXISTS {table} AS SELECT * FROM silver.payments LIMIT 0")
        con.execute(f"INSERT INTO {table} SELECT * FROM silver.payments WHERE id = ?", [payment])
    con.execute(
        "UPDATE silver.payments SET order_id = ?, amount = ? WHERE id = ?", [order_id, amount, payment]
    )
    if capture:
        con.execute(f"INSERT INTO {table} SELECT * FROM silver.payments WHERE id = ?", [payment])


def totals(con: duckdb.DuckDBPyConnection) -> dict[int, Decimal]:
    return dict(con.execute("SELECT order_id, amount FROM gold.totals").fetchall())


def outbox_keys(con: duckdb.DuckDBPyConnection, version: int) -> list[str]:
    return [
        k
        for (k,) in con.execute(
            "SELECT key FROM cdcwh.outbox WHERE version = ? ORDER BY key", [version]
        ).fetchall()
    ]


def test_a_batch_recomputes_only_the_rows_its_changes_touch(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    model = model_from(tmp_path, TOTALS)
    refresh_model(con, model, 1, ChangeSet())  # first refresh: the mart does not exist yet, so all of it
    assert totals(con) == {1: Decimal("5.00"), 2: Decimal("7.00"), 3: Decimal("0.00")}

    update_payment(con, 10, 1, "6.00", capture=True)
    update_payment(con, 20, 2, "9.00", capture=False)  # changed behind the batch's back: must stay untouched
    result = refresh_model(con, model, 2, ChangeSet(captured={("silver", "payments")}))
    assert totals(con) == {1: Decimal("6.00"), 2: Decimal("7.00"), 3: Decimal("0.00")}
    assert (result.upserts, result.deletes, result.rows) == (1, 0, 3)
    assert outbox_keys(con, 2) == ['{"order_id":1}']

    # a truncate (or a keyless table) marks the table as changed beyond tracking: all of the mart again
    refresh_model(con, model, 3, ChangeSet(full={("silver", "payments")}))
    assert totals(con) == {1: Decimal("6.00"), 2: Decimal("9.00"), 3: Decimal("0.00")}


def test_a_row_moving_to_another_refresh_value_updates_both(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    model = model_from(tmp_path, TOTALS)
    refresh_model(con, model, 1, ChangeSet())
    con.execute(f"DROP TABLE IF EXISTS {changes_table('silver', 'payments')}")
    update_payment(con, 10, 3, "5.00", capture=True)  # the payment moves from order 1 to order 3
    refresh_model(con, model, 2, ChangeSet(captured={("silver", "payments")}))
    assert totals(con) == {1: Decimal("0.00"), 2: Decimal("7.00"), 3: Decimal("5.00")}
    assert outbox_keys(con, 2) == ['{"order_id":1}', '{"order_id":3}']


def test_a_batch_that_touches_no_input_changes_nothing(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    model = model_from(tmp_path, TOTALS)
    refresh_model(con, model, 1, ChangeSet())
    con.execute(
        "UPDATE silver.payments SET amount = 1 WHERE id = 10"
    )  # not captured: not this batch's change
    result = refresh_model(con, model, 2, ChangeSet(captured={("silver", "customers")}))
    assert (result.upserts, result.deletes, result.rows) == (0, 0, 3)
    assert totals(con)[1] == Decimal("5.00")
    assert outbox_keys(con, 2) == []


def test_an_edited_model_is_recomputed_in_full_once(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    refresh_model(con, model_from(tmp_path, TOTALS), 1, ChangeSet())
    edited = model_from(
        tmp_path, TOTALS.replace("coalesce(sum(p.amount), 0)", "coalesce(sum(p.amount), 0) * 2")
    )
    result = refresh_model(con, edited, 2, ChangeSet(captured={("silver", "customers")}))
    assert totals(con) == {1: Decimal("10.00"), 2: Decimal("14.00"), 3: Decimal("0.00")}
    assert result.upserts == 2
    # recorded: the next batch is incremental again, and one that touches nothing changes nothing
    assert refresh_model(con, edited, 3, ChangeSet(captured={("silver", "customers")})).upserts == 0


def test_the_header_must_cover_every_input(tmp_path: Path) -> None:
    partial = TOTALS.replace(", silver.payments.order_id", "")
    with pytest.raises(ConfigError, match=r"reads silver\.payments"):
        model_from(tmp_path, partial)
    with pytest.raises(ConfigError, match="incremental"):
        model_from(tmp_path, TOTALS.replace("from silver.orders.id", "from orders.id"))


def test_the_shipped_models_that_can_be_incremental_are(tmp_path: Path) -> None:
    models = {m.name: m for m in load_models(Path(__file__).parents[3] / "sql" / "gold")}
    incremental = {name for name, m in models.items() if m.incremental is not None}
    # dim_date spans min..max order_date, which no single changed row names
    assert incremental == set(models) - {"dim_date"}


def test_a_changed_null_refresh_value_recomputes_its_rows(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    by_order = """-- mart: by_order
-- primary key: order_id
-- incremental: order_id from silver.payments.order_id
SELECT order_id, CAST(sum(amount) AS DECIMAL(12, 2)) AS amount FROM silver.payments GROUP BY order_id
"""
    model = model_from(tmp_path, by_order)
    con.execute("INSERT INTO silver.payments VALUES (30, NULL, 1.00)")  # a payment of no order yet
    refresh_model(con, model, 1, ChangeSet())
    update_payment(con, 30, None, "4.00", capture=True)
    refresh_model(con, model, 2, ChangeSet(captured={("silver", "payments")}))
    amounts = dict(con.execute("SELECT order_id, amount FROM gold.by_order").fetchall())
    assert amounts == {1: Decimal("5.00"), 2: Decimal("7.00"), None: Decimal("4.00")}


def bronze_payments(*changes: tuple[str, int, int | None, str | None], lsn: int) -> pa.Table:
    """Bronze rows of ``payments`` as ingest lands them: (op, id, order_id, amount); a delete carries only its
    key (REPLICA IDENTITY DEFAULT)."""
    n = len(changes)
    return pa.table(
        {
            "id": pa.array([c[1] for c in changes], pa.int32()),
            "order_id": pa.array([c[2] for c in changes], pa.int32()),
            "amount": pa.array(
                [None if c[3] is None else Decimal(c[3]) for c in changes], pa.decimal128(12, 2)
            ),
            "__key": pa.array([{"id": c[1]} for c in changes], pa.struct([("id", pa.int32())])),
            "__op": pa.array([c[0] for c in changes]),
            "__source_ts": pa.array([datetime(2026, 1, 1, tzinfo=UTC)] * n, pa.timestamp("us", tz="UTC")),
            "__lsn": pa.array(range(lsn, lsn + n), pa.int64()),
            "__toasted": pa.array([None] * n, pa.list_(pa.string())),
            "__partition": pa.array([0] * n, pa.int32()),
            "__offset": pa.array(range(lsn, lsn + n), pa.int64()),
        }
    )


def test_a_delete_is_followed_by_its_row_before_not_its_empty_image(tmp_path: Path) -> None:
    con = open_warehouse(Settings(data_dir=tmp_path / "data"))
    con.execute("CREATE TABLE silver.orders AS SELECT * FROM (VALUES (1), (2)) AS t(id)")
    create = bronze_payments(("c", 10, 1, "5.00"), ("c", 20, 2, "7.00"), lsn=100)
    apply_changes(con, "payments", create, 0)
    model = model_from(tmp_path, TOTALS)
    refresh_model(con, model, 1, ChangeSet())
    assert totals(con) == {1: Decimal("5.00"), 2: Decimal("7.00")}

    con.execute("UPDATE silver.payments SET amount = 1 WHERE id = 10")  # behind the batch's back
    changes = ChangeSet()
    apply_changes(con, "payments", bronze_payments(("d", 20, None, None), lsn=200), 2, changes)
    captured = changes_table("silver", "payments")
    # the delete's own row (order_id NULL) would force a full recompute: the row it deleted is there instead
    assert con.execute(f"SELECT order_id FROM {captured}").fetchall() == [(2,)]
    result = refresh_model(con, model, 2, changes)
    assert totals(con) == {1: Decimal("5.00"), 2: Decimal("0.00")}, "order 1 was not recomputed"
    assert (result.upserts, result.deletes) == (1, 0)

    # a payment created and deleted within one batch had no row before: its delete row stays, and its NULL
    # order_id sends the model to a full recompute (which now also picks up the change made behind its back)
    changes = ChangeSet()
    both = bronze_payments(("c", 30, 2, "3.00"), ("d", 30, None, None), lsn=300)
    apply_changes(con, "payments", both, 3, changes)
    assert con.execute(f"SELECT id, order_id FROM {captured}").fetchall() == [(30, None)]
    refresh_model(con, model, 3, changes)
    assert totals(con) == {1: Decimal("1.00"), 2: Decimal("0.00")}
