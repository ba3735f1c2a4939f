"""``ShopGenerator``: a deterministic shop workload as Debezium sees it (snapshot, then a streaming mix).

Phase 1 reads an initial snapshot (``op r``), one table after another: customers, products, orders,
order_items, payments; about 10% of the requested events. Phase 2 streams transactions drawn from a weighted
mix of actions (``streaming.ACTIONS``). Every action knows how many row changes it writes and only runs when
they fit in the remaining budget, so ``changes(n)`` yields exactly ``n`` change events.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime

from cdcwh.generate.change import SHOP_TABLES, Row, SourceChange, State
from cdcwh.generate.model import FIRST_LSN, ShopModel
from cdcwh.generate.pace import Pace
from cdcwh.generate.rows import DAY_US, SECOND_US, customer_row, order_rows, product_row
from cdcwh.generate.streaming import transaction

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
SNAPSHOT_STATUSES = ("placed", "shipped", "completed", "cancelled", "returned")
SNAPSHOT_STATUS_WEIGHTS = (2, 2, 5, 1, 1)


def snapshot_size(events: int) -> int:
    """Rows in the initial snapshot: ~10% of the events, at least 12, never more than ``events``."""
    return min(events, max(12, events // 10))


class ShopGenerator:
    """Deterministic Debezium-style change events for the shop tables.

    The same ``seed`` and ``events`` always give the same sequence. Each ``changes()`` call starts again
    from the seed; afterwards ``expected_state()`` is the true final state of the simulated database.
    ``pace`` sets the streaming rate per simulated minute and its drops (``pace.py``); unset, ~1.8 events a
    minute.
    """

    def __init__(
        self,
        seed: int,
        *,
        start: datetime = DEFAULT_START,
        first_lsn: int = FIRST_LSN,
        pace: Pace | None = None,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.seed = seed
        self.start = start
        self.first_lsn = first_lsn
        self.pace = pace
        self._model: ShopModel | None = None

    def changes(self, events: int) -> Iterator[SourceChange]:
        """Exactly ``events`` change events (r/c/u/d); tombstones are added by ``encode``, not counted."""
        if events < 0:
            raise ValueError("events must be >= 0")
        model = ShopModel(random.Random(self.seed), self.start, self.first_lsn, self.pace)
        self._model = model
        size = snapshot_size(events)
        yield from _snapshot(model, size)
        remaining = events - size
        while remaining > 0:
            batch = transaction(model, remaining)
            remaining -= len(batch)
            yield from batch

    def expected_state(self) -> State:
        """Table -> primary-key tuple -> full row, after the events generated so far."""
        if self._model is None:
            return {name: {} for name in SHOP_TABLES}
        return self._model.expected_state()

    @property
    def state(self) -> State:
        return self.expected_state()


def _snapshot(model: ShopModel, size: int) -> Iterator[SourceChange]:
    if size == 0:
        return
    rng = model.rng
    n_customers = max(1, size * 3 // 10)
    n_products = min(size - n_customers, max(1, size // 5))
    rest = size - n_customers - n_products
    plan: list[tuple[int, int]] = []  # (items, payments) per order
    while rest >= 2:
        planned_items = min(rng.randint(1, 3), rest - 1)
        planned_payments = 1 if rest - 1 - planned_items >= 1 else 0
        plan.append((planned_items, planned_payments))
        rest -= 1 + planned_items + planned_payments
    n_customers += rest
    start_us = model.clock_us
    rows: dict[str, list[Row]] = {name: [] for name in SHOP_TABLES}
    rows["customers"] = [
        customer_row(model, start_us - rng.randrange(DAY_US, 365 * DAY_US)) for _ in range(n_customers)
    ]
    rows["products"] = [product_row(model) for _ in range(n_products)]
    times = sorted(start_us - rng.randrange(60 * SECOND_US, 3 * DAY_US) for _ in plan)
    for (n_items, n_pay), created_us in zip(plan, times, strict=True):
        status = rng.choices(SNAPSHOT_STATUSES, SNAPSHOT_STATUS_WEIGHTS)[0]
        customer = rng.choice(rows["customers"])["id"]
        order, items, payments = order_rows(
            model, customer, rows["products"], status, created_us, n_items, n_pay
        )
        rows["orders"].append(order)
        rows["order_items"].extend(items)
        rows["payments"].extend(payments)
    model.begin_snapshot()
    emitted = 0
    for table, table_rows in rows.items():
        for row in table_rows:
            emitted += 1
            if emitted == size:
                model.snapshot = "last"
            yield model.read(table, row)
    model.end_snapshot()
