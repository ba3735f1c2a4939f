"""MySQL-shaped Debezium events (tests/fixtures/debezium/mysql, hand-written from the Debezium MySQL
connector documentation: no MySQL server can be captured here) land in bronze through the real writer, and
silver applies them in Kafka offset order (no LSN).
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path

import pyarrow.compute as pc

from cdcwh.bronze.catalog import bronze_table_name, open_catalog
from cdcwh.config import KafkaSettings, Settings
from cdcwh.ingest.bronze import IcebergBronzeWriter
from cdcwh.transform.silver import apply_changes
from cdcwh.warehouse import open_warehouse
from tests.support.debezium import captured, table_rows

TIME_MAX_US = (838 * 3600 + 59 * 60 + 59) * 1_000_000
UTC = dt.UTC


def land(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path / "data")
    bronze = IcebergBronzeWriter(
        open_catalog(settings), settings.iceberg.namespace, {}, max_value_bytes=10_000_000
    )
    result = bronze.land(captured("mysql/mysql_orders"))
    assert result.quarantined == []
    assert result.landed == {"shop.inventory.orders": 8, "shop.inventory.counters": 3}
    return settings


def test_the_default_topic_regex_takes_mysql_topics() -> None:
    pattern = re.compile(KafkaSettings().topics)
    assert pattern.match("shop.inventory.orders") and pattern.match("shop.inventory.counters")


def test_mysql_events_land_in_bronze(tmp_path: Path) -> None:
    settings = land(tmp_path)
    orders = table_rows(settings, bronze_table_name("shop.inventory.orders"))
    rows = {(r["__op"], r["__offset"]): r for r in orders.to_pylist()}
    snapshot = rows[("r", 0)]
    assert snapshot["__db"] == "inventory" and snapshot["__table"] == "orders"
    assert snapshot["__schema"] is None and snapshot["__lsn"] is None and snapshot["__tx_id"] is None
    assert snapshot["__snapshot"] == "first"
    assert snapshot["is_paid"] == 1 and snapshot["qty"] == 3  # TINYINT(1) and TINYINT UNSIGNED: integers
    assert snapshot["prep_time"] == 45_000_000_000  # TIME 12:30:00 as microseconds
    assert snapshot["created_at"] == dt.datetime(2018, 6, 20, 6, 37, 3)  # noqa: DTZ001 (DATETIME)
    assert snapshot["updated_at"] == dt.datetime(2018, 6, 20, 13, 37, 3, tzinfo=UTC)  # TIMESTAMP
    assert snapshot["amount"] == Decimal("1234.56")
    assert rows[("c", 2)]["prep_time"] == -TIME_MAX_US  # -838:59:59
    assert rows[("c", 3)]["prep_time"] == TIME_MAX_US
    assert rows[("u", 4)]["prep_time"] == 25 * 3600 * 1_000_000  # beyond 24 hours
    # bigint.unsigned.handling.mode=long: the connector wraps values above 2^63-1; they land as sent
    assert rows[("c", 2)]["customer_ref"] == -1  # 18446744073709551615
    assert rows[("c", 3)]["customer_ref"] == -(2**63)  # 9223372036854775808
    assert rows[("u", 4)]["__before"]["customer"] == "Anne"  # binlog_row_image=FULL: the whole old row
    assert rows[("d", 5)]["__before"]["id"] == 2
    assert ("tombstone", 6) in rows and ("t", 10) in rows
    # bigint.unsigned.handling.mode=precise: Decimal(20, 0), exact
    counters = table_rows(settings, bronze_table_name("shop.inventory.counters"))
    assert str(counters.schema.field("hits").type) == "decimal128(20, 0)"
    assert counters["hits"].to_pylist() == [Decimal(2**64 - 1), Decimal(2**63), Decimal(0)]


def test_silver_applies_mysql_changes_in_offset_order(tmp_path: Path) -> None:
    """No LSN: silver orders a batch by ``__lsn NULLS LAST, __partition, __offset``, so MySQL changes apply in
    Kafka offset order (one key lives in one partition)."""
    settings = land(tmp_path)
    orders = table_rows(settings, bronze_table_name("shop.inventory.orders"))
    without_truncate = orders.filter(pc.not_equal(orders["__op"], "t"))
    con = open_warehouse(settings)  # the warehouse file with its bookkeeping tables, as the transform has it
    applied = apply_changes(con, "inventory__orders", without_truncate, 0)
    assert applied == 6  # r r c c u d
    current = dict(con.execute("SELECT id, prep_time FROM silver.inventory__orders ORDER BY id").fetchall())
    assert current == {1: 25 * 3600 * 1_000_000, 3: -TIME_MAX_US, 4: TIME_MAX_US}  # 2 deleted, 1 updated
    history = con.execute("SELECT count(*), count(__lsn) FROM silver_history.inventory__orders").fetchall()
    assert history == [(6, 0)]
    # the truncate empties the table
    apply_changes(con, "inventory__orders", orders.filter(pc.equal(orders["__op"], "t")), 100)
    assert con.execute("SELECT count(*) FROM silver.inventory__orders").fetchall() == [(0,)]
