"""The shop workload as real SQL transactions against a source PostgreSQL (``cdcwh generate --into-source``).

The same model as the Debezium simulator: ``ShopGenerator``'s ``SourceChange`` stream is turned into
statements, one database transaction per simulated transaction (its changes share a ``tx_id``):

- the snapshot rows are the seed data, inserted in transactions of ``SEED_CHUNK`` rows;
- then orders placed with their items and payments in one multi-table transaction, orders moving through
  their statuses, payments and whole orders deleted, customers added, changed and deleted, product prices
  changed. A product update sets only the columns that are not TOASTed in the change, so an unchanged
  description stays where PostgreSQL stored it and the connector sends Debezium's TOAST placeholder. The
  description (a few kB) is made to live out of line: ``products.description`` gets ``STORAGE EXTERNAL``
  (no compression, so anything above ~2 kB is TOASTed), once;
- half-way, one **primary-key change**: an order gets a new id, its items and payments follow, in one
  transaction (Debezium sends a delete of the old key and a create of the new one);
- at 60 %, ``ALTER TABLE customers ADD COLUMN IF NOT EXISTS loyalty_tier text`` (idempotent); customers
  created or changed afterwards carry a tier.

Ids never collide with rows already in the source: every table's generated ids are offset by its
``max(id)`` at the start (``sql/source/shop.sql`` inserts ids 1..4), and the re-keyed order takes an id above
every id the run can generate.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from cdcwh.errors import ConfigError
from cdcwh.generate.change import SourceChange
from cdcwh.generate.workload import ShopGenerator

SEED_CHUNK = 500
# generated foreign keys: table -> column -> referenced table
FOREIGN_KEYS = {
    "orders": {"customer_id": "customers"},
    "order_items": {"order_id": "orders", "product_id": "products"},
    "payments": {"order_id": "orders"},
}
TABLES = ("customers", "products", "orders", "order_items", "payments")
NEW_COLUMN = "loyalty_tier"
TIERS = (None, "bronze", "silver", "gold")
PK_CHANGE_AT = 0.5
ADD_COLUMN_AT = 0.6
SHOP_SQL = Path(__file__).resolve().parents[3] / "sql" / "source" / "shop.sql"


@dataclass
class SqlWorkloadResult:
    events: int = 0
    """Generator change events applied (the primary-key change and the DDL come on top)."""
    transactions: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    """``<table>:<op>`` -> changes applied (``r`` the seed rows)."""
    id_offsets: dict[str, int] = field(default_factory=dict)
    """What was added to each table's generated ids (its ``max(id)`` at the start)."""
    rekeyed_order: tuple[int, int] | None = None
    """(old id, new id) of the order whose primary key changed."""
    added_column: bool = False
    """``customers.loyalty_tier`` exists after the run (created now or before)."""


