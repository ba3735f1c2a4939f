"""Reading the marts from PostgreSQL and from gold, and comparing them row by row (the e2e tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, LiteralString

import duckdb
import psycopg
from confluent_kafka import Message
from psycopg import sql
from psycopg.rows import dict_row

from cdcwh.config import Settings
from tests.support.kafka_readback import read_to_end
from tests.support.warehouse import MARTS

Marts = dict[str, list[dict[str, Any]]]


def customer_change(customer_id: int) -> tuple[bytes, str]:
    """The key and value of a gold change message upserting a ``customers`` mart row (version 1)."""
    row = {
        "customer_id": customer_id,
        "first_name": "Ada",
        "last_name": "L",
        "email": "ada@example.com",
        "segment": "retail",
        "first_order_date": None,
        "most_recent_order_date": None,
        "number_of_orders": 0,
        "lifetime_value": "0.00",
    }
    change = {"mart": "customers", "op": "upsert", "version": 1, "source_ts_ms": None}
    key = {"customer_id": customer_id}
    return json.dumps(key).encode(), json.dumps({**change, "key": key, "row": row})


def read_postgres_marts(dsn: str, schema: str) -> dict[str, list[dict[str, Any]]]:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        return {
            mart: [dict(row) for row in conn.execute(f'SELECT * FROM "{schema}"."{mart}"').fetchall()]
            for mart in MARTS
        }


def pg_mart_value(dsn: str, schema: str, mart: str, expression: LiteralString) -> Any:
    """``SELECT <expression> FROM <schema>.<mart>`` (one row, one column): a count or a sum of a mart."""
    query = sql.SQL("SELECT {} FROM {}").format(sql.SQL(expression), sql.Identifier(schema, mart))
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def pg_marts(dsn: str, schema: str) -> Marts:
    """Every mart in Postgres, all columns but ``_updated_at``, ordered by primary key."""
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        marts = {}
        for mart in MARTS:
            query = sql.SQL("SELECT * FROM {} ORDER BY 1, 2").format(sql.Identifier(schema, mart))
            marts[mart] = [
                {k: v for k, v in row.items() if k != "_updated_at"} for row in conn.execute(query)
            ]
        return marts


def gold_marts(settings: Settings) -> Marts:
    """Every gold mart in DuckDB, shaped like ``pg_marts``."""
    con = duckdb.connect(str(Path(settings.data_dir) / "warehouse.duckdb"), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return {
            mart: con.sql(f"SELECT * EXCLUDE (_updated_at) FROM gold.{mart} ORDER BY 1, 2")
            .to_arrow_table()
            .to_pylist()
            for mart in MARTS
        }
    finally:
        con.close()


def differences(actual: Marts, expected: Marts, limit: int = 5) -> list[str]:
    """Rows one side has and the other lacks, per mart (every column compared, types included)."""

    def rows(marts: Marts, mart: str) -> set[tuple[Any, ...]]:
        return {tuple((k, type(v).__name__, v) for k, v in row.items()) for row in marts[mart]}

    diffs = []
    for mart in MARTS:
        got, want = rows(actual, mart), rows(expected, mart)
        if len(actual[mart]) != len(got):
            diffs.append(f"{mart}: duplicate rows in actual")
        for label, extra in (("missing", want - got), ("unexpected", got - want)):
            for row in sorted(extra, key=repr)[:limit]:
                diffs.append(f"{mart}: {label} { {k: v for k, _, v in row} }")
    return diffs


def read_topics(bootstrap: str, topics: list[str]) -> list[Message]:
    """Every message of the topics, each partition read to its end."""
    return read_to_end(bootstrap, topics=topics)
