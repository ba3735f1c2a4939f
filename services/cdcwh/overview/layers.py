"""Rows per layer (bronze, silver, gold in DuckDB, the PostgreSQL marts): the demo's summary as typed values.

Every identifier that comes from the catalog or the warehouse is quoted (``quote`` for DuckDB,
``psycopg.sql.Identifier`` for PostgreSQL).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cdcwh.config import Settings


@dataclass(frozen=True)
class BronzeRows:
    """A bronze table and the silver table its topic feeds (None when the transform has not registered it)."""

    table: str
    topic: str | None
    bronze: int
    silver_table: str | None
    silver: int | None


@dataclass(frozen=True)
class MartRows:
    mart: str
    gold: int
    postgres: int | None
    """None when PostgreSQL has no such table."""

    @property
    def matches(self) -> bool:
        return self.gold == self.postgres


@dataclass
class Layers:
    bronze: list[BronzeRows] = field(default_factory=list)
    marts: list[MartRows] = field(default_factory=list)
    sample: list[dict[str, Any]] = field(default_factory=list)
    """The first days of marts.daily_revenue in PostgreSQL (empty when that mart is not there)."""

    @property
    def mismatched(self) -> list[str]:
        return [m.mart for m in self.marts if not m.matches]


def collect_layers(settings: Settings, sample_rows: int = 5) -> Layers:
    """Count every layer's rows. Needs the catalog, the warehouse file and PostgreSQL."""
    import psycopg
    from psycopg import sql
    from psycopg.rows import dict_row

    from cdcwh.bronze.catalog import TOPIC_PROPERTY, open_catalog
    from cdcwh.embedded import postgres_dsn
    from cdcwh.warehouse import count, open_warehouse, quote

    catalog = open_catalog(settings)
    schema = settings.postgres.schema_
    layers = Layers()
    con = open_warehouse(settings, read_only=True)
    try:
        # each topic's silver table, as the transform named it
        registered = {
            str(t): str(n) for t, n in con.execute("SELECT topic, name FROM cdcwh.silver_tables").fetchall()
        }
        for identifier in sorted(catalog.list_tables(settings.iceberg.namespace)):
            table = catalog.load_table(identifier)
            topic = table.properties.get(TOPIC_PROPERTY)
            silver = registered.get(topic) if topic is not None else None
            layers.bronze.append(
                BronzeRows(
                    table=str(identifier[-1]),
                    topic=topic,
                    bronze=int(table.scan().count()),
                    silver_table=silver,
                    silver=None
                    if silver is None
                    else count(con, f"SELECT count(*) FROM silver.{quote(silver)}"),  # noqa: S608 - quoted
                )
            )
        marts = [
            str(m)
            for (m,) in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'gold' ORDER BY 1"
            ).fetchall()
        ]
        gold = {
            mart: count(con, f"SELECT count(*) FROM gold.{quote(mart)}")  # noqa: S608 - quoted
            for mart in marts
        }
    finally:
        con.close()
    with psycopg.connect(postgres_dsn(settings, "reader"), row_factory=dict_row) as pg:
        present = {
            str(row["table_name"])
            for row in pg.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
            ).fetchall()
        }
        for mart in marts:
            rows = None
            if mart in present:
                query = sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier(schema, mart))
                rows = int(pg.execute(query).fetchall()[0]["n"])
            layers.marts.append(MartRows(mart, gold[mart], rows))
        if "daily_revenue" in present:
            layers.sample = pg.execute(
                sql.SQL(
                    "SELECT order_date, orders, items_sold, revenue FROM {} ORDER BY order_date LIMIT %s"
                ).format(sql.Identifier(schema, "daily_revenue")),
                (sample_rows,),
            ).fetchall()
    return layers
