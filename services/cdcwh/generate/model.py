"""The simulated shop database: its rows, the indexes the workload picks from, and the WAL bookkeeping.

``ShopModel`` owns the true state (``State``: table -> primary-key tuple -> full row) and turns every write
into a ``SourceChange`` stamped with a strictly increasing LSN, the current transaction id and the simulated
commit time. It never decides *what* to write; ``workload`` does.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from cdcwh.generate.change import SHOP_TABLES, TOAST_PLACEHOLDER, Op, Row, SourceChange, State
from cdcwh.generate.pace import Pace

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIRST_LSN = 24_023_128  # a plausible WAL position for a young database
FIRST_TX_ID = 555


def utc_from_micros(micros: int) -> datetime:
    """Aware UTC datetime (timestamptz) from microseconds since the epoch."""
    return EPOCH + timedelta(microseconds=micros)


def naive_from_micros(micros: int) -> datetime:
    """Naive wall-clock datetime (timestamp without time zone) from microseconds since the epoch."""
    return utc_from_micros(micros).replace(tzinfo=None)


class Pool:
    """An insertion-ordered set of ids with O(1) add, remove and uniform random choice (deterministic)."""

    __slots__ = ("_index", "_items")

    def __init__(self) -> None:
        self._items: list[int] = []
        self._index: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item: object) -> bool:
        return item in self._index

    def __iter__(self) -> Iterator[int]:
        return iter(self._items)

    def add(self, item: int) -> None:
        if item not in self._index:
            self._index[item] = len(self._items)
            self._items.append(item)

    def discard(self, item: int) -> None:
        position = self._index.pop(item, None)
        if position is None:
            return
        last = self._items.pop()
        if position < len(self._items):
            self._items[position] = last
            self._index[last] = position

    def choice(self, rng: random.Random) -> int:
        return self._items[rng.randrange(len(self._items))]


# Order statuses from which the workload moves an order on; cancelled and returned are final.
OPEN_STATUSES = ("placed", "shipped", "completed")


class ShopModel:
    """Rows, indexes, id sequences, the simulated clock and the WAL position of one generator run."""

    def __init__(
        self, rng: random.Random, start: datetime, first_lsn: int = FIRST_LSN, pace: Pace | None = None
    ) -> None:
        self.rng = rng
        self.state: State = {name: {} for name in SHOP_TABLES}
        self.clock_us = int((start - EPOCH) / timedelta(microseconds=1))
        self.start_us = self.clock_us
        self.pace = pace
        self.lsn = first_lsn
        self.tx_id = FIRST_TX_ID
        self.ts_ms = self.clock_us // 1000
        self.snapshot = "false"
        self.last_commit_lsn: int | None = None
        self.next_id = dict.fromkeys(SHOP_TABLES, 1)
        # indexes the workload draws from
        self.customers = Pool()
        self.customers_without_orders = Pool()
        self.order_count: dict[int, int] = {}
        self.products = Pool()
        self.active_products = Pool()
        self.orders = Pool()
        self.orders_by_status = {status: Pool() for status in OPEN_STATUSES}
        self.items_by_order: dict[int, list[int]] = {}
        self.payments_by_order: dict[int, list[int]] = {}
        self.payments = Pool()

    # ---- time, transactions, WAL -------------------------------------------------------------------------

    def new_id(self, table: str) -> int:
        value = self.next_id[table]
        self.next_id[table] = value + 1
        return value

    def begin(self, *, events: int) -> int:
        """Start a streaming transaction of ``events`` row changes; returns its start time (micros).

        The clock advances ~33 s per event on average, so 20,000 events span about a week (with a ``pace``,
        ``60 / rate`` s: ``pace.py``); the commit (``ts_ms`` of every event in the transaction) follows the
        start by a few milliseconds.
        """
        for _ in range(events):
            pace = self.pace
            self.clock_us += (
                self.rng.randrange(0, 66_000_000) if pace is None else pace.gap_us(self.rng, self.elapsed_us)
            )
        started = self.clock_us
        self.clock_us += self.rng.randrange(500, 30_000)
        self.ts_ms = self.clock_us // 1000
        self.tx_id += self.rng.randint(1, 3)
        self.snapshot = "false"
        return started

    @property
    def elapsed_us(self) -> int:
        return self.clock_us - self.start_us

    def commit(self) -> None:
        self.lsn += self.rng.randrange(48, 200, 8)
        self.last_commit_lsn = self.lsn

    def begin_snapshot(self) -> None:
        """All snapshot rows are read in one repeatable-read transaction at the start time."""
        self.tx_id += self.rng.randint(1, 3)
        self.snapshot = "true"
        self.last_commit_lsn = None

    def end_snapshot(self) -> None:
        self.lsn += self.rng.randrange(48, 200, 8)
        self.last_commit_lsn = self.lsn
        self.clock_us += 1_000_000

    def _change(
        self,
        table: str,
        op: Op,
        key: dict[str, Any],
        before: Row | None,
        after: Row | None,
        toasted: frozenset[str] = frozenset(),
    ) -> SourceChange:
        self.lsn += self.rng.randrange(56, 480, 8)
        if self.snapshot != "false":
            self.clock_us += self.rng.randrange(20, 400)
            self.ts_ms = self.clock_us // 1000
        return SourceChange(
            table=table,
            op=op,
            key=key,
            before=before,
            after=after,
            toasted=toasted,
            lsn=self.lsn,
            tx_id=self.tx_id,
            ts_ms=self.ts_ms,
            snapshot=self.snapshot,
            last_commit_lsn=self.last_commit_lsn,
        )

    # ---- writes: each updates the state and returns the change the connector would emit -----------------

    def read(self, table: str, row: Row) -> SourceChange:
        """A snapshot row (op ``r``)."""
        return self._write(table, "r", row)

    def insert(self, table: str, row: Row) -> SourceChange:
        return self._write(table, "c", row)

    def _write(self, table: str, op: Op, row: Row) -> SourceChange:
        key = {"id": row["id"]}
        self.state[table][(row["id"],)] = dict(row)
        self._index_insert(table, row)
        return self._change(table, op, key, None, dict(row))

    def update(
        self, table: str, row_id: int, changes: Row, *, toast: frozenset[str] = frozenset()
    ) -> SourceChange:
        """Update columns of a row; the unchanged columns in ``toast`` are sent as the TOAST placeholder."""
        current = self.state[table][(row_id,)]
        old_status = current.get("status")
        current.update(changes)
        after = dict(current)
        toasted = frozenset(column for column in toast if column not in changes)
        for column in toasted:
            after[column] = TOAST_PLACEHOLDER
        if table == "orders":
            self._reindex_status(row_id, old_status, current["status"])
        elif table == "products":
            (self.active_products.add if current["active"] else self.active_products.discard)(row_id)
        return self._change(table, "u", {"id": row_id}, None, after, toasted)

    def delete(self, table: str, row_id: int) -> SourceChange:
        """Delete a row; ``before`` carries the key and nulls (REPLICA IDENTITY DEFAULT)."""
        row = self.state[table].pop((row_id,))
        self._index_delete(table, row)
        before: Row = dict.fromkeys(SHOP_TABLES[table].column_names)
        before["id"] = row_id
        return self._change(table, "d", {"id": row_id}, before, None)

    # ---- indexes -----------------------------------------------------------------------------------------

    def _index_insert(self, table: str, row: Row) -> None:
        row_id = row["id"]
        if table == "customers":
            self.customers.add(row_id)
            self.customers_without_orders.add(row_id)
            self.order_count[row_id] = 0
        elif table == "products":
            self.products.add(row_id)
            if row["active"]:
                self.active_products.add(row_id)
        elif table == "orders":
            self.orders.add(row_id)
            self._reindex_status(row_id, None, row["status"])
            self.items_by_order[row_id] = []
            self.payments_by_order[row_id] = []
            customer = row["customer_id"]
            self.order_count[customer] += 1
            self.customers_without_orders.discard(customer)
        elif table == "order_items":
            self.items_by_order[row["order_id"]].append(row_id)
        elif table == "payments":
            self.payments_by_order[row["order_id"]].append(row_id)
            self.payments.add(row_id)

    def _index_delete(self, table: str, row: Row) -> None:
        row_id = row["id"]
        if table == "customers":
            if self.order_count.pop(row_id):
                raise AssertionError(f"customer {row_id} still has orders")
            self.customers.discard(row_id)
            self.customers_without_orders.discard(row_id)
        elif table == "orders":
            items, payments = self.items_by_order.pop(row_id), self.payments_by_order.pop(row_id)
            if items or payments:
                raise AssertionError(f"order {row_id} still has items or payments")
            self.orders.discard(row_id)
            self._reindex_status(row_id, row["status"], None)
            customer = row["customer_id"]
            self.order_count[customer] -= 1
            if self.order_count[customer] == 0:
                self.customers_without_orders.add(customer)
        elif table == "order_items":
            self.items_by_order[row["order_id"]].remove(row_id)
        elif table == "payments":
            self.payments_by_order[row["order_id"]].remove(row_id)
            self.payments.discard(row_id)
        elif table == "products":
            self.products.discard(row_id)
            self.active_products.discard(row_id)

    def _reindex_status(self, order_id: int, old: str | None, new: str | None) -> None:
        if old in self.orders_by_status:
            self.orders_by_status[old].discard(order_id)
        if new in self.orders_by_status:
            self.orders_by_status[new].add(order_id)

    def expected_state(self) -> State:
        """A copy of the true final state (real values, never placeholders)."""
        return {table: {key: dict(row) for key, row in rows.items()} for table, rows in self.state.items()}
