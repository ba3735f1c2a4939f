"""The simulated workload: counts, determinism, snapshot, WAL positions, TOAST, integrity and final state."""

from __future__ import annotations

import inspect
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdcwh.generate import ShopGenerator, SourceChange, encode, replay_state

PLACEHOLDER = "__debezium_unavailable_value"
TABLE_ORDER = ["customers", "products", "orders", "order_items", "payments"]
COLUMNS = {
    "customers": ["id", "email", "first_name", "last_name", "segment", "country", "created_at"],
    "products": ["id", "sku", "name", "category", "price", "active", "description"],
    "orders": ["id", "customer_id", "status", "order_date", "created_at"],
    "order_items": ["id", "order_id", "product_id", "quantity", "unit_price"],
    "payments": ["id", "order_id", "method", "amount", "created_at"],
}
TRANSITIONS = {
    ("placed", "shipped"),
    ("placed", "cancelled"),
    ("shipped", "completed"),
    ("completed", "returned"),
}


@cache
def run(seed: int, events: int) -> tuple[tuple[SourceChange, ...], dict[str, Any]]:
    generator = ShopGenerator(seed)
    changes = tuple(generator.changes(events))
    return changes, generator.expected_state()


def streaming(changes: tuple[SourceChange, ...]) -> list[SourceChange]:
    return [c for c in changes if c.snapshot == "false"]


@pytest.mark.parametrize("events", [0, 1, 2, 3, 4, 7, 12, 13, 100, 2500])
def test_exactly_the_requested_number_of_events(events: int) -> None:
    changes, _ = run(5, events)
    assert len(changes) == events
    assert all(c.op in {"r", "c", "u", "d"} for c in changes)


def test_changes_is_a_lazy_generator_and_restarts_from_the_seed() -> None:
    generator = ShopGenerator(3)
    assert inspect.isgenerator(generator.changes(10))
    assert list(generator.changes(300)) == list(generator.changes(300))


def test_same_seed_same_bytes_different_seed_differs() -> None:
    def encoded(seed: int) -> list[tuple[str, bytes, bytes | None]]:
        return [(r.topic, r.key, r.value) for c in ShopGenerator(seed).changes(800) for r in encode(c)]

    assert encoded(11) == encoded(11)
    assert encoded(11) != encoded(12)


def test_snapshot_first_table_by_table_then_streaming() -> None:
    changes, _ = run(1, 5000)
    ops = [c.op for c in changes]
    size = next(i for i, op in enumerate(ops) if op != "r")
    assert 400 <= size <= 600, "about 10% of the events"
    assert set(ops[:size]) == {"r"} and "r" not in ops[size:]
    markers = [c.snapshot for c in changes[:size]]
    assert markers[-1] == "last" and set(markers[:-1]) == {"true"}
    assert {c.snapshot for c in changes[size:]} == {"false"}
    tables = [TABLE_ORDER.index(c.table) for c in changes[:size]]
    assert tables == sorted(tables) and set(tables) == set(range(5)), "every table, one after another"
    assert all(c.last_commit_lsn is None for c in changes[:size])


@pytest.mark.parametrize("events", [1, 5, 12])
def test_tiny_runs_are_all_snapshot_and_end_with_last(events: int) -> None:
    changes, _ = run(2, events)
    assert [c.op for c in changes] == ["r"] * events
    assert changes[-1].snapshot == "last"


def test_lsn_strictly_increases_and_transactions_are_contiguous() -> None:
    changes, _ = run(4, 5000)
    lsns = [c.lsn for c in changes]
    assert all(a < b for a, b in zip(lsns, lsns[1:], strict=False))
    tx_ids = [c.tx_id for c in changes]
    assert tx_ids == sorted(tx_ids)
    ts = [c.ts_ms for c in changes]
    assert ts == sorted(ts)
    groups: dict[int, list[SourceChange]] = {}
    for c in streaming(changes):
        groups.setdefault(c.tx_id, []).append(c)
    for tx in groups.values():
        assert len({c.ts_ms for c in tx}) == 1, "one commit time per transaction"
        assert len({c.last_commit_lsn for c in tx}) == 1
        assert tx[0].last_commit_lsn is not None and tx[0].last_commit_lsn < tx[0].lsn
    assert max(len(tx) for tx in groups.values()) >= 3, "multi-row transactions exist"


