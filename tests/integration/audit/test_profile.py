"""Column profiles on a real DuckDB warehouse file, checked against values computed by hand, and
``cdcwh profile`` printing the latest one with its drift from the previous."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cdcwh.cli import main
from cdcwh.config import Settings
from cdcwh.quality.profile import profile_all
from cdcwh.warehouse import open_warehouse

FIRST = datetime(2026, 8, 1, 9, 0, tzinfo=UTC)
SECOND = datetime(2026, 8, 1, 9, 1, tzinfo=UTC)


def history_row(key: int, status: str | None, amount: str | None, op: str, seq: int) -> list[object]:
    return [key, status, amount, op, seq]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path / "data")
    con = open_warehouse(settings)
    con.execute("CREATE TABLE silver.orders (id INTEGER, status VARCHAR, amount DECIMAL(10, 2))")
    con.execute(
        "CREATE TABLE silver_history.orders (id INTEGER, status VARCHAR, amount DECIMAL(10, 2), "
        "__op VARCHAR, __seq BIGINT)"
    )
    con.execute("CREATE TABLE gold.totals (day DATE, revenue DECIMAL(38, 2))")
    con.execute("INSERT INTO gold.totals VALUES ('2026-08-01', 100.00), ('2026-08-02', NULL)")
    insert = "INSERT INTO silver_history.orders VALUES (?, ?, ?, ?, ?)"
    con.executemany(
        insert,
        [
            history_row(1, "placed", "10.00", "c", 1),
            history_row(2, None, "20.00", "c", 2),
            history_row(3, "placed", None, "c", 3),
            history_row(1, "shipped", "10.00", "u", 4),
            history_row(2, None, None, "d", 5),  # a delete: no row image to profile
        ],
    )
    profile_all(con, at=FIRST, batch_id=1)
    con.executemany(insert, [history_row(4, None, "30.00", "c", 6), history_row(5, None, "40.00", "c", 7)])
    profile_all(con, at=SECOND, batch_id=2)
    con.close()
    return settings


def test_profiles_match_hand_computed_values(settings: Settings) -> None:
    con = open_warehouse(settings, read_only=True)
    rows = con.execute(
        "SELECT table_name, column_name, profiled_at, row_count, null_fraction, distinct_estimate, "
        "min_value, max_value, mean, stddev, top_values FROM cdcwh.column_profiles"
    ).fetchall()
    con.close()
    by = {(t, c, at.astimezone(UTC)): tuple(rest) for t, c, at, *rest in rows}
    # first window: the four row images of seq 1-4 (the delete left out)
    assert by[("orders", "status", FIRST)][:5] == (4, 0.25, 2, "placed", "shipped")
    assert sorted(json.loads(by[("orders", "status", FIRST)][7])) == ["placed", "shipped"]
    n, nulls, distinct, low, high, mean, stddev, top = by[("orders", "amount", FIRST)]
    values = [10.0, 20.0, 10.0]
    expected_mean = sum(values) / 3
    assert (n, nulls, distinct, low, high, top) == (4, 0.25, 2, "10.00", "20.00", None)
    assert mean == pytest.approx(expected_mean)
    assert stddev == pytest.approx(math.sqrt(sum((v - expected_mean) ** 2 for v in values) / 3))
    # second window: only the two new changes
    assert by[("orders", "status", SECOND)][:2] == (2, 1.0)
    assert by[("orders", "amount", SECOND)][5] == pytest.approx(35.0)
    # a gold model: the whole table, each time
    assert by[("totals", "revenue", FIRST)][:5] == (2, 0.5, 1, "100.00", "100.00")
    assert by[("totals", "day", SECOND)][3:5] == ("2026-08-01", "2026-08-02")


def test_cdcwh_profile_prints_the_latest_profile_and_its_drift(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CDCWH_DATA_DIR", str(settings.data_dir))
    assert main(["profile", "orders", "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["table"], document["profiled_at"], document["previous_at"]) == (
        "silver.orders",
        SECOND.isoformat(),
        FIRST.isoformat(),
    )
    columns = {c["column"]: c for c in document["columns"]}
    assert columns["status"]["null_fraction"] == 1.0
    assert columns["status"]["null_fraction_change"] == pytest.approx(0.75)
    assert columns["amount"]["mean_change"] == pytest.approx(35.0 - 40.0 / 3)
    assert columns["amount"]["distinct_change"] == 0

    assert main(["profile", "gold.totals", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split(",")[:4] == ["column", "rows", "null_fraction", "Δ nulls"]
    assert [line.split(",")[:4] for line in lines[1:]] == [
        ["day", "2", "0.0", "+0"],
        ["revenue", "2", "0.5", "+0"],
    ]

    assert main(["profile", "gold.nothing"]) == 1
    assert "no profile of gold.nothing" in capsys.readouterr().err
