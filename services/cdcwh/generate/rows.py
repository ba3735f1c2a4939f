"""Row builders for the shop tables (customers, products, an order with its items and payments)."""

from __future__ import annotations

from decimal import Decimal

from cdcwh.generate import fake
from cdcwh.generate.change import Row
from cdcwh.generate.model import ShopModel, naive_from_micros, utc_from_micros

SECOND_US = 1_000_000
DAY_US = 86_400 * SECOND_US


def customer_row(model: ShopModel, created_us: int) -> Row:
    rng = model.rng
    customer_id = model.new_id("customers")
    first, last = fake.person(rng)
    return {
        "id": customer_id,
        "email": fake.email(rng, first, last, customer_id),
        "first_name": first,
        "last_name": last,
        "segment": fake.segment(rng),
        "country": fake.country(rng),
        "created_at": utc_from_micros(created_us),
    }


def product_row(model: ShopModel) -> Row:
    rng = model.rng
    product_id = model.new_id("products")
    sku = f"SKU-{product_id:06d}"
    return {
        "id": product_id,
        "sku": sku,
        "name": fake.product_name(rng),
        "category": rng.choice(fake.CATEGORIES),
        "price": fake.price(rng),
        "active": True,
        "description": fake.description(rng, sku),
    }


def order_rows(
    model: ShopModel,
    customer_id: int,
    products: list[Row],
    status: str,
    created_us: int,
    n_items: int,
    n_pay: int,
) -> tuple[Row, list[Row], list[Row]]:
    """An order with ``n_items`` items and ``n_pay`` (1 or 2) payments that add up to its total."""
    rng = model.rng
    created = naive_from_micros(created_us)
    order = {
        "id": model.new_id("orders"),
        "customer_id": customer_id,
        "status": status,
        "order_date": created.date(),
        "created_at": created,
    }
    items: list[Row] = []
    for _ in range(n_items):
        product = rng.choice(products)
        items.append(
            {
                "id": model.new_id("order_items"),
                "order_id": order["id"],
                "product_id": product["id"],
                "quantity": rng.randint(1, 5),
                "unit_price": product["price"],
            }
        )
    total = sum((item["quantity"] * item["unit_price"] for item in items), Decimal("0.00"))
    amounts: list[tuple[str, Decimal]] = []
    if n_pay == 2:
        coupon = (total * rng.randint(10, 50) / 100).quantize(fake.CENT)
        amounts = [("coupon", coupon), (rng.choice(("credit_card", "gift_card")), total - coupon)]
    elif n_pay == 1:
        amounts = [(fake.payment_method(rng), total)]
    payments = [
        {
            "id": model.new_id("payments"),
            "order_id": order["id"],
            "method": method,
            "amount": amount,
            "created_at": utc_from_micros(created_us + rng.randrange(0, 2 * SECOND_US)),
        }
        for method, amount in amounts
    ]
    return order, items, payments