def test_new_orders_arrive_with_items_and_payments_in_one_transaction() -> None:
    changes, _ = run(4, 3000)
    groups: dict[int, list[SourceChange]] = {}
    for c in streaming(changes):
        groups.setdefault(c.tx_id, []).append(c)
    new_orders = [tx for tx in groups.values() if tx[0].table == "orders" and tx[0].op == "c"]
    assert new_orders
    for tx in new_orders:
        order = tx[0].after
        assert order is not None and order["status"] == "placed"
        items = [c.after for c in tx if c.table == "order_items"]
        payments = [c.after for c in tx if c.table == "payments"]
        assert [c.table for c in tx] == ["orders"] + ["order_items"] * len(items) + ["payments"] * len(
            payments
        )
        assert items and payments and all(c.op == "c" for c in tx)
        total = sum(i["quantity"] * i["unit_price"] for i in items if i)
        assert sum(p["amount"] for p in payments if p) == total
        assert all(i["order_id"] == order["id"] for i in items if i)


def test_before_and_after_images_follow_replica_identity_default() -> None:
    changes, _ = run(6, 4000)
    for c in changes:
        assert list(c.key) == ["id"]
        if c.op == "d":
            assert c.after is None and c.before is not None
            assert list(c.before) == COLUMNS[c.table]
            assert c.before["id"] == c.key["id"]
            assert all(v is None for k, v in c.before.items() if k != "id")
        else:
            assert c.before is None and c.after is not None
            assert list(c.after) == COLUMNS[c.table]
            assert c.after["id"] == c.key["id"]


def test_value_types() -> None:
    changes, _ = run(6, 3000)
    for c in changes:
        row = c.after
        if row is None:
            continue
        if c.table in ("customers", "payments"):
            assert isinstance(row["created_at"], datetime) and row["created_at"].utcoffset() == timedelta(0)
        if c.table == "orders":
            assert isinstance(row["created_at"], datetime) and row["created_at"].tzinfo is None
            assert type(row["order_date"]) is date and row["order_date"] == row["created_at"].date()
            assert row["status"] in {"placed", "shipped", "completed", "returned", "cancelled"}
        if c.table == "customers":
            assert row["segment"] in {"consumer", "corporate", "home_office"}
        if c.table == "payments":
            assert row["method"] in {"credit_card", "coupon", "bank_transfer", "gift_card"}
        for column in ("price", "unit_price", "amount"):
            if column in row:
                assert isinstance(row[column], Decimal) and row[column].as_tuple().exponent == -2
                assert Decimal("0") < row[column] < Decimal("100000000")


def test_toast_placeholder_only_on_product_updates_with_unchanged_description() -> None:
    changes, _ = run(8, 6000)
    kinds = Counter()
    description: dict[int, str] = {}
    for c in changes:
        if c.after is None:
            continue
        placeholders = {k for k, v in c.after.items() if v == PLACEHOLDER}
        assert placeholders == set(c.toasted)
        if c.table == "products":
            if c.toasted:
                assert c.op == "u" and c.toasted == {"description"}
                kinds["toasted"] += 1
            else:
                assert len(c.after["description"]) > 2000, "sent in full, several KB"
                if c.op == "u":
                    assert c.after["description"] != description[c.key["id"]], "sent only when it changed"
                    kinds["full update"] += 1
                description[c.key["id"]] = c.after["description"]
        else:
            assert not c.toasted
    assert kinds["toasted"] > 0 and kinds["full update"] > 0


def test_customer_updates_change_segment_email_or_country() -> None:
    changes, _ = run(9, 4000)
    current: dict[int, dict[str, Any]] = {}
    changed = Counter()
    for c in changes:
        if c.table != "customers" or c.after is None:
            continue
        if c.op == "u":
            diff = {k for k in c.after if c.after[k] != current[c.key["id"]][k]}
            assert diff and diff <= {"segment", "email", "country"}
            changed.update(diff)
        current[c.key["id"]] = c.after
    assert set(changed) == {"segment", "email", "country"}


def test_order_status_transitions_are_valid() -> None:
    changes, _ = run(10, 6000)
    status: dict[int, str] = {}
    seen = set()
    for c in changes:
        if c.table != "orders" or c.after is None:
            continue
        if c.op == "u":
            seen.add((status[c.key["id"]], c.after["status"]))
        status[c.key["id"]] = c.after["status"]
    assert seen <= TRANSITIONS
    assert {("placed", "shipped"), ("shipped", "completed")} <= seen


