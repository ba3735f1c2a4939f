"""An independent, pure-Python computation of the gold marts (DESIGN.md section 7), to check the SQL against.

Written straight from the definitions, without any project SQL (only the column order and the keys are read
from the model files): ``reference_marts`` takes the final state of
the shop tables (``ShopGenerator.expected_state()`` or ``replay_state(changes)``) and the ordered customer
changes (``customer_changes_from(changes)``, for the SCD2 ``dim_customers``) and returns every mart as a list
of rows in the mart's column order. ``compare_marts`` lists the differences between two such results.

Values are the ones a mart holds: money is a ``Decimal`` with 2 places, dates are ``date``, timestamps aware
``datetime``, counts ``int``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from operator import itemgetter
from typing import Any

from cdcwh.config import PROJECT_ROOT
from cdcwh.generate import SourceChange
from cdcwh.models import derive_marts, load_models

Row = dict[str, Any]
State = Mapping[str, Mapping[tuple[Any, ...], Mapping[str, Any]]]

QUALIFYING_STATUSES = frozenset({"placed", "shipped", "completed"})
PAYMENT_METHODS = ("credit_card", "coupon", "bank_transfer", "gift_card")
ZERO = Decimal("0.00")
CENTS = Decimal("0.01")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Each mart's columns (in SELECT order) and its primary key, read from the gold model files themselves: the
# key from the header, the columns from the model's result (``cdcwh.models.derive_marts``), so a new model
# needs no copy here. What the reference computes (below) is written from the definitions in docs/gold.md.
_MODELS = load_models(PROJECT_ROOT / "sql" / "gold")
_DERIVED = derive_marts(_MODELS, PROJECT_ROOT / "schemas" / "contracts")
assert not _DERIVED.failures, _DERIVED.failures
MART_COLUMNS: dict[str, tuple[str, ...]] = {m: t.column_names for m, t in _DERIVED.tables.items()}
MART_KEYS: dict[str, tuple[str, ...]] = {model.name: model.primary_key for model in _MODELS}
IGNORED_COLUMNS = frozenset({"_version", "_updated_at"})


@dataclass(frozen=True, slots=True)
class CustomerChange:
    """One applied change of ``customers``, reduced to what SCD2 needs (the after image; None on a delete)."""

    customer_id: int
    op: str
    email: str | None
    segment: str | None
    country: str | None
    source_ts: datetime


def source_time(ts_ms: int) -> datetime:
    """Debezium's ``source.ts_ms`` (commit time, ms since the epoch) as an aware UTC datetime, exactly."""
    return EPOCH + timedelta(milliseconds=ts_ms)


def customer_changes_from(changes: Iterable[SourceChange]) -> list[CustomerChange]:
    """The ``customers`` changes among ``changes``, in order (customers carry no TOASTed column)."""
    result: list[CustomerChange] = []
    for change in changes:
        if change.table != "customers":
            continue
        after = change.after or {}
        result.append(
            CustomerChange(
                customer_id=change.key["id"],
                op=change.op,
                email=after.get("email"),
                segment=after.get("segment"),
                country=after.get("country"),
                source_ts=source_time(change.ts_ms),
            )
        )
    return result


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENTS)


def _rows(state: State, table: str) -> list[Mapping[str, Any]]:
    return list(state.get(table, {}).values())


def _orders(state: State) -> list[Row]:
    """One row per existing order; payment sums per method and in total, 0 when none."""
    by_method: dict[tuple[Any, str], Decimal] = defaultdict(lambda: ZERO)
    total: dict[Any, Decimal] = defaultdict(lambda: ZERO)
    for payment in _rows(state, "payments"):
        by_method[payment["order_id"], payment["method"]] += payment["amount"]
        total[payment["order_id"]] += payment["amount"]
    result = []
    for order in _rows(state, "orders"):
        row: Row = {
            "order_id": order["id"],
            "customer_id": order["customer_id"],
            "order_date": order["order_date"],
            "status": order["status"],
        }
        for method in PAYMENT_METHODS:
            row[f"{method}_amount"] = _money(by_method[order["id"], method])
        row["amount"] = _money(total[order["id"]])
        result.append(row)
    return result


