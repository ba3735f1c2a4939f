"""A mart's columns and types, derived by running its model over empty tables shaped by the contracts (an
in-memory DuckDB), and their PostgreSQL spelling."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cdcwh.config import PROJECT_ROOT
from cdcwh.models import MartColumn, derive_marts, load_models, postgres_type, widens

CONTRACTS = PROJECT_ROOT / "schemas" / "contracts"


def models_with(tmp_path: Path, **extra: str) -> Path:
    """The shipped models plus ``extra`` (name -> SQL) in a directory of their own."""
    directory = tmp_path / "gold"
    shutil.copytree(PROJECT_ROOT / "sql" / "gold", directory)
    for name, text in extra.items():
        (directory / f"{name}.sql").write_text(text)
    return directory


def test_a_new_model_is_derived_from_its_sql_and_the_contracts(tmp_path: Path) -> None:
    directory = models_with(
        tmp_path,
        segment_revenue="-- mart: segment_revenue\n-- primary key: segment\n-- Revenue per segment.\n"
        "SELECT c.segment, CAST(sum(c.lifetime_value) AS DECIMAL(38, 2)) AS revenue,\n"
        "  count(*) AS customers, sum(c.customer_id::BIGINT) AS id_sum, max(p.active) AS any_active\n"
        "FROM gold.customers AS c, silver.products AS p GROUP BY c.segment",
    )
    derived = derive_marts(load_models(directory), CONTRACTS)
    assert derived.failures == {}
    table = derived.tables["segment_revenue"]
    assert table.primary_key == ("segment",)
    assert table.columns == (
        MartColumn("segment", "VARCHAR"),
        MartColumn("revenue", "DECIMAL(38,2)"),
        MartColumn("customers", "BIGINT"),
        MartColumn("id_sum", "HUGEINT"),  # DuckDB's sum of a BIGINT
        MartColumn("any_active", "BOOLEAN"),
    )
    assert [c.postgres_type for c in table.columns] == [
        "text",
        "numeric(38,2)",
        "bigint",
        "numeric(38,0)",
        "boolean",
    ]


def test_a_model_that_cannot_be_derived_is_a_failure_naming_why(tmp_path: Path) -> None:
    directory = models_with(
        tmp_path,
        elsewhere="-- mart: elsewhere\n-- primary key: id\nSELECT id FROM silver.not_in_the_contracts",
        keyless="-- mart: keyless\n-- primary key: id\nSELECT 1 AS other",
        downstream="-- mart: downstream\n-- primary key: id\nSELECT id FROM gold.elsewhere",
    )
    derived = derive_marts(load_models(directory), CONTRACTS)
    assert set(derived.failures) == {"elsewhere", "keyless", "downstream"}
    assert "not_in_the_contracts" in derived.failures["elsewhere"]
    assert "key column(s) ['id'] are not in the SELECT" in derived.failures["keyless"]
    assert "orders" in derived.tables  # the others still derive

    no_contracts = derive_marts(load_models(directory), tmp_path / "missing")
    assert no_contracts.tables == {}
    assert all("CDCWH_CONTRACTS_DIR" in reason for reason in no_contracts.failures.values())


@pytest.mark.parametrize(
    ("duckdb_type", "postgres"),
    [
        ("DECIMAL(38,2)", "numeric(38,2)"),
        ("DECIMAL(12, 2)", "numeric(12,2)"),
        ("INTEGER", "integer"),
        ("VARCHAR", "text"),
        ("TIMESTAMP WITH TIME ZONE", "timestamp with time zone"),
        ("INTEGER[]", None),
        ("STRUCT(a INTEGER)", None),
    ],
)
def test_postgres_type(duckdb_type: str, postgres: str | None) -> None:
    assert postgres_type(duckdb_type) == postgres


def test_widens_only_when_every_value_fits() -> None:
    assert widens("numeric(12,2)", "numeric(38,2)")
    assert widens("integer", "bigint")
    assert not widens("numeric(38,2)", "numeric(12,2)")
    assert not widens("numeric(12,2)", "numeric(38,4)")  # another scale rewrites every value
    assert not widens("bigint", "integer")
    assert not widens("text", "integer")
