"""Values compared by meaning across PostgreSQL and DuckDB: types the digest cannot cover, composite text keys
in byte order, infinity, JSON written differently, a timestamptz given in another zone."""

from __future__ import annotations

from pathlib import Path

import psycopg

from cdcwh.config import Settings
from cdcwh.reconcile import reconcile
from cdcwh.warehouse import open_warehouse
from tests.integration.reconcile.helpers import fresh_database

SOURCE_DDL = """
CREATE TABLE public.zoo (
    region text, n integer, amount numeric, ratio real, score double precision, at timestamptz,
    local timestamp, day date, doc jsonb, ref uuid, raw bytea, tags text[], flag boolean,
    PRIMARY KEY (region, n));
INSERT INTO public.zoo VALUES
    ('B', 1, 1.50, 0.1, 0.1, '2026-03-01 12:00:00+05:30', '2026-03-01 12:00:00', 'infinity',
     '{"b": 1, "a": [1, 2]}', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', '\\x00ff', '{x,y}', true),
    ('a', 1, 0, 1e-3, 1e20, 'infinity', '-infinity', '2026-03-02', '{}', NULL, NULL, '{}', false),
    ('Z', 2, -7.125, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    ('é', 3, 100, 2.5, -0.5, '2026-03-03 00:00:00+00', '2026-03-03 00:00:00', '2026-03-03', '[1, "two"]',
     NULL, '\\x', '{}', NULL);
"""
# the types Debezium's events decode to (docs/decoding.md): variable-scale numeric -> DECIMAL(38,18), json and
# uuid as text, infinity as the largest value, real as FLOAT
SILVER_DDL = """
CREATE TABLE silver.zoo (region VARCHAR, n INTEGER, amount DECIMAL(38,18), ratio FLOAT, score DOUBLE,
    "at" TIMESTAMPTZ, "local" TIMESTAMP, day DATE, doc VARCHAR, ref VARCHAR, raw BLOB, tags VARCHAR[],
    flag BOOLEAN, __op VARCHAR, __seq BIGINT);
INSERT INTO silver.zoo VALUES
    ('B', 1, 1.5, 0.1, 0.1, TIMESTAMPTZ '2026-03-01 06:30:00+00', TIMESTAMP '2026-03-01 12:00:00',
     DATE '9999-12-31', '{"a":[1,2],"b":1}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00\\xFF'::BLOB,
     ['x', 'y'], true, 'r', 1),
    ('a', 1, 0, 0.001, 1e20, TIMESTAMPTZ '9999-12-31 23:59:59.999999+00', TIMESTAMP '0001-01-01 00:00:00',
     DATE '2026-03-02', '{}', NULL, NULL, [], false, 'r', 1),
    ('Z', 2, -7.125, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'r', 1),
    ('é', 3, 100.000, 2.5, -0.5, TIMESTAMPTZ '2026-03-03 00:00:00+00', TIMESTAMP '2026-03-03 00:00:00',
     DATE '2026-03-03', '[1,"two"]', NULL, ''::BLOB, [], NULL, 'r', 1);
INSERT INTO cdcwh.silver_tables VALUES ('zoo', 'shop.public.zoo', ['region', 'n']);
"""


def test_values_compare_by_meaning(postgres_dsn: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with fresh_database(postgres_dsn, shop=False) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SOURCE_DDL)
        con = open_warehouse(settings)
        con.execute(SILVER_DDL)
        con.close()

        result = reconcile(settings, source_dsn_override=dsn, ranges=4)
        zoo = result.table("zoo")
        assert zoo.method == "rows"  # jsonb, bytea, arrays, floats: compared in Python, every range
        assert zoo.ranges == 4  # one key each: the bounds are keys in byte order
        assert result.equal, zoo.differences

        con = open_warehouse(settings)
        con.execute('UPDATE silver.zoo SET "at" = "at" + INTERVAL 1 MICROSECOND WHERE region = \'B\'')
        con.execute("UPDATE silver.zoo SET doc = '{\"a\":[2,1],\"b\":1}' WHERE region = 'B'")
        con.execute("DELETE FROM silver.zoo WHERE region = 'é'")
        con.close()
        result = reconcile(settings, source_dsn_override=dsn, ranges=4)
        found = {(d.key_text, d.column, d.source, d.silver) for d in result.table("zoo").differences}
        assert found == {
            ("region=B, n=1", "at", "2026-03-01 06:30:00.000000Z", "2026-03-01 06:30:00.000001Z"),
            ("region=B, n=1", "doc", '{"a":[1,2],"b":1}', '{"a":[2,1],"b":1}'),
            ("region=é, n=3", "(row)", "(row present)", "(no row)"),
        }
