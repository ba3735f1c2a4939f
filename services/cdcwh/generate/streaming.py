"""Phase 2: streaming transactions drawn from a weighted mix of shop actions (``ACTIONS``).

Each action returns the changes of one committed transaction, or ``[]`` when it does not apply (nothing to
pick from) or would not fit in ``budget``; it draws from the RNG and touches the model only once it applies.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from cdcwh.generate import fake
from cdcwh.generate.change import Row, SourceChange
from cdcwh.generate.model import ShopModel
from cdcwh.generate.rows import customer_row, order_rows, product_row

Action = Callable[[ShopModel, int], list[SourceChange]]


def _new_customer(model: ShopModel, budget: int) -> list[SourceChange]:
    started = model.begin(events=1)
    changes = [model.insert("customers", customer_row(model, started))]
    model.commit()
    return changes


def _update_customer(model: ShopModel, budget: int) -> list[SourceChange]:
    """Segment, email and/or country change (the SCD2 columns downstream)."""
    if not model.customers:
        return []
    rng = model.rng
    customer_id = model.customers.choice(rng)
    row = model.state["customers"][(customer_id,)]
    changes: Row = {}
    while not changes:
        if rng.random() < 0.45:
            changes["segment"] = rng.choice([s for s in fake.SEGMENTS if s != row["segment"]])
        if rng.random() < 0.4:
            email = fake.email(rng, row["first_name"], row["last_name"], customer_id)
            if email != row["email"]:
                changes["email"] = email
        if rng.random() < 0.3:
            changes["country"] = rng.choice([c for c in fake.COUNTRIES if c != row["country"]])
    model.begin(events=1)
    result = [model.update("customers", customer_id, changes)]
    model.commit()
    return result


def _change_price(model: ShopModel, budget: int) -> list[SourceChange]:
    """A price change; the description is sent in full only when it changes too (else TOASTed)."""
    if not model.products:
        return []
    rng = model.rng
    product_id = model.products.choice(rng)
    row = model.state["products"][(product_id,)]
    price = (row["price"] * rng.randint(80, 125) / 100).quantize(fake.CENT)
    if price == row["price"]:
        price += fake.CENT
    changes: Row = {"price": max(price, Decimal("0.99"))}
    if rng.random() < 0.25:
        changes["description"] = fake.description(rng, row["sku"])
    if rng.random() < 0.05:
        changes["active"] = not row["active"]
    model.begin(events=1)
    result = [model.update("products", product_id, changes, toast=frozenset({"description"}))]
    model.commit()
    return result


def _new_product(model: ShopModel, budget: int) -> list[SourceChange]:
    model.begin(events=1)
    changes = [model.insert("products", product_row(model))]
    model.commit()
    return changes


def _place_order(model: ShopModel, budget: int) -> list[SourceChange]:
    """A new order (placed) with its items and payments in one transaction."""
    if budget < 3 or not model.customers or not model.products:
        return []
    rng = model.rng
    n_items, n_pay = rng.randint(1, 4), 2 if rng.random() < 0.1 else 1
    if 1 + n_items + n_pay > budget:
        n_items, n_pay = min(n_items, budget - 2), 1
    pool = model.active_products or model.products
    products = [model.state["products"][(pool.choice(rng),)] for _ in range(n_items)]
    customer_id = model.customers.choice(rng)
    started = model.begin(events=1 + n_items + n_pay)
    order, items, payments = order_rows(model, customer_id, products, "placed", started, n_items, n_pay)
    changes = [model.insert("orders", order)]
    changes += [model.insert("order_items", item) for item in items]
    changes += [model.insert("payments", payment) for payment in payments]
    model.commit()
    return changes


def _advance_order(model: ShopModel, budget: int) -> list[SourceChange]:
    """placed -> shipped (or cancelled), shipped -> completed, now and then completed -> returned."""
    rng = model.rng
    draw = rng.random()
    current = "placed" if draw < 0.55 else "shipped" if draw < 0.97 else "completed"
    pool = model.orders_by_status[current]
    if not pool:
        return []
    order_id = pool.choice(rng)
    if current == "placed":
        status = "cancelled" if rng.random() < 0.08 else "shipped"
    else:
        status = "completed" if current == "shipped" else "returned"
    model.begin(events=1)
    changes = [model.update("orders", order_id, {"status": status})]
    model.commit()
    return changes


def _delete_payment(model: ShopModel, budget: int) -> list[SourceChange]:
    if not model.payments:
        return []
    payment_id = model.payments.choice(model.rng)
    model.begin(events=1)
    changes = [model.delete("payments", payment_id)]
    model.commit()
    return changes


def _delete_order(model: ShopModel, budget: int) -> list[SourceChange]:
    """An order delete: its items, then its payments, then the order, one delete event each."""
    if not model.orders:
        return []
    order_id = model.orders.choice(model.rng)
    items, payments = list(model.items_by_order[order_id]), list(model.payments_by_order[order_id])
    events = 1 + len(items) + len(payments)
    if events > budget:
        return []
    model.begin(events=events)
    changes = [model.delete("order_items", item_id) for item_id in items]
    changes += [model.delete("payments", payment_id) for payment_id in payments]
    changes.append(model.delete("orders", order_id))
    model.commit()
    return changes


def _delete_customer(model: ShopModel, budget: int) -> list[SourceChange]:
    """Only customers without orders are deleted (the foreign key would refuse the others)."""
    if not model.customers_without_orders:
        return []
    customer_id = model.customers_without_orders.choice(model.rng)
    model.begin(events=1)
    changes = [model.delete("customers", customer_id)]
    model.commit()
    return changes


ACTIONS: tuple[tuple[Action, int], ...] = (
    (_new_customer, 6),
    (_update_customer, 6),
    (_change_price, 5),
    (_new_product, 1),
    (_place_order, 20),
    (_advance_order, 45),
    (_delete_payment, 1),
    (_delete_order, 1),
    (_delete_customer, 1),
)
_FUNCTIONS = [action for action, _ in ACTIONS]
_WEIGHTS = [weight for _, weight in ACTIONS]


def transaction(model: ShopModel, budget: int) -> list[SourceChange]:
    """One streaming transaction of at most ``budget`` changes (``_new_customer`` always fits)."""
    while True:
        action = model.rng.choices(_FUNCTIONS, _WEIGHTS)[0]
        changes = action(model, budget)
        if changes:
            return changes
