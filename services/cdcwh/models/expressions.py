"""DuckDB expressions over a gold model's result that the transform (outbox) and the replay (backfill) both
build: the primary key and the row as JSON, in the shape the gold change messages carry."""

from __future__ import annotations

from sqlglot import exp


def quote(identifier: str) -> str:
    """A DuckDB identifier, quoted (column names come from the models: never interpolate them raw)."""
    return exp.to_identifier(identifier, quoted=True).sql(dialect="duckdb")


def literal(text: str) -> str:
    """A DuckDB string literal."""
    return exp.Literal.string(text).sql(dialect="duckdb")


def key_json_sql(primary_key: tuple[str, ...]) -> str:
    """DuckDB expression: the primary key as a JSON object (the Kafka key of a gold change)."""
    return "to_json({" + ", ".join(f"{literal(k)}: {quote(k)}" for k in primary_key) + "})"


def row_json_sql(columns: list[tuple[str, str]]) -> str:
    """DuckDB expression: the row as a JSON object, decimals as strings (money is never a float between
    Debezium and Postgres). ``columns`` are (name, DuckDB type) pairs, as ``DESCRIBE`` gives them."""
    fields = (
        f"{literal(name)}: {quote(name)}" + ("::VARCHAR" if kind.startswith("DECIMAL") else "")
        for name, kind in columns
    )
    return "to_json({" + ", ".join(fields) + "})"
