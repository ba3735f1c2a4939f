"""The YAML test files: dbt's shape accepted, mistakes refused with the file, the key and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdcwh.config import PROJECT_ROOT
from cdcwh.errors import ConfigError
from cdcwh.models import load_models
from cdcwh.quality.spec import (
    AcceptedValues,
    ExpressionIsTrue,
    Relationships,
    RowCount,
    load_tests,
    parse_file,
)

GOOD = """
version: 2
models:
  - name: orders
    description: One row per order.
    columns:
      - name: order_id
        description: The key.
        tests: [unique, not_null]
      - name: status
        data_tests:
          - accepted_values:
              values: [placed, shipped]
              config: {severity: warn, where: "order_id > 10"}
      - name: customer_id
        tests:
          - relationships: {to: "ref('customers')", field: customer_id}
    tests:
      - row_count: {min: 1, max: 100}
      - expression_is_true: {arguments: {expression: "amount >= 0"}}
      - expression_is_true: {expression: "amount < 1000", severity: warn}
"""


def test_dbt_shaped_file_gives_one_spec_per_test_with_stable_ids() -> None:
    specs = parse_file(Path("orders.yml"), GOOD, "gold")
    assert [s.test_id for s in specs] == [
        "orders.unique.order_id",
        "orders.not_null.order_id",
        "orders.accepted_values.status",
        "orders.relationships.customer_id",
        "orders.row_count",
        "orders.expression_is_true",
        "orders.expression_is_true.2",
    ]
    values = specs[2]
    assert values.severity == "warn" and values.where == "order_id > 10"
    assert isinstance(values.args, AcceptedValues) and values.args.values == ["placed", "shipped"]
    assert isinstance(specs[3].args, Relationships) and specs[3].args.target == "customers"
    assert isinstance(specs[4].args, RowCount) and (specs[4].args.min, specs[4].args.max) == (1, 100)
    assert specs[0].severity == "error" and specs[0].where is None
    assert specs[6].severity == "warn"


def test_silver_models_are_named_by_their_schema() -> None:
    specs = parse_file(Path("orders.yml"), GOOD, "silver")
    assert specs[0].model == "silver.orders" and specs[0].table == "orders" and specs[0].layer == "silver"
    assert specs[0].test_id == "silver.orders.unique.order_id"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models:\n  - name: x\n    colums: []\n", ["bad.yml (line 3)", "colums", "Extra inputs"]),
        (
            "models:\n  - name: x\n    columns:\n      - name: a\n        tests: [uniq]\n",
            ["bad.yml", "columns[0]", "unknown column test 'uniq'"],
        ),
        (
            "models:\n  - name: x\n    tests: [unique]\n",
            ["unknown model test 'unique'"],
        ),
        (
            "models:\n  - name: x\n    columns:\n      - name: a\n        tests:\n"
            "          - accepted_values: {valeus: [1]}\n",
            ["accepted_values", "valeus", "values: Field required"],
        ),
        (
            "models:\n  - name: x\n    columns:\n      - name: a\n        tests:\n"
            "          - not_null: {config: {severity: fatal}}\n",
            ["not_null", "severity"],
        ),
        (
            "models:\n  - name: x\n    tests:\n      - expression_is_true: {expression: 'a >= (0'}\n",
            ["expression is not a SQL condition"],
        ),
        (
            "models:\n  - name: x\n    columns:\n      - name: a\n        tests:\n"
            "          - not_null: {config: {where: 'a = = 1'}}\n",
            ["where is not a SQL condition"],
        ),
        (
            "models:\n  - name: x\n    columns:\n      - name: a\n        tests:\n"
            "          - relationships: {to: customers, field: id}\n",
            ["to must be ref('<model>')"],
        ),
        ("models:\n  - name: x\n    tests:\n      - row_count: {min: 5, max: 2}\n", ["min 5 is above max 2"]),
        ("models: [\n", ["not valid YAML"]),
        (
            "models:\n  - name: x\n    tests:\n      - expression_is_true:\n"
            "          expression: \"EXISTS (SELECT * FROM read_text('/etc/passwd'))\"\n",
            ["bad.yml", "expression_is_true: expression", "without a subquery or table"],
        ),
        (
            "models:\n  - name: x\n    columns:\n      - name: a\n        tests:\n"
            "          - not_null: {config: {where: \"length(read_csv('/etc/passwd')) > 0\"}}\n",
            ["where", "may not call read_csv()"],
        ),
        (
            "models:\n  - name: x\n    tests:\n"
            "      - expression_is_true: {expression: \"nextval('s') > 0\"}\n",
            ["expression", "may not call nextval()"],
        ),
    ],
)
def test_mistakes_are_refused_naming_the_file_and_key(text: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_file(Path("bad.yml"), text, "gold")
    for part in expected:
        assert part in str(caught.value), str(caught.value)


def test_a_test_declared_in_two_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "gold").mkdir()
    for mart in ("orders", "customers"):  # customers: the target of GOOD's relationships test
        (tmp_path / "gold" / f"{mart}.sql").write_text("SELECT 1 AS order_id")
    (tmp_path / "gold" / "a.yml").write_text(GOOD)
    (tmp_path / "gold" / "b.yml").write_text(GOOD)
    with pytest.raises(ConfigError, match=r"b\.yml: model orders is already described in .*a\.yml"):
        load_tests(tmp_path)


def test_the_shipped_files_cover_every_gold_model_and_shop_table_with_their_columns() -> None:
    specs = load_tests(PROJECT_ROOT / "sql")
    models = {m.name for m in load_models(PROJECT_ROOT / "sql" / "gold")}
    tested = {s.model for s in specs}
    assert models <= tested
    assert {f"silver.{t}" for t in ("customers", "products", "orders", "order_items", "payments")} <= tested
    # every mart's primary key is unique and not null (dim_customers: its pair of key columns)
    for model in load_models(PROJECT_ROOT / "sql" / "gold"):
        mine = {(s.kind, s.column) for s in specs if s.model == model.name}
        for key in model.primary_key:
            assert ("not_null", key) in mine, (model.name, key)
        if len(model.primary_key) == 1:
            assert ("unique", model.primary_key[0]) in mine, model.name
        else:
            assert ("unique_combination_of_columns", None) in mine, model.name


def test_a_comment_in_sql_is_dropped_and_the_rendered_condition_kept() -> None:
    text = "models:\n  - name: x\n    tests:\n      - expression_is_true:\n"
    text += '          expression: "a >= 0 -- never negative"\n          config: {where: "b = 1 -- only b"}\n'
    [spec] = parse_file(Path("c.yml"), text, "gold")
    assert isinstance(spec.args, ExpressionIsTrue)
    # pasted into ``WHERE NOT (...)``, a kept comment would swallow the closing parenthesis
    assert (spec.args.expression, spec.where) == ("a >= 0", "b = 1")


def test_a_gold_yaml_model_without_its_sql_is_refused(tmp_path: Path) -> None:
    (tmp_path / "gold").mkdir()
    (tmp_path / "gold" / "orders.sql").write_text("SELECT 1 AS order_id")
    (tmp_path / "gold" / "orders.yml").write_text(GOOD.replace("name: orders", "name: oders"))
    with pytest.raises(ConfigError, match=r"orders\.yml: model oders is not a gold model"):
        load_tests(tmp_path)


def test_a_relationship_to_a_misspelt_gold_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "gold").mkdir()
    (tmp_path / "gold" / "orders.sql").write_text("SELECT 1 AS order_id")
    text = "models:\n  - name: orders\n    columns:\n      - name: customer_id\n        tests:\n"
    text += "          - relationships: {to: ref('dim_custmers'), field: customer_id}\n"
    (tmp_path / "gold" / "orders.yml").write_text(text)
    # at load, not at run time: the mart would otherwise wait forever for a relation that never comes
    with pytest.raises(ConfigError, match=r"ref\('dim_custmers'\) is not a gold model"):
        load_tests(tmp_path)


def test_the_shipped_expressions_are_backed_by_not_null_where_null_would_pass() -> None:
    """``expression_is_true`` passes on NULL (``WHERE NOT (expr)``): the columns it reads are not NULL."""
    ids = {s.test_id for s in load_tests(PROJECT_ROOT / "sql")}
    amounts = ("credit_card_amount", "coupon_amount", "bank_transfer_amount", "gift_card_amount")
    expected = {f"orders.not_null.{c}" for c in amounts}
    expected |= {f"dim_date.not_null.{c}" for c in ("year", "quarter", "month", "day")}
    expected |= {
        "fact_order_items.not_null.line_amount",
        "orders.relationships.order_date",
        "customers.relationships.customer_id",
    }
    assert expected - ids == set()