class _Ids:
    """Generated ids -> ids in the database: offset per table, plus the re-keyed rows."""

    def __init__(self, offsets: dict[str, int]) -> None:
        self.offsets = offsets
        self.moved: dict[tuple[str, int], int] = {}

    def __call__(self, table: str, generated: int) -> int:
        return self.moved.get((table, generated), self.offsets[table] + generated)

    def row(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        out = dict(row)
        if "id" in out and out["id"] is not None:
            out["id"] = self(table, out["id"])
        for column, target in FOREIGN_KEYS.get(table, {}).items():
            if out.get(column) is not None:
                out[column] = self(target, out[column])
        return out


def apply_workload(
    dsn: str,
    *,
    events: int,
    seed: int = 1,
    rate: float | None = None,
    schema: str = "public",
    on_progress: Callable[[int], None] | None = None,
) -> SqlWorkloadResult:
    """Run ``events`` generator changes as SQL transactions against the source at ``dsn``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return _SqlDriver(conn, schema, seed, rate, on_progress).run(events)


class _SqlDriver:
    def __init__(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        schema: str,
        seed: int,
        rate: float | None,
        on_progress: Callable[[int], None] | None,
    ) -> None:
        self.conn = conn
        self.schema = schema
        self.seed = seed
        self.rate = rate
        self.on_progress = on_progress
        self.rng = random.Random(seed ^ 0x5EED)
        self.result = SqlWorkloadResult()
        self.live_orders: dict[int, None] = {}  # generated ids, insertion order (deterministic choice)

    def table(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))

    # -- setup

    def prepare(self) -> None:
        with self.conn.transaction():
            self._prepare()

    def _prepare(self) -> None:
        exists = self.conn.execute("SELECT to_regclass(%s)", (f"{self.schema}.customers",)).fetchone()
        if not exists or exists[0] is None:
            if self.schema != "public":
                raise ConfigError(f"no shop tables in schema {self.schema}: load sql/source/shop.sql there")
            self.conn.execute(SHOP_SQL.read_text())
        storage = self.conn.execute(
            "SELECT attstorage FROM pg_attribute "
            "WHERE attrelid = to_regclass(%s) AND attname = 'description'",
            (f"{self.schema}.products",),
        ).fetchone()
        if storage is not None and storage[0] != "e":
            # out of line and uncompressed: every description above ~2 kB is TOASTed
            self.conn.execute(
                sql.SQL("ALTER TABLE {} ALTER COLUMN description SET STORAGE EXTERNAL").format(
                    self.table("products")
                )
            )
        offsets: dict[str, int] = {}
        for name in TABLES:
            row = self.conn.execute(
                sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(self.table(name))
            ).fetchone()
            offsets[name] = int(row[0]) if row else 0
        self.ids = _Ids(offsets)
        self.result.id_offsets = dict(offsets)
        self.has_tier = self._has_tier()

    def _has_tier(self) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM pg_attribute "
            "WHERE attrelid = to_regclass(%s) AND attname = %s AND NOT attisdropped",
            (f"{self.schema}.customers", NEW_COLUMN),
        ).fetchone()
        return row is not None

    # -- the run

    def run(self, events: int) -> SqlWorkloadResult:
        self.prepare()
        generator = ShopGenerator(self.seed)
        started = time.monotonic()
        applied = 0
        pk_done = add_done = False
        for group in _transactions(generator.changes(events)):
            with self.conn.transaction():
                for change in group:
                    self.apply(change)
            applied += len(group)
            self.result.transactions += 1
            self.result.events = applied
            if not pk_done and applied >= events * PK_CHANGE_AT and group[0].snapshot == "false":
                pk_done = True
                self.change_order_key(events)
            if not add_done and applied >= events * ADD_COLUMN_AT and group[0].snapshot == "false":
                add_done = True
                self.add_column()
            if self.on_progress is not None:
                self.on_progress(applied)
            if self.rate:
                delay = started + applied / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        self.result.added_column = self._has_tier()
        return self.result

    def count(self, change: SourceChange) -> None:
        key = f"{change.table}:{change.op}"
        self.result.counts[key] = self.result.counts.get(key, 0) + 1

    def apply(self, change: SourceChange) -> None:
        self.count(change)
        table = change.table
        generated = int(change.key["id"])
        if change.op == "d":
            self.conn.execute(
                sql.SQL("DELETE FROM {} WHERE id = %s").format(self.table(table)),
                (self.ids(table, generated),),
            )
            if table == "orders":
                self.live_orders.pop(generated, None)
            return
        if change.after is None:
            raise ValueError(f"{table} {change.op} change without an after image")
        row = self.ids.row(table, change.after)
        if table == "customers" and self.has_tier and (change.op != "u" or self.rng.random() < 0.3):
            row[NEW_COLUMN] = self.rng.choice(TIERS)
        if change.op in ("r", "c"):
            columns = list(row)
            self.conn.execute(
                sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                    self.table(table),
                    sql.SQL(", ").join(map(sql.Identifier, columns)),
                    sql.SQL(", ").join(sql.Placeholder() * len(columns)),
                ),
                [row[c] for c in columns],
            )
            if table == "orders":
                self.live_orders[generated] = None
            return
        # an update writes the columns the change carries; a TOASTed one is left alone, so PostgreSQL keeps
        # its stored value and the connector sends the placeholder
        columns = [c for c in row if c != "id" and c not in change.toasted]
        self.conn.execute(
            sql.SQL("UPDATE {} SET {} WHERE id = %s").format(
                self.table(table),
                sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in columns),
            ),
            [*(row[c] for c in columns), row["id"]],
        )

    # -- the two extra events

    def change_order_key(self, events: int) -> None:
        """Move one order (with its items and payments) to a new id, in one transaction."""
        if not self.live_orders:
            return
        generated = self.rng.choice(list(self.live_orders))
        old = self.ids("orders", generated)
        new = self.ids.offsets["orders"] + events + 1  # above every id this run can generate
        with self.conn.transaction():
            self.conn.execute(
                sql.SQL("UPDATE {} SET id = %s WHERE id = %s").format(self.table("orders")), (new, old)
            )
            for child in ("order_items", "payments"):
                self.conn.execute(
                    sql.SQL("UPDATE {} SET order_id = %s WHERE order_id = %s").format(self.table(child)),
                    (new, old),
                )
        self.ids.moved[("orders", generated)] = new
        self.result.rekeyed_order = (old, new)
        self.result.transactions += 1

    def add_column(self) -> None:
        self.conn.execute(
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} text").format(
                self.table("customers"), sql.Identifier(NEW_COLUMN)
            )
        )
        self.has_tier = True
        self.result.transactions += 1


def _transactions(changes: Iterable[SourceChange]) -> Iterator[list[SourceChange]]:
    """Consecutive changes of one simulated transaction; the snapshot in chunks of ``SEED_CHUNK`` rows."""
    group: list[SourceChange] = []
    for change in changes:
        if group and (
            change.tx_id != group[0].tx_id
            or (change.snapshot == "false") != (group[0].snapshot == "false")
            or (change.snapshot != "false" and len(group) >= SEED_CHUNK)
        ):
            yield group
            group = []
        group.append(change)
    if group:
        yield group
