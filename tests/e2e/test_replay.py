"""Operator replays leave the PostgreSQL marts as they were (DESIGN.md section 8). The services and the
replays run in-process, through the functions ``cdcwh replay ...`` calls, asserting on what they return.

One pipeline state (generator -> broker -> ingest -> transform -> sink), snapshotted from Postgres, then:
replaying a whole source topic, rebuilding silver/gold from bronze, the batch backfill (also over a
corrupted Postgres), and re-consuming every old gold change with a fresh sink group each leave the marts
identical, ``_version`` included. Finally ``replay quarantine`` lands records quarantined by a contract that
was then relaxed, exactly once, and they reach the marts.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, Producer
from psycopg import sql

from cdcwh.bronze.catalog import open_catalog
from cdcwh.cli import build_parser
from cdcwh.commands.replay import run as replay_command
from cdcwh.config import PROJECT_ROOT, Settings
from cdcwh.generate import ShopGenerator, SourceChange
from cdcwh.replay.backfill import backfill
from cdcwh.replay.quarantine import reingested, replay_quarantine
from cdcwh.replay.rebuild import rebuild
from cdcwh.replay.topic import replay_topic
from tests.support.marts import Marts, differences, gold_marts, pg_marts, read_topics
from tests.support.marts_reference import compare_marts, customer_changes_from, reference_marts
from tests.support.pipeline import (
    bronze,
    env_overrides,
    quarantine,
    run_ingest_until_caught_up,
    run_sink_until_caught_up,
)
from tests.support.warehouse import MARTS, produce_changes, run_transform_once

CONTRACTS = PROJECT_ROOT / "schemas" / "contracts"
ENTERPRISE_ID = 900_001


def gold_topics(bootstrap: str, gold_prefix: str) -> list[str]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "list"})
    try:
        return sorted(t for t in consumer.list_topics(timeout=10).topics if t.startswith(gold_prefix + "."))
    finally:
        consumer.close()


def republish_gold(bootstrap: str, gold_prefix: str) -> tuple[int, int]:
    """Produce again, to the same partition, every gold change that is not the last of its key (so each
    republished one is older than what its key holds); returns the messages read and republished."""
    topics = gold_topics(bootstrap, gold_prefix)
    assert len(topics) == len(MARTS)
    messages = read_topics(bootstrap, topics)
    last = {(m.topic(), m.key()): (m.partition(), m.offset()) for m in messages}
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    republished = 0
    for message in messages:
        if last[(message.topic(), message.key())] != (message.partition(), message.offset()):
            producer.produce(message.topic(), message.value(), message.key(), partition=message.partition())
            producer.poll(0)
            republished += 1
    assert producer.flush(30) == 0
    return len(messages), republished


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {name: n for name, n in counts.items() if n}


# ---- the scenario ------------------------------------------------------------------------------------------


def install_contracts(directory: Path, prefix: str) -> Path:
    """The shop contracts, rewritten for topics ``<prefix>.public.<table>``."""
    directory.mkdir(parents=True)
    for path in CONTRACTS.glob("shop.public.*.toml"):
        text = path.read_text()
        assert 'topic = "shop.public.' in text
        text = text.replace('topic = "shop.public.', f'topic = "{prefix}.public.')
        (directory / path.name.replace("shop.", f"{prefix}.", 1)).write_text(text)
    return directory


def enterprise_customer(changes: list[SourceChange]) -> list[SourceChange]:
    """A new customer in segment "enterprise" (not accepted by the contract), created then re-addressed."""
    template = next(c for c in changes if c.table == "customers" and c.op == "c")
    lsn = max(c.lsn for c in changes)
    ts_ms = max(c.ts_ms for c in changes)
    after = dict(template.after or {}, id=ENTERPRISE_ID, segment="enterprise", email="big@example.com")
    created = dataclasses.replace(
        template, key={"id": ENTERPRISE_ID}, after=after, lsn=lsn + 100, ts_ms=ts_ms + 1000, tx_id=10**6
    )
    updated = dataclasses.replace(
        created,
        op="u",
        after=dict(after, email="bigger@example.com"),
        lsn=lsn + 200,
        ts_ms=ts_ms + 2000,
        tx_id=10**6 + 1,
        last_commit_lsn=lsn + 100,
    )
    return [created, updated]


def test_replays_leave_postgres_identical(
    tmp_path: Path,
    pipeline_settings: Settings,
    kafka_bootstrap: str,
    postgres_dsn: str,
    pg_schema: str,
    unique_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    prefix, schema = unique_prefix, pg_schema
    contracts = install_contracts(tmp_path / "contracts", prefix)
    models = tmp_path / "sql"
    shutil.copytree(PROJECT_ROOT / "sql", models)
    settings = env_overrides(
        pipeline_settings,
        CDCWH_POSTGRES__DSN=postgres_dsn,
        CDCWH_POSTGRES__SCHEMA=schema,
        CDCWH_CONTRACTS_DIR=str(contracts),
        CDCWH_SQL_DIR=str(models),
    )
    generator = ShopGenerator(11)
    changes = list(generator.changes(2000))
    rejected = enterprise_customer(changes)
    produce_changes(kafka_bootstrap, prefix, changes + rejected)
    run_ingest_until_caught_up(settings)
    # small batches: gold holds several versions of many keys, so the gold topics carry old changes
    run_transform_once(settings, CDCWH_TRANSFORM__MAX_OFFSETS_PER_PARTITION="80")
    run_sink_until_caught_up(settings)

    customers_topic, orders_topic = f"{prefix}.public.customers", f"{prefix}.public.orders"
    quarantined = quarantine(settings).to_pylist()
    assert [(q["topic"], q["reason"]) for q in quarantined] == [(customers_topic, "contract_violation")] * 2
    snapshot = pg_marts(postgres_dsn, schema)
    assert all(snapshot[m] for m in MARTS)
    assert snapshot == gold_marts(settings)
    expected = reference_marts(generator.expected_state(), customer_changes_from(changes))
    assert compare_marts(snapshot, expected) == []
    versions = {row["_version"] for mart in MARTS for row in snapshot[mart]}
    assert len(versions) >= 3, versions

    # (a) a whole source topic again: everything is already in bronze, nothing lands, marts unchanged
    orders_rows = bronze(settings, orders_topic).num_rows
    totals = replay_topic(settings, orders_topic)
    assert totals["landed"] == 0 and totals["quarantined"] == 0
    assert totals["skipped"] == orders_rows and totals["read"] >= orders_rows > 0
    assert bronze(settings, orders_topic).num_rows == orders_rows
    run_transform_once(settings)
    run_sink_until_caught_up(settings)
    assert differences(pg_marts(postgres_dsn, schema), snapshot) == []

    # (b) rebuild silver and gold from bronze, all tables then one: gold identical, no change to publish
    gold = gold_marts(settings)
    counts = rebuild(settings)
    assert counts["gold changes"] == 0
    assert counts["orders"] > 0 and counts["customers"] > 0 and counts["payments"] > 0
    assert differences(gold_marts(settings), gold) == []
    counts = rebuild(settings, ["orders"])
    assert counts["orders"] > 0 and counts["gold changes"] == 0 and "customers" not in counts
    assert differences(gold_marts(settings), gold) == []
    run_sink_until_caught_up(settings)
    assert differences(pg_marts(postgres_dsn, schema), snapshot) == []

    # (c) the batch backfill, on the healthy marts and then on corrupted ones
    backfill(settings)
    assert differences(pg_marts(postgres_dsn, schema), snapshot) == []
    corrupt(postgres_dsn, schema, snapshot)
    assert differences(pg_marts(postgres_dsn, schema), snapshot) != []
    backfill(settings)
    assert differences(pg_marts(postgres_dsn, schema), snapshot) == []

    # (d) old gold changes again: published a second time at the end of the gold topics (so, without the
    # version guard, the last change of many keys would be an old one), then the whole topics re-read from
    # offset 0 by a new sink group, in batches small enough that the old tail is not merged with the
    # newer changes of its keys before Postgres sees it: nothing regresses
    read, old_changes = republish_gold(kafka_bootstrap, settings.kafka.gold_topic_prefix)
    assert old_changes > 100
    with caplog.at_level(logging.INFO, logger="cdcwh.sink.service"):
        caplog.clear()  # the earlier sink runs' records as well, when a test before this one left INFO on
        run_sink_until_caught_up(
            settings, CDCWH_KAFKA__GROUP_PREFIX=f"{prefix}-again", CDCWH_SINK__BATCH_MAX_ROWS="500"
        )
    # the messages of each applied batch, as the sink counted them (the log record's arguments)
    batches = [
        int(record.args[1])  # type: ignore[index]
        for record in caplog.records
        if record.name == "cdcwh.sink.service" and record.msg.startswith("applied %d gold changes")
    ]
    assert sum(batches) == read + old_changes and len(batches) >= 4
    assert differences(pg_marts(postgres_dsn, schema), snapshot) == []

    # quarantine: relax the contract, re-ingest, rebuild; the customer reaches Postgres, exactly once
    customers_rows = bronze(settings, customers_topic).num_rows
    contract = contracts / f"{customers_topic}.toml"
    relaxed = contract.read_text().replace('"home_office"]', '"home_office", "enterprise"]')
    assert relaxed != contract.read_text()
    contract.write_text(relaxed)
    # the segment's data quality tests accept the new value too, as an operator widening the domain would do;
    # otherwise the gate holds customers and dim_customers (tests/integration/quality covers that path)
    for tests in ("silver/customers.yml", "gold/customers.yml", "gold/dim_customers.yml"):
        path = models / tests
        widened = path.read_text().replace("home_office]", "home_office, enterprise]")
        assert widened != path.read_text()
        path.write_text(widened)
    catalog = open_catalog(settings)
    assert reingested(catalog, settings.iceberg.namespace, quarantine(settings)) == set()  # all outstanding
    # the command, which re-ingests and then rebuilds the tables that received records
    assert replay_command(build_parser().parse_args(["replay", "quarantine"]), settings) == 0
    # what `cdcwh status` shows as re-ingested: the two records, now in bronze
    done = reingested(catalog, settings.iceberg.namespace, quarantine(settings))
    assert {(topic, offset) for topic, _, offset in done} == {
        (row["topic"], row["offset"]) for row in quarantine(settings).to_pylist()
    } and len(done) == 2
    assert bronze(settings, customers_topic).num_rows == customers_rows + 2
    gold = gold_marts(settings)
    [enterprise] = [r for r in gold["customers"] if r["customer_id"] == ENTERPRISE_ID]
    assert enterprise["segment"] == "enterprise" and enterprise["email"] == "bigger@example.com"
    history = [r for r in gold["dim_customers"] if r["customer_id"] == ENTERPRISE_ID]
    assert [(r["version"], r["email"], r["is_current"]) for r in history] == [
        (1, "big@example.com", False),
        (2, "bigger@example.com", True),
    ]
    run_sink_until_caught_up(settings)
    after = pg_marts(postgres_dsn, schema)
    assert after == gold
    new_rows = differences(after, snapshot)
    assert new_rows and all(f"'customer_id': {ENTERPRISE_ID}," in d for d in new_rows), new_rows

    result = replay_quarantine(settings)
    assert nonzero(result["landed"]) == {}  # type: ignore[arg-type]
    assert nonzero(result["already_in_bronze"]) == {customers_topic: 2}  # type: ignore[arg-type]
    assert bronze(settings, customers_topic).num_rows == customers_rows + 2
    assert len(quarantine(settings)) == 2  # quarantine keeps its records (the audit trail)


def corrupt(dsn: str, schema: str, snapshot: Marts) -> None:
    """Rows deleted, an amount changed, a stray row with a low ``_version``."""
    lowest = min(row["_version"] for row in snapshot["orders"])
    with psycopg.connect(dsn) as conn:
        conn.execute(
            sql.SQL(
                "DELETE FROM {} WHERE order_id IN (SELECT order_id FROM {} ORDER BY order_id LIMIT 3)"
            ).format(sql.Identifier(schema, "orders"), sql.Identifier(schema, "orders"))
        )
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE order_item_id % 7 = 0").format(
                sql.Identifier(schema, "fact_order_items")
            )
        )
        conn.execute(
            sql.SQL("UPDATE {} SET amount = amount + 1 WHERE order_id = %s").format(
                sql.Identifier(schema, "orders")
            ),
            (snapshot["orders"][-1]["order_id"],),
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (order_id, customer_id, order_date, status, credit_card_amount, "
                "coupon_amount, bank_transfer_amount, gift_card_amount, amount, _version, _updated_at) "
                "VALUES (%s, 1, '2020-01-01', 'placed', 5, 0, 0, 0, 5, %s, now())"
            ).format(sql.Identifier(schema, "orders")),
            (10**9, lowest),
        )