def _customers(state: State) -> list[Row]:
    """One row per existing customer; orders not cancelled count, payments of orders neither cancelled nor
    returned make the lifetime value."""
    paid: dict[Any, Decimal] = defaultdict(lambda: ZERO)
    for payment in _rows(state, "payments"):
        paid[payment["order_id"]] += payment["amount"]
    order_dates: dict[Any, list[date]] = defaultdict(list)
    counted: dict[Any, int] = defaultdict(int)
    lifetime: dict[Any, Decimal] = defaultdict(lambda: ZERO)
    for order in _rows(state, "orders"):
        customer_id = order["customer_id"]
        if order["status"] != "cancelled":
            counted[customer_id] += 1
            if order["order_date"] is not None:
                order_dates[customer_id].append(order["order_date"])
        if order["status"] not in ("cancelled", "returned"):
            lifetime[customer_id] += paid[order["id"]]
    result = []
    for customer in _rows(state, "customers"):
        dates = order_dates[customer["id"]]
        result.append(
            {
                "customer_id": customer["id"],
                "first_name": customer["first_name"],
                "last_name": customer["last_name"],
                "email": customer["email"],
                "segment": customer["segment"],
                "first_order_date": min(dates) if dates else None,
                "most_recent_order_date": max(dates) if dates else None,
                "number_of_orders": counted[customer["id"]],
                "lifetime_value": _money(lifetime[customer["id"]]),
            }
        )
    return result


def _fact_order_items(state: State) -> list[Row]:
    """One row per existing order item whose order exists."""
    orders = {order["id"]: order for order in _rows(state, "orders")}
    result = []
    for item in _rows(state, "order_items"):
        order = orders.get(item["order_id"])
        if order is None:
            continue
        result.append(
            {
                "order_item_id": item["id"],
                "order_id": item["order_id"],
                "customer_id": order["customer_id"],
                "product_id": item["product_id"],
                "order_date": order["order_date"],
                "status": order["status"],
                "quantity": item["quantity"],
                "unit_price": _money(item["unit_price"]),
                "line_amount": _money(item["quantity"] * item["unit_price"]),
            }
        )
    return result


def _daily_revenue(state: State) -> list[Row]:
    """One row per order_date with a qualifying order; items and revenue over the existing items of those
    orders (an order without items still counts)."""
    qualifying = {
        order["id"]: order["order_date"]
        for order in _rows(state, "orders")
        if order["status"] in QUALIFYING_STATUSES and order["order_date"] is not None
    }
    days: dict[date, Row] = {}
    for order_date in qualifying.values():
        day = days.setdefault(
            order_date, {"order_date": order_date, "orders": 0, "items_sold": 0, "revenue": ZERO}
        )
        day["orders"] += 1
    for item in _rows(state, "order_items"):
        order_date = qualifying.get(item["order_id"])
        if order_date is None:
            continue
        days[order_date]["items_sold"] += item["quantity"]
        days[order_date]["revenue"] += item["quantity"] * item["unit_price"]
    for day in days.values():
        day["revenue"] = _money(day["revenue"])
    return list(days.values())


def _dim_products(state: State) -> list[Row]:
    return [
        {
            "product_id": product["id"],
            "sku": product["sku"],
            "name": product["name"],
            "category": product["category"],
            "price": _money(product["price"]),
            "active": product["active"],
            "description": product["description"],
        }
        for product in _rows(state, "products")
    ]


def _dim_customers(customer_changes: Iterable[CustomerChange]) -> list[Row]:
    """SCD2 over (email, segment, country), folding the changes in apply order.

    With no current version, any non-delete change starts one; otherwise a change whose (email, segment,
    country) differs (None equal to None) closes the current version and starts the next. A delete closes the
    current version. Version numbers keep counting per customer across deletes and re-inserts.
    """
    versions: dict[int, list[Row]] = defaultdict(list)
    current: dict[int, Row] = {}
    for change in customer_changes:
        open_version = current.get(change.customer_id)
        if change.op == "d":
            if open_version is not None:
                open_version["valid_to"] = change.source_ts
                open_version["is_current"] = False
                del current[change.customer_id]
            continue
        attributes = (change.email, change.segment, change.country)
        if open_version is not None:
            if attributes == (open_version["email"], open_version["segment"], open_version["country"]):
                continue
            open_version["valid_to"] = change.source_ts
            open_version["is_current"] = False
        history = versions[change.customer_id]
        started: Row = {
            "customer_id": change.customer_id,
            "version": len(history) + 1,
            "email": change.email,
            "segment": change.segment,
            "country": change.country,
            "valid_from": change.source_ts,
            "valid_to": None,
            "is_current": True,
        }
        history.append(started)
        current[change.customer_id] = started
    return [row for history in versions.values() for row in history]


