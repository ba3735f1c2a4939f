"""Real Debezium 3.6.3 output (tests/fixtures/debezium, captured by its capture.py) lands in bronze, and a row
the bronze writer refuses is isolated while the rest of its batch lands.

Runs the bronze writer in-process against a real Iceberg SqlCatalog; the records are the captured key and
value strings, given Kafka coordinates here (the embedded broker adds nothing to what is being tested).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyiceberg.table import Transaction

from cdcwh.bronze.catalog import QUARANTINE_TABLE, bronze_table_name, open_catalog
from cdcwh.config import Settings
from cdcwh.core.record import RejectReason
from cdcwh.ingest.bronze import IcebergBronzeWriter
from tests.support.debezium import by_id, captured, table_rows

UTC = dt.UTC


def writer(tmp_path: Path) -> tuple[IcebergBronzeWriter, Settings]:
    settings = Settings(data_dir=tmp_path / "data")
    catalog = open_catalog(settings)
    return IcebergBronzeWriter(catalog, settings.iceberg.namespace, {}, max_value_bytes=10_000_000), settings


HUGE_NUMERIC = "123456789012345678901234567890123456789.12345678901234567890123456789"
"""The type_zoo's unconstrained numeric of ids 4 and 8 as Debezium sends it (scale 29: PostgreSQL's trailing
fractional zero of ...567890 is dropped by the connector), kept exactly as decimal text."""


def test_the_type_zoo_lands_whole_with_special_values_kept(tmp_path: Path) -> None:
    records = captured("type_zoo")
    bronze, settings = writer(tmp_path)
    result = bronze.land(records)
    assert result.quarantined == []
    # everything but the tombstone after the delete: it lands too, as a row with __op = 'tombstone'
    assert sum(result.landed.values()) == len(records)
    bronze_rows = table_rows(settings, bronze_table_name("zoo.public.type_zoo"))
    # exact decimal text (pyiceberg reads strings back as large_string)
    assert pa.types.is_large_string(bronze_rows.schema.field("c_numeric").type)
    rows = by_id(bronze_rows)
    top = dt.datetime(9999, 12, 31, 23, 59, 59, 999999)  # noqa: DTZ001 (timestamp without time zone)
    for infinite in (3, 7):  # +infinity through the snapshot (3) and through streaming (7)
        row = rows[infinite]
        assert row["c_timestamptz"] == top.replace(tzinfo=UTC)
        assert row["c_timestamp"] == top
        assert row["c_timestamp_3"] == top
        assert row["c_date"] == dt.date(9999, 12, 31)
        assert math.isnan(row["c_double"]) and row["c_real"] == math.inf
        assert row["c_numeric"] is None  # numeric 'NaN': Debezium's precise mode sends null
    assert rows[1]["c_numeric_10_2"] == rows[6]["c_numeric_10_2"]  # snapshot and streaming agree
    assert rows[1]["c_numeric"] == rows[6]["c_numeric"] == "1234.5678"
    assert rows[1]["c_money"] == Decimal("1234.56")
    assert rows[3]["c_money"] == Decimal("92233720368547758.07")  # money max: decimal(38,2) is enough
    assert rows[2]["c_timestamptz"] is None  # the all-NULL row
    for minus_infinity in (4, 8):  # -infinity and the huge numeric, snapshot (4) and streaming (8)
        row = rows[minus_infinity]
        assert row["c_numeric"] == HUGE_NUMERIC
        assert Decimal(row["c_numeric"]) == Decimal(HUGE_NUMERIC)
        assert row["c_timestamptz"] == dt.datetime(1, 1, 1, tzinfo=UTC)
        assert row["c_timestamp"] == dt.datetime(1, 1, 1)  # noqa: DTZ001 (timestamp without time zone)
        assert row["c_timestamp_3"] == dt.datetime(1, 1, 1)  # noqa: DTZ001
        assert row["c_date"] == dt.date(1, 1, 1)
        assert row["c_double"] == -math.inf
        assert row["c_money"] == Decimal("-92233720368547758.08")


def test_minus_infinity_as_the_connector_sends_it(tmp_path: Path) -> None:
    """The snapshot row of id 4 alone, as captured: it lands (nothing in it is quarantined any more)."""
    records = captured("type_zoo")[3:4]
    assert json.loads(records[0].value or b"")["payload"]["after"]["id"] == 4
    bronze, settings = writer(tmp_path)
    result = bronze.land(records)
    assert result.quarantined == []
    row = by_id(table_rows(settings, bronze_table_name("zoo.public.type_zoo")))[4]
    assert row["c_timestamptz"] == dt.datetime(1, 1, 1, tzinfo=UTC)
    assert row["c_timestamp"] == dt.datetime(1, 1, 1)  # noqa: DTZ001 (timestamp without time zone)
    assert row["c_date"] == dt.date(1, 1, 1)
    assert row["c_double"] == -math.inf
    assert row["c_numeric"] == HUGE_NUMERIC


def test_a_row_the_writer_refuses_is_isolated_and_the_rest_lands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decoder now stops every value known to break the write (the timestamptz infinity that once made
    pyiceberg's statistics raise OverflowError), so the same error is injected here: any write holding the
    text "poison" raises it, as pyiceberg did."""
    records = captured("type_zoo")
    poisoned = 5  # the streaming insert of id 6
    document = json.loads(records[poisoned].value or b"")
    document["payload"]["after"]["c_text"] = "poison"
    value = json.dumps(document).encode()
    records[poisoned] = records[poisoned]._replace(value=value)
    original = Transaction.append

    def append(self: Transaction, df: pa.Table, *args: Any, **kwargs: Any) -> None:
        if "c_text" in df.column_names and pc.any(pc.equal(df["c_text"], "poison")).as_py():
            raise OverflowError("date value out of range")
        original(self, df, *args, **kwargs)

    monkeypatch.setattr(Transaction, "append", append)
    bronze, settings = writer(tmp_path)
    result = bronze.land(records)
    unwritable = [r for r in result.quarantined if r.reason == RejectReason.UNWRITABLE]
    assert [r.offset for r in unwritable] == [poisoned]
    assert "OverflowError" in unwritable[0].detail and unwritable[0].value == value
    rows = table_rows(settings, bronze_table_name("zoo.public.type_zoo"))
    assert rows.num_rows == len(records) - len(result.quarantined)
    assert poisoned not in rows["__offset"].to_pylist()
    quarantine = table_rows(settings, QUARANTINE_TABLE)
    assert quarantine.filter(pc.equal(quarantine["reason"], "unwritable"))["offset"].to_pylist() == [poisoned]
    # redelivered (a crash before the Kafka commit): nothing lands or is quarantined twice
    again = bronze.land(records)
    assert sum(again.landed.values()) == 0 and again.quarantined == []
