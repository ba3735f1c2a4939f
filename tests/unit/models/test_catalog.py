"""The gold model catalog: headers, the tables a model reads (parsed with sqlglot, so a comment or a string
that names another model is no dependency), the order models run in, and clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdcwh.config import PROJECT_ROOT
from cdcwh.errors import ConfigError
from cdcwh.models import load_model, load_models


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.sql"
    path.write_text(text)
    return path


def test_a_comment_or_a_string_naming_another_model_is_no_dependency(tmp_path: Path) -> None:
    write(
        tmp_path,
        "alpha",
        "-- mart: alpha\n-- primary key: id\n"
        "-- unlike gold.beta, this reads silver only\n"
        "SELECT id, 'copied from gold.beta' AS note /* not gold.beta either */\n"
        "FROM silver.orders -- nor gold.beta here\n",
    )
    write(
        tmp_path,
        "beta",
        "-- mart: beta\n-- primary key: id\n"
        'SELECT a.id FROM gold.alpha AS a JOIN silver."Payments" USING (id)\n',
    )
    models = {model.name: model for model in load_models(tmp_path)}
    assert models["alpha"].reads == {("silver", "orders")}
    assert models["alpha"].depends_on == set()
    assert models["beta"].reads == {("gold", "alpha"), ("silver", "payments")}
    assert models["beta"].depends_on == {"alpha"}
    # before, a pattern over the text saw gold.beta in alpha's comments and strings: a cycle
    assert [model.name for model in load_models(tmp_path)] == ["alpha", "beta"]


def test_ctes_and_subqueries_are_followed_and_cte_names_are_not_tables(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m",
        "-- mart: m\n-- primary key: k\n"
        "WITH orders AS (SELECT * FROM silver_history.customers)\n"
        "SELECT k FROM orders WHERE k IN (SELECT customer_id FROM gold.customers)\n"
        "UNION ALL SELECT 1 FROM (SELECT * FROM silver.payments) AS p",
    )
    assert load_model(path).reads == {
        ("silver_history", "customers"),
        ("gold", "customers"),
        ("silver", "payments"),
    }


def test_the_shipped_models_read_what_they_say(tmp_path: Path) -> None:
    models = {model.name: model for model in load_models(PROJECT_ROOT / "sql" / "gold")}
    assert models["customers"].depends_on == {"orders"}
    assert models["daily_revenue"].depends_on == {"fact_order_items"}
    assert models["dim_customers"].reads == {("silver_history", "customers")}
    order = list(models)
    assert order.index("orders") < order.index("customers")
    assert order.index("fact_order_items") < order.index("daily_revenue")


def test_header(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "file_name_is_not_the_mart",
        "-- mart: Orders_Daily\n-- primary key: day,  region\n"
        "-- incremental: day from silver.orders.order_date\n-- What one row is.\n"
        "SELECT order_date AS day, 'x' AS region FROM silver.orders;\n",
    )
    model = load_model(path)
    assert model.name == "orders_daily"
    assert model.primary_key == ("day", "region")
    assert model.incremental is not None and model.incremental.column == "day"
    assert model.incremental.sources == (("silver", "orders", "order_date"),)
    assert not model.sql.endswith(";")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SELECT 1 AS id", "starts with '-- mart: <name>'"),
        ("-- mart: m\nSELECT 1 AS id", "primary key"),
        # a header line after the SQL began is not the header
        ("-- mart: m\nSELECT 1 AS id\n-- primary key: id", "primary key"),
        ("-- mart: m\n-- mart: n\n-- primary key: id\nSELECT 1 AS id", "names 'mart' twice"),
        ("-- mart: m\n-- primary key: id,\nSELECT 1 AS id", "primary key: <col>"),
        ("-- mart: m\n-- primary key: id\nSELECT FROM WHERE (", "sqlglot cannot parse"),
        ("-- mart: m\n-- primary key: id\nDELETE FROM gold.m", "one SELECT"),
        ("-- mart: m\n-- primary key: id\nSELECT 1 AS id; SELECT 2 AS id", "one SELECT"),
    ],
)
def test_a_bad_model_file_is_a_config_error_naming_it(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "bad", text)
    with pytest.raises(ConfigError, match=message) as raised:
        load_models(tmp_path)
    assert str(path) in str(raised.value)


def test_two_files_for_one_mart_and_a_cycle_are_config_errors(tmp_path: Path) -> None:
    write(tmp_path / "twice", "a", "-- mart: m\n-- primary key: id\nSELECT 1 AS id")
    write(tmp_path / "twice", "b", "-- mart: m\n-- primary key: id\nSELECT 2 AS id")
    with pytest.raises(ConfigError, match="mart m is already defined by .*a.sql"):
        load_models(tmp_path / "twice")
    write(tmp_path / "cycle", "a", "-- mart: a\n-- primary key: id\nSELECT id FROM gold.b")
    write(tmp_path / "cycle", "b", "-- mart: b\n-- primary key: id\nSELECT id FROM gold.a")
    with pytest.raises(ConfigError, match="cycle"):
        load_models(tmp_path / "cycle")