def test_referential_integrity_at_every_event() -> None:
    changes, _ = run(12, 6000)
    rows: dict[str, dict[int, dict[str, Any]]] = {t: {} for t in TABLE_ORDER}
    deletes = Counter()
    for c in changes:
        table = rows[c.table]
        if c.op == "d":
            deletes[c.table] += 1
            row_id = c.key["id"]
            assert row_id in table
            if c.table == "orders":
                assert not any(i["order_id"] == row_id for i in rows["order_items"].values())
                assert not any(p["order_id"] == row_id for p in rows["payments"].values())
            if c.table == "customers":
                assert not any(o["customer_id"] == row_id for o in rows["orders"].values())
            del table[row_id]
            continue
        assert c.after is not None
        if c.table == "orders":
            assert c.after["customer_id"] in rows["customers"]
        if c.table == "order_items":
            assert c.after["order_id"] in rows["orders"] and c.after["product_id"] in rows["products"]
        if c.table == "payments":
            assert c.after["order_id"] in rows["orders"]
        table[c.key["id"]] = c.after
    assert set(deletes) == {"customers", "orders", "order_items", "payments"}


def test_twenty_thousand_events_span_about_a_week() -> None:
    changes, _ = run(1, 20_000)
    days = {c.after["order_date"] for c in changes if c.table == "orders" and c.op == "c" and c.after}
    assert 5 <= (max(days) - min(days)).days <= 9
    first, last = changes[0].ts_ms, changes[-1].ts_ms
    assert first >= int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
    assert timedelta(days=5) <= timedelta(milliseconds=last - first) <= timedelta(days=9)


def test_start_moves_the_clock() -> None:
    start = datetime(2025, 3, 1, tzinfo=UTC)
    changes = list(ShopGenerator(1, start=start).changes(50))
    assert changes[0].ts_ms >= int(start.timestamp() * 1000)
    with pytest.raises(ValueError):
        ShopGenerator(1, start=start.replace(tzinfo=None))


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 42, 2**40])
def test_replay_equals_expected_state(seed: int) -> None:
    changes, expected = run(seed, 3000)
    assert replay_state(changes) == expected
    assert set(expected) == set(TABLE_ORDER)
    for table, rows in expected.items():
        for key, row in rows.items():
            assert key == (row["id"],)
            assert list(row) == COLUMNS[table]
            assert PLACEHOLDER not in row.values()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32), events=st.integers(min_value=0, max_value=400))
def test_replay_equals_expected_state_for_any_seed(seed: int, events: int) -> None:
    generator = ShopGenerator(seed)
    assert replay_state(generator.changes(events)) == generator.expected_state()


def test_expected_state_is_a_copy() -> None:
    generator = ShopGenerator(1)
    list(generator.changes(100))
    state = generator.expected_state()
    state["customers"].clear()
    assert generator.state["customers"]
    assert ShopGenerator(1).expected_state() == {t: {} for t in TABLE_ORDER}


def test_replay_keeps_the_previous_value_of_toasted_columns() -> None:
    base: dict[str, Any] = {"toasted": frozenset(), "lsn": 1, "tx_id": 1, "ts_ms": 0, "snapshot": "false"}
    row = {"id": 1, "sku": "S", "name": "n", "category": "c", "price": Decimal("1.00"), "active": True}
    insert = SourceChange("products", "c", {"id": 1}, None, {**row, "description": "long"}, **base)
    update = SourceChange(
        "products", "u", {"id": 1}, None, {**row, "price": Decimal("2.00"), "description": PLACEHOLDER},
        **{**base, "toasted": frozenset({"description"}), "lsn": 2},
    )  # fmt: skip
    state = replay_state([insert, update])
    assert state["products"][(1,)]["description"] == "long"
    assert state["products"][(1,)]["price"] == Decimal("2.00")
    delete = SourceChange(
        "products", "d", {"id": 1}, dict.fromkeys(row) | {"id": 1}, None, **{**base, "lsn": 3}
    )
    assert replay_state([insert, update, delete])["products"] == {}
    with pytest.raises(ValueError, match="no prior row"):
        replay_state([update])
