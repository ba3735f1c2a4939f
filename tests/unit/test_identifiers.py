"""The one identifier quoting shared by the warehouse and the data quality tests (pure)."""

from __future__ import annotations

import duckdb

from cdcwh import warehouse
from cdcwh.core.identifiers import quote
from cdcwh.quality import compile as dq_compile


def test_an_identifier_with_a_quote_round_trips_through_duckdb() -> None:
    name = 'odd "name'
    with duckdb.connect() as con:
        con.execute(f"CREATE TABLE {quote(name)} ({quote(name)} INTEGER)")
        assert con.execute(f"SELECT * FROM {quote(name)}").description[0][0] == name
    assert warehouse.quote is quote and dq_compile.quote is quote
