"""Deterministic fake shop data: names, emails, products and their large descriptions.

Every function draws only from the ``random.Random`` it is given, so the generator stays reproducible.
"""

from __future__ import annotations

import random
from decimal import Decimal

SEGMENTS = ("consumer", "corporate", "home_office")
SEGMENT_WEIGHTS = (6, 3, 1)
COUNTRIES = ("DE", "FR", "NL", "US", "GB", "ES", "IT", "PL", "SE", "CA", "BR", "JP")
COUNTRY_WEIGHTS = (14, 10, 6, 20, 10, 7, 7, 5, 3, 6, 6, 6)
PAYMENT_METHODS = ("credit_card", "coupon", "bank_transfer", "gift_card")
PAYMENT_WEIGHTS = (6, 1, 2, 1)
CATEGORIES = ("books", "electronics", "garden", "kitchen", "office", "outdoor", "toys", "apparel")
EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.test")

FIRST_NAMES = (
    "Ada", "Alan", "Amara", "Ana", "Ben", "Chen", "Clara", "Dana", "Elif", "Emil", "Eva", "Farah", "Grace",
    "Hugo", "Ines", "Ivan", "Jana", "Jonas", "Kai", "Lea", "Leon", "Lina", "Luca", "Maya", "Mia", "Nora",
    "Omar", "Paul", "Priya", "Rosa", "Sam", "Sara", "Tariq", "Tom", "Vera", "Yuki", "Zoe", "José", "Zoë",
)  # fmt: skip
LAST_NAMES = (
    "Adams", "Becker", "Costa", "Dubois", "Eriksson", "Fischer", "García", "Hansen", "Ito", "Jansen",
    "Kowalski", "Lopez", "Müller", "Nakamura", "Novak", "O'Brien", "Patel", "Rossi", "Schmidt", "Silva",
    "Smith", "Tanaka", "Weber", "Wong", "Yilmaz", "Zhang",
)  # fmt: skip
ADJECTIVES = (
    "Compact", "Deluxe", "Eco", "Ergonomic", "Foldable", "Heavy-Duty", "Classic", "Smart", "Portable",
    "Rugged", "Slim", "Wireless", "Modular", "Vintage", "Premium",
)  # fmt: skip
NOUNS = (
    "Backpack", "Blender", "Chair", "Desk Lamp", "Headphones", "Kettle", "Notebook", "Planter", "Puzzle",
    "Rain Jacket", "Skillet", "Speaker", "Tent", "Thermos", "Toolkit", "Umbrella", "Watering Can",
)  # fmt: skip
WORDS = (
    "durable", "lightweight", "designed", "for", "everyday", "use", "with", "a", "quality", "finish", "and",
    "the", "materials", "are", "sourced", "responsibly", "easy", "to", "clean", "care", "instructions",
    "include", "warranty", "covers", "defects", "in", "workmanship", "dimensions", "weight", "colour",
    "may", "vary", "slightly", "from", "images", "shown", "compatible", "most", "standard", "accessories",
    "packaging", "recyclable", "assembled", "minutes", "no", "tools", "required", "über", "naïve", "café",
)  # fmt: skip

CENT = Decimal("0.01")


def segment(rng: random.Random) -> str:
    return rng.choices(SEGMENTS, SEGMENT_WEIGHTS)[0]


def country(rng: random.Random) -> str:
    return rng.choices(COUNTRIES, COUNTRY_WEIGHTS)[0]


def payment_method(rng: random.Random) -> str:
    return rng.choices(PAYMENT_METHODS, PAYMENT_WEIGHTS)[0]


def person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)


def email(rng: random.Random, first: str, last: str, customer_id: int) -> str:
    local = f"{first}.{last}".lower().replace("'", "").replace(" ", "")
    return f"{local}.{customer_id}.{rng.randrange(100)}@{rng.choice(EMAIL_DOMAINS)}"


def product_name(rng: random.Random) -> str:
    return f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"


def price(rng: random.Random) -> Decimal:
    """A price between 1.99 and ~500, in cents; always fits numeric(10,2)."""
    return (Decimal(rng.randrange(199, 50_000)) * CENT).quantize(CENT)


def description(rng: random.Random, sku: str) -> str:
    """A product description of several KB (large enough that PostgreSQL stores it TOASTed)."""
    words = rng.choices(WORDS, k=rng.randrange(450, 900))
    return f"{sku}: " + " ".join(words) + "."
