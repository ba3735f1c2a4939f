"""``cdcwh query`` runs in the sandbox of ``cdcwh.sandbox`` on a real DuckDB warehouse file: reads of silver
and gold work; file reads and writes, ATTACH, extensions, settings, pragmas, several statements and every
write are refused with a message saying what was refused, and nothing is written anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from cdcwh.cli import main
from cdcwh.config import Settings
from cdcwh.sandbox import QueryRefused, check_read_query, open_sandbox

CANARY = "canary-file-content-7c1e"
CUSTOMERS = [(1, "ada", "gold"), (2, "bob", "silver"), (3, "cy", "gold")]
ORDERS = [(10, 1, 30), (11, 1, 12), (12, 2, 7), (13, 3, 50), (14, 3, 1)]


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A warehouse with silver.customers and gold.orders, a file with CANARY beside it (CSV and Parquet)."""
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "secret.csv").write_text(f"word\n{CANARY}\n")
    con = duckdb.connect(str(data / "warehouse.duckdb"))
    con.execute("CREATE SCHEMA silver; CREATE SCHEMA gold")
    con.execute("CREATE TABLE silver.customers (id INTEGER, name VARCHAR, tier VARCHAR)")
    con.executemany("INSERT INTO silver.customers VALUES (?, ?, ?)", CUSTOMERS)
    con.execute("CREATE TABLE gold.orders (id INTEGER, customer_id INTEGER, amount INTEGER)")
    con.executemany("INSERT INTO gold.orders VALUES (?, ?, ?)", ORDERS)
    con.execute(f"COPY (SELECT '{CANARY}' AS word) TO '{tmp_path / 'secret.parquet'}' (FORMAT parquet)")
    con.close()
    monkeypatch.setenv("CDCWH_DATA_DIR", str(data))
    return data


def files_under(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in root.rglob("*")}


def query_json(sql: str, capsys: pytest.CaptureFixture[str]) -> list[list[object]]:
    assert main(["query", "--format", "json", sql]) == 0, capsys.readouterr().err
    rows: list[list[object]] = json.loads(capsys.readouterr().out)["rows"]
    return rows