def _dim_date(state: State) -> list[Row]:
    """Every date from the earliest to the latest order_date (none without orders)."""
    order_dates = [order["order_date"] for order in _rows(state, "orders") if order["order_date"] is not None]
    if not order_dates:
        return []
    result = []
    day = min(order_dates)
    while day <= max(order_dates):
        result.append(
            {
                "date_key": day.year * 10000 + day.month * 100 + day.day,
                "date": day,
                "year": day.year,
                "quarter": (day.month - 1) // 3 + 1,
                "month": day.month,
                "day": day.day,
                "iso_day_of_week": day.isoweekday(),
                "is_weekend": day.isoweekday() >= 6,
            }
        )
        day += timedelta(days=1)
    return result


def reference_marts(state: State, customer_changes: Iterable[CustomerChange]) -> dict[str, list[Row]]:
    """Every gold mart computed from the final shop state and the ordered customer changes."""
    marts = {
        "orders": _orders(state),
        "customers": _customers(state),
        "daily_revenue": _daily_revenue(state),
        "fact_order_items": _fact_order_items(state),
        "dim_products": _dim_products(state),
        "dim_customers": _dim_customers(customer_changes),
        "dim_date": _dim_date(state),
    }
    result: dict[str, list[Row]] = {}
    for mart, rows in marts.items():
        for row in rows:  # the reference and the model compute the same columns
            assert set(row) == set(MART_COLUMNS[mart]), (mart, sorted(set(row) ^ set(MART_COLUMNS[mart])))
        shaped = [{column: row[column] for column in MART_COLUMNS[mart]} for row in rows]
        result[mart] = sorted(shaped, key=itemgetter(*MART_KEYS[mart]))
    return result


def _same_value(actual: Any, expected: Any) -> bool:
    """Equal and of the same type; a Decimal also at the same scale (no float, no bool-for-int)."""
    if type(actual) is not type(expected):
        return False
    if isinstance(actual, Decimal):
        return bool(actual == expected and actual.as_tuple().exponent == expected.as_tuple().exponent)
    if isinstance(actual, datetime):
        # Aware datetimes compare as instants, whatever their tzinfo object.
        return bool(actual == expected and (actual.tzinfo is None) == (expected.tzinfo is None))
    return bool(actual == expected)


def _index(
    mart: str, rows: Iterable[Mapping[str, Any]], side: str, diffs: list[str]
) -> dict[tuple[Any, ...], Row]:
    keyed: dict[tuple[Any, ...], Row] = {}
    for row in rows:
        key = tuple(row.get(column) for column in MART_KEYS[mart])
        if key in keyed:
            diffs.append(f"{mart}: duplicate key {key} in {side}")
        keyed[key] = {column: value for column, value in row.items() if column not in IGNORED_COLUMNS}
    return keyed


def compare_marts(actual: Mapping[str, list[Row]], expected: Mapping[str, list[Row]]) -> list[str]:
    """Human-readable differences between two sets of marts, rows matched by each mart's primary key.

    ``_version`` / ``_updated_at`` are ignored. Values must match in type and value; Decimals also in scale.
    A mart the reference does not compute (a model added without a computation here) is not compared.
    """
    diffs: list[str] = []
    for mart in sorted(expected):
        if mart not in actual:
            diffs.append(f"{mart}: missing from actual")
            continue
        actual_rows = _index(mart, actual[mart], "actual", diffs)
        expected_rows = _index(mart, expected[mart], "expected", diffs)
        for key in sorted(expected_rows.keys() - actual_rows.keys(), key=repr):
            diffs.append(f"{mart} {key}: missing row, expected {expected_rows[key]}")
        for key in sorted(actual_rows.keys() - expected_rows.keys(), key=repr):
            diffs.append(f"{mart} {key}: unexpected row {actual_rows[key]}")
        for key in sorted(actual_rows.keys() & expected_rows.keys(), key=repr):
            got, want = actual_rows[key], expected_rows[key]
            if list(got) != list(want):
                diffs.append(f"{mart} {key}: columns {list(got)} != expected {list(want)}")
                continue
            for column, value in want.items():
                if not _same_value(got[column], value):
                    diffs.append(f"{mart} {key}: {column} = {got[column]!r}, expected {value!r}")
    return diffs
