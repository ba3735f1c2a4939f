"""Table contracts: parsing, validating the contract itself, wire overrides, the shipped shop contracts."""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from pydantic import ValidationError

from cdcwh.contracts import load_contracts
from cdcwh.core import RawRecord, RejectReason, decode_batch, parse_contract
from cdcwh.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[3] / "schemas" / "contracts"

TOML = """
topic = "legacy.db.events"
key = ["id"]

[columns.id]
type = "int64"
nullable = false

[columns.happened_at]
type = "timestamp"
semantic = "io.debezium.time.Timestamp"

[columns.level]
type = "int16"
accepted_values = [1, 2, 3]
"""


def test_parse_from_toml_text_keeps_column_order() -> None:
    contract = parse_contract(tomllib.loads(TOML))
    assert contract.topic == "legacy.db.events"
    assert contract.key == ("id",)
    assert list(contract.columns) == ["id", "happened_at", "level"]
    assert contract.columns["happened_at"].arrow_type == pa.timestamp("us")
    assert contract.columns["level"].arrow_type == pa.int32()


def test_semantic_override_decodes_schemaless_epoch_millis() -> None:
    contract = parse_contract(tomllib.loads(TOML))
    body = {"op": "c", "after": {"id": 1, "happened_at": 86_400_001, "level": 4}, "source": {"ts_ms": 1}}
    record = RawRecord(contract.topic, 0, 0, None, orjson.dumps({"id": 1}), orjson.dumps(body))
    batch = decode_batch([record], {contract.topic: contract})
    assert [r.reason for r in batch.rejected] == [RejectReason.CONTRACT_VIOLATION]  # level 4 not accepted
    body["after"]["level"] = 3  # type: ignore[index]
    record = RawRecord(contract.topic, 0, 1, None, orjson.dumps({"id": 1}), orjson.dumps(body))
    table = decode_batch([record], {contract.topic: contract}).tables[contract.topic]
    assert table.column("happened_at").cast(pa.int64()).to_pylist() == [86_400_001_000]


@pytest.mark.parametrize(
    "columns",
    [
        {"a": {"type": "varchar"}},
        {"a": {"type": "decimal(10)"}},
        {"a": {"type": "string", "min": 1}},
        {"a": {"type": "int32", "accepted_values": ["x"]}},
        {"a": {"type": "timestamp", "semantic": "io.debezium.time.ZonedTimestamp"}},
        {"a": {"type": "timestamp", "semantic": "com.example.Nope"}},
        {"a": {"type": "string", "unknown_rule": True}},
    ],
)
def test_invalid_columns_are_refused(columns: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        parse_contract({"topic": "t", "columns": columns})


def test_key_must_name_declared_columns() -> None:
    with pytest.raises(ValidationError, match="key columns"):
        parse_contract({"topic": "t", "key": ["id"], "columns": {"other": {"type": "string"}}})


def test_shipped_shop_contracts() -> None:
    contracts = load_contracts(SHIPPED)
    assert sorted(contracts) == [
        f"shop.public.{t}" for t in ("customers", "order_items", "orders", "payments", "products")
    ]
    assert all(c.key == ("id",) for c in contracts.values())
    customers = contracts["shop.public.customers"].columns
    assert customers["segment"].accepted_values == ("consumer", "corporate", "home_office")
    assert customers["created_at"].arrow_type == pa.timestamp("us", tz="UTC")
    orders = contracts["shop.public.orders"].columns
    assert orders["status"].accepted_values == ("placed", "shipped", "completed", "returned", "cancelled")
    assert (orders["id"].arrow_type, orders["customer_id"].arrow_type) == (pa.int64(), pa.int32())
    assert orders["order_date"].arrow_type == pa.date32()
    assert orders["created_at"].arrow_type == pa.timestamp("us")
    payments = contracts["shop.public.payments"].columns
    assert payments["method"].accepted_values == ("credit_card", "coupon", "bank_transfer", "gift_card")
    assert payments["amount"].min == Decimal(0)
    items = contracts["shop.public.order_items"].columns
    assert items["quantity"].min == Decimal(1)
    assert items["unit_price"].arrow_type == pa.decimal128(10, 2)
    products = contracts["shop.public.products"].columns
    assert products["price"].min == Decimal(0)
    assert products["active"].arrow_type == pa.bool_()


def test_loader_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_contracts(tmp_path / "missing")
    (tmp_path / "a.b.c.toml").write_text("key = [", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"a\.b\.c\.toml is not valid TOML"):
        load_contracts(tmp_path)
    (tmp_path / "a.b.c.toml").write_text('[columns.x]\ntype = "nope"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="is invalid"):
        load_contracts(tmp_path)
    (tmp_path / "a.b.c.toml").write_text('[columns.x]\ntype = "string"\n', encoding="utf-8")
    (tmp_path / "other.toml").write_text('topic = "a.b.c"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="both claim"):
        load_contracts(tmp_path)


def test_topic_defaults_to_the_file_name(tmp_path: Path) -> None:
    (tmp_path / "x.public.y.toml").write_text('[columns.id]\ntype = "int32"\n', encoding="utf-8")
    assert list(load_contracts(tmp_path)) == ["x.public.y"]