def test_read_queries_on_silver_and_gold_work(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    totals: dict[str, int] = {}
    for _, customer_id, amount in ORDERS:
        name = next(c[1] for c in CUSTOMERS if c[0] == customer_id)
        totals[name] = totals.get(name, 0) + amount
    joined = query_json(
        "WITH totals AS (SELECT customer_id, sum(amount) AS total FROM gold.orders GROUP BY ALL) "
        "SELECT c.name, t.total FROM silver.customers c JOIN totals t ON t.customer_id = c.id "
        "ORDER BY c.name",
        capsys,
    )
    assert [(r[0], int(str(r[1]))) for r in joined] == sorted(totals.items())
    # a window function: each order's rank within its customer by amount, largest first
    ranked = query_json(
        "SELECT id, row_number() OVER (PARTITION BY customer_id ORDER BY amount DESC) FROM gold.orders "
        "ORDER BY id",
        capsys,
    )
    expected = {}
    for customer in {o[1] for o in ORDERS}:
        mine = sorted((o for o in ORDERS if o[1] == customer), key=lambda o: -o[2])
        expected.update({o[0]: rank for rank, o in enumerate(mine, start=1)})
    assert [(r[0], r[1]) for r in ranked] == sorted(expected.items())
    assert query_json("VALUES (1, 'a')", capsys) == [[1, "a"]]
    described = query_json("DESCRIBE gold.orders", capsys)
    assert [r[0] for r in described] == ["id", "customer_id", "amount"]
    assert query_json("FROM silver.customers SELECT count(*)", capsys) == [[len(CUSTOMERS)]]


REFUSED = [
    # (sql with {tmp} for the test's directory, what the message must say)
    ("SELECT * FROM read_csv('{tmp}/secret.csv')", "file system operations are disabled"),
    ("SELECT * FROM read_text('{tmp}/secret.csv')", "file system operations are disabled"),
    ("SELECT * FROM read_parquet('{tmp}/secret.parquet')", "file system operations are disabled"),
    ("SELECT * FROM '{tmp}/secret.csv'", "file system operations are disabled"),
    ("SELECT * FROM glob('{tmp}/*')", "file system operations are disabled"),
    ("COPY (SELECT 42 AS x) TO '{tmp}/out.csv'", "a COPY statement is not allowed"),
    ("COPY gold.orders TO '{tmp}/out.parquet' (FORMAT parquet)", "a COPY statement is not allowed"),
    ("ATTACH '{tmp}/other.duckdb' AS other", "a ATTACH statement is not allowed"),
    ("INSTALL httpfs", "a LOAD statement is not allowed"),
    ("LOAD httpfs", "a LOAD statement is not allowed"),
    ("SET enable_external_access = true", "a SET statement is not allowed"),
    ("RESET lock_configuration", "a SET statement is not allowed"),
    ("SET threads = 1", "a SET statement is not allowed"),
    ("PRAGMA version", "a PRAGMA statement is not allowed"),
    ("CALL pragma_version()", "a CALL statement is not allowed"),
    ("EXPORT DATABASE '{tmp}/export'", "a EXPORT statement is not allowed"),
    ("IMPORT DATABASE '{tmp}'", "a PRAGMA statement is not allowed"),
    ("EXPLAIN ANALYZE COPY (SELECT 1) TO '{tmp}/out.csv'", "a EXPLAIN statement is not allowed"),
    ("SELECT 1; COPY (SELECT 1) TO '{tmp}/out.csv'", "2 statements found"),
    ("SELECT 1; SELECT 2", "2 statements found"),
    ("CREATE TABLE gold.x (a INTEGER)", "a CREATE statement is not allowed"),
    ("CREATE TEMP TABLE x AS SELECT 1", "a CREATE statement is not allowed"),
    ("INSERT INTO gold.orders VALUES (99, 1, 1)", "a INSERT statement is not allowed"),
    ("WITH n AS (SELECT 99, 1, 1) INSERT INTO gold.orders SELECT * FROM n", "a INSERT statement"),
    ("UPDATE gold.orders SET amount = 0", "a UPDATE statement is not allowed"),
    ("DELETE FROM gold.orders", "a DELETE statement is not allowed"),
    ("DROP TABLE gold.orders", "a DROP statement is not allowed"),
    ("ALTER TABLE gold.orders ADD COLUMN x INTEGER", "a ALTER statement is not allowed"),
    ("BEGIN TRANSACTION", "a TRANSACTION statement is not allowed"),
    ("CHECKPOINT", "a CALL statement is not allowed"),
]


@pytest.mark.parametrize(("sql", "says"), REFUSED, ids=[r[0][:40] for r in REFUSED])
def test_anything_but_one_read_query_is_refused_and_writes_nothing(
    sql: str, says: str, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = files_under(tmp_path)
    assert main(["query", sql.format(tmp=tmp_path)]) == 2
    captured = capsys.readouterr()
    assert says in captured.err
    assert CANARY not in captured.out + captured.err
    assert files_under(tmp_path) == before  # no file written, none touched (the warehouse included)
    for name in ("out.csv", "out.parquet", "other.duckdb", "export"):
        assert not (tmp_path / name).exists()
    # and the warehouse still holds exactly what it held
    con = duckdb.connect(str(data / "warehouse.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT * FROM gold.orders ORDER BY id").fetchall() == ORDERS
        assert con.execute("SELECT count(*) FROM duckdb_tables()").fetchall() == [(2,)]
    finally:
        con.close()


def test_the_connection_alone_refuses_files_and_unlocking(data: Path, tmp_path: Path) -> None:
    """The second fence without the first: statements that bypass ``check_read_query`` still cannot reach a
    file, attach a database, load an extension or unlock the configuration."""
    con = open_sandbox(Settings(data_dir=data))
    try:
        for sql in (
            f"COPY (SELECT 1) TO '{tmp_path}/out.csv'",
            f"ATTACH '{tmp_path}/other.duckdb'",
            f"EXPORT DATABASE '{tmp_path}/export'",
            f"SELECT * FROM read_csv('{tmp_path}/secret.csv')",
            "LOAD httpfs",
        ):
            with pytest.raises(duckdb.PermissionException):
                con.execute(sql)
        for sql in ("SET enable_external_access = true", "SET lock_configuration = false"):
            with pytest.raises(duckdb.InvalidInputException, match="locked"):
                con.execute(sql)
        assert con.execute("SELECT current_setting('enable_external_access')").fetchall() == [(False,)]
        assert con.execute("SELECT count(*) FROM gold.orders").fetchall() == [(len(ORDERS),)]
    finally:
        con.close()
    assert not any((tmp_path / name).exists() for name in ("out.csv", "other.duckdb", "export"))


def test_statement_check_names_what_it_found() -> None:
    con = duckdb.connect()
    try:
        check_read_query(con, "-- a comment\nSELECT 1;")
        with pytest.raises(QueryRefused, match="no statement found"):
            check_read_query(con, "-- only a comment")
        with pytest.raises(QueryRefused, match="an? unnamed statement is not allowed; only one read query"):
            check_read_query(con, "UPDATE EXTENSIONS")
    finally:
        con.close()
