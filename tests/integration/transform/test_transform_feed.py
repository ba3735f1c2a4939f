"""The gold change feed (``<prefix>.gold.<mart>``), read back from the broker after a generated workload ran
through ingest and many small transform batches.

Replaying the feed (per key the highest version wins, a delete removes the key) must give exactly the gold
tables, ``_version`` included; per key, versions only grow in topic order; the message key is the JSON of the
mart's primary key; money travels as strings with two decimals.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cdcwh.config import Settings
from cdcwh.generate import SHOP_TABLES, ShopGenerator
from tests.integration.transform.scenario import (
    MONEY_TEXT,
    FeedMessage,
    column_types,
    gold_state,
    key_of,
    parse_row,
    query,
    read_feed,
    replay,
)
from tests.support.marts_reference import (
    MART_KEYS,
    compare_marts,
    customer_changes_from,
    reference_marts,
)
from tests.support.pipeline import run_ingest_until_caught_up, settings_for
from tests.support.warehouse import MARTS, produce_changes, read_marts, run_transform_once

PREFIX = f"tfeed{uuid.uuid4().hex[:6]}"  # fresh topics even on a long-lived external broker


@dataclass
class Fed:
    settings: Settings
    feed: dict[str, list[FeedMessage]]
    types: dict[str, dict[str, str]]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Fed]:
    base: Path = tmp_path_factory.mktemp("feed")
    settings = settings_for(base / "data", kafka_bootstrap, PREFIX)
    generator = ShopGenerator(8)
    changes = list(generator.changes(2000))
    produce_changes(kafka_bootstrap, PREFIX, changes)
    run_ingest_until_caught_up(settings)
    # small batches: many versions of the same keys, deletes included
    run_transform_once(settings, CDCWH_TRANSFORM__MAX_OFFSETS_PER_PARTITION="40")
    # the marts are right (so the feed is checked against correct tables)
    assert (
        compare_marts(
            read_marts(settings), reference_marts(generator.expected_state(), customer_changes_from(changes))
        )
        == []
    )
    feed = read_feed(kafka_bootstrap, settings.kafka.gold_topic_prefix)
    types = {mart: column_types(settings, f"gold.{mart}") for mart in MARTS}
    yield Fed(settings, feed, types)


def test_feed_is_not_trivial(fed: Fed) -> None:
    assert sorted(fed.feed) == sorted(MARTS)
    batches = query(fed.settings, "SELECT count(*) AS n FROM cdcwh.batches WHERE status = 'ok'")[0]["n"]
    assert batches >= 5
    messages = [m for ms in fed.feed.values() for m in ms]
    assert any(m.value["op"] == "delete" for m in messages)
    keys = [(m.mart, m.key_text) for m in messages]
    assert len(keys) - len(set(keys)) > 100, "keys should change in several batches"
    assert query(fed.settings, "SELECT count(*) AS n FROM cdcwh.outbox")[0]["n"] == 0


def test_replaying_the_feed_gives_the_gold_tables(fed: Fed) -> None:
    replayed = replay(fed.feed, fed.types)
    gold = gold_state(fed.settings, MARTS, with_version=True)
    for mart in MARTS:
        assert replayed[mart].keys() == gold[mart].keys(), mart
        for key, row in gold[mart].items():
            assert replayed[mart][key] == row, (mart, key)
            assert list(replayed[mart][key]) == list(row), (mart, key)  # column order too


def test_versions_grow_per_key_in_topic_order(fed: Fed) -> None:
    versions = {r["version"] for r in query(fed.settings, "SELECT version FROM cdcwh.batches")}
    for mart, messages in fed.feed.items():
        last: dict[str, tuple[int, int]] = {}
        for message in messages:
            assert message.version in versions  # a committed batch's version (not its id)
            seen = last.get(message.key_text)
            if seen is not None:
                partition, version = seen
                assert message.partition == partition, f"{mart} {message.key_text} moved partitions"
                assert message.version > version, (
                    f"{mart} {message.key_text}: {message.version} after {version}"
                )
            last[message.key_text] = (message.partition, message.version)


def test_message_shape(fed: Fed) -> None:
    for mart, messages in fed.feed.items():
        types = fed.types[mart]
        columns = [c for c in types if c not in ("_version", "_updated_at")]
        money = [c for c in columns if types[c].startswith("DECIMAL")]
        for message in messages:
            value = message.value
            assert set(value) == {"mart", "op", "version", "source_ts_ms", "key", "row"}
            assert value["mart"] == mart and message.topic == f"{PREFIX}.gold.{mart}"
            assert isinstance(value["source_ts_ms"], int)
            # the Kafka key is the JSON of the primary key, columns in key order
            assert list(value["key"]) == list(MART_KEYS[mart])
            assert message.key_text == json.dumps(value["key"], separators=(",", ":"))
            if value["op"] == "delete":
                assert value["row"] is None
                continue
            assert value["op"] == "upsert"
            row: dict[str, Any] = value["row"]
            assert list(row) == columns
            assert {k: row[k] for k in MART_KEYS[mart]} == value["key"]
            for column in money:
                assert isinstance(row[column], str) and MONEY_TEXT.match(row[column]), (
                    mart,
                    column,
                    row[column],
                )
            assert key_of(mart, parse_row(types, row)) == key_of(mart, parse_row(types, value["key"]))
    assert any(c.startswith("DECIMAL") for types in fed.types.values() for c in types.values()), (
        "some mart carries money"
    )


def test_changes_carry_source_times_of_their_batch(fed: Fed) -> None:
    """A batch's gold changes are stamped with a sample of its changes' source commit times (for the sink's
    freshness histogram), not all with the oldest one."""
    by_version: dict[int, list[int]] = {}
    for messages in fed.feed.values():
        for message in messages:
            by_version.setdefault(message.version, []).append(message.value["source_ts_ms"])
    bounds = query(
        fed.settings,
        "SELECT epoch_ms(min(__source_ts)) AS low, epoch_ms(max(__source_ts)) AS high FROM ("
        + " UNION ALL ".join(f"SELECT __source_ts FROM silver_history.{t}" for t in SHOP_TABLES)
        + ")",
    )[0]
    largest = max(by_version.values(), key=len)
    assert len(set(largest)) > 1
    for stamps in by_version.values():
        assert all(bounds["low"] <= ts <= bounds["high"] for ts in stamps)
