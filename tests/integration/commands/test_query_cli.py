"""``cdcwh query --format json|csv|table`` on a real DuckDB warehouse file: exact values, markup-looking
strings verbatim, errors verbatim on stderr."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

MARKUP = ["x[/]", "[b]abc[/b]", "[bold red]no style[/]"]
AMOUNT = Decimal("12345678901234567.8901")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    data = tmp_path / "data"
    data.mkdir()
    con = duckdb.connect(str(data / "warehouse.duckdb"))
    con.execute("CREATE SCHEMA gold")
    con.execute(
        "CREATE TABLE gold.t (id INTEGER, label VARCHAR, amount DECIMAL(38, 4), ts TIMESTAMPTZ, big HUGEINT)"
    )
    for i, label in enumerate(MARKUP):
        con.execute(
            "INSERT INTO gold.t VALUES (?, ?, ?, TIMESTAMPTZ '2026-01-02 03:04:05.123456+00', "
            "170141183460469231731687303715884105727)",
            [i, label, AMOUNT],
        )
    con.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDCWH_")}
    env["CDCWH_DATA_DIR"] = str(data)
    return env


def query(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdcwh.cli", "query", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_json_is_one_document_with_exact_values(env: dict[str, str]) -> None:
    result = query(env, "SELECT * FROM gold.t ORDER BY id", "--format", "json")
    assert result.returncode == 0, result.stderr[-2000:]
    document = json.loads(result.stdout)
    assert [c["name"] for c in document["columns"]] == ["id", "label", "amount", "ts", "big"]
    assert document["columns"][2]["type"] == "DECIMAL(38,4)"
    assert document["truncated"] is False
    assert [row[1] for row in document["rows"]] == MARKUP
    for row in document["rows"]:
        assert Decimal(row[2]) == AMOUNT
        assert datetime.fromisoformat(row[3]) == datetime.fromisoformat("2026-01-02T03:04:05.123456+00:00")
        assert row[4] == 2**127 - 1
    markup_sql = query(env, "SELECT 'x[/]' AS \"[b]c[/b]\"", "--format", "json")
    assert json.loads(markup_sql.stdout) == {
        "columns": [{"name": "[b]c[/b]", "type": "VARCHAR"}],
        "rows": [["x[/]"]],
        "truncated": False,
    }


def test_limit_is_reported(env: dict[str, str]) -> None:
    result = query(env, "SELECT * FROM gold.t ORDER BY id", "--format", "json", "--limit", "2")
    document = json.loads(result.stdout)
    assert len(document["rows"]) == 2 and document["truncated"] is True
    assert "--limit" in result.stderr


def test_csv_and_table_print_values_verbatim(env: dict[str, str]) -> None:
    result = query(env, "SELECT label, amount FROM gold.t ORDER BY id", "--format", "csv")
    assert result.returncode == 0, result.stderr[-2000:]
    assert list(csv.reader(io.StringIO(result.stdout))) == [
        ["label", "amount"],
        *([label, str(AMOUNT)] for label in MARKUP),
    ]
    table = query(env, "SELECT label, amount FROM gold.t ORDER BY id")
    assert table.returncode == 0, table.stderr[-2000:]
    for label in MARKUP:
        assert label in table.stdout
    assert "12345678901234567.8901" in table.stdout  # not cut at 80 columns when piped


def test_an_error_is_printed_verbatim(env: dict[str, str]) -> None:
    result = query(env, "SELECT 'x[/]', [b] FROM nowhere_[i]")
    assert result.returncode == 2
    assert "SELECT 'x[/]', [b] FROM nowhere_[i]" in result.stderr
    assert "Traceback" not in result.stderr
