"""`cdcwh generate` against a real broker: read back with a plain confluent-kafka consumer and checked against
the Debezium format, per-key order, tombstones, and the generator's expected final state.

The Debezium decoding here is written independently of cdcwh.core, from the Debezium documentation.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.support.kafka_readback import read_to_end

TABLES = ("customers", "products", "orders", "order_items", "payments")
PLACEHOLDER = "__debezium_unavailable_value"


def consume_all(bootstrap: str, prefix: str) -> list[Any]:
    return read_to_end(bootstrap, prefix=prefix + ".")


def decode_field(value: Any, schema: dict[str, Any]) -> Any:
    """Debezium/Kafka Connect semantic types, per the Debezium PostgreSQL connector documentation."""
    if value is None or value == PLACEHOLDER:
        return value
    name = schema.get("name")
    if name == "org.apache.kafka.connect.data.Decimal":
        unscaled = int.from_bytes(base64.b64decode(value), "big", signed=True)
        return Decimal(unscaled).scaleb(-int(schema["parameters"]["scale"]))
    if name == "io.debezium.time.Date":
        return date(1970, 1, 1) + timedelta(days=value)
    if name == "io.debezium.time.MicroTimestamp":
        return datetime(1970, 1, 1) + timedelta(microseconds=value)  # noqa: DTZ001 - timestamp without tz
    if name == "io.debezium.time.ZonedTimestamp":
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    return value


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("gen")
    prefix = "gen1"
    env = {
        "CDCWH_DATA_DIR": str(tmp / "data"),
        "CDCWH_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "PATH": "/usr/bin:/bin",
    }
    expected_path = tmp / "expected.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cdcwh.cli",
            "generate",
            "--events",
            "10000",
            "--seed",
            "1",
            "--partitions",
            "3",
            "--topic-prefix",
            prefix,
            "--expected-state",
            str(expected_path),
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return {
        "messages": consume_all(kafka_bootstrap, prefix),
        "expected": json.loads(expected_path.read_text()),
        "prefix": prefix,
    }


def test_every_table_has_a_topic_and_change_events_add_up(generated: dict[str, Any]) -> None:
    messages = generated["messages"]
    topics = {m.topic() for m in messages}
    assert topics == {f"{generated['prefix']}.public.{t}" for t in TABLES}
    changes = [m for m in messages if m.value() is not None]
    assert len(changes) == 10_000
    deletes = [m for m in changes if json.loads(m.value())["payload"]["op"] == "d"]
    tombstones = [m for m in messages if m.value() is None]
    assert deletes, "the workload includes deletes"
    assert len(tombstones) == len(deletes)


def test_envelope_and_source_block(generated: dict[str, Any]) -> None:
    for m in generated["messages"][:2000]:
        key = json.loads(m.key())
        assert set(key) == {"schema", "payload"}
        assert key["schema"]["type"] == "struct"
        if m.value() is None:
            continue
        value = json.loads(m.value())
        assert set(value) == {"schema", "payload"}
        payload = value["payload"]
        assert payload["op"] in {"r", "c", "u", "d"}
        source = payload["source"]
        assert source["connector"] == "postgresql"
        assert isinstance(source["snapshot"], str)
        assert source["snapshot"] in {"true", "last", "false"}
        assert source["table"] == m.topic().rsplit(".", 1)[1]
        assert isinstance(source["lsn"], int) and isinstance(source["txId"], int)
        assert payload["ts_ms"] >= source["ts_ms"]
        fields = {f["field"] for f in value["schema"]["fields"]}
        assert {"before", "after", "source", "op", "ts_ms"} <= fields


def test_snapshot_comes_first_and_ends_with_last(generated: dict[str, Any]) -> None:
    changes = [json.loads(m.value())["payload"] for m in generated["messages"] if m.value() is not None]
    changes.sort(key=lambda p: p["source"]["lsn"])
    ops = [p["op"] for p in changes]
    first_streaming = next(i for i, op in enumerate(ops) if op != "r")
    assert set(ops[:first_streaming]) == {"r"}
    assert "r" not in ops[first_streaming:]
    markers = [p["source"]["snapshot"] for p in changes[:first_streaming]]
    assert markers[-1] == "last" and set(markers[:-1]) == {"true"}
    assert {p["source"]["snapshot"] for p in changes[first_streaming:]} == {"false"}


def test_one_partition_per_key_and_per_key_order(generated: dict[str, Any]) -> None:
    partitions: dict[tuple[str, bytes], set[int]] = defaultdict(set)
    last_lsn: dict[tuple[str, bytes], int] = {}
    by_partition = sorted(generated["messages"], key=lambda m: (m.topic(), m.partition(), m.offset()))
    previous: dict[tuple[str, bytes], Any] = {}
    for m in by_partition:
        key = (m.topic(), m.key())
        partitions[key].add(m.partition())
        if m.value() is None:
            before = previous.get(key)
            assert before is not None and json.loads(before.value())["payload"]["op"] == "d", (
                "tombstone after delete"
            )
        else:
            lsn = json.loads(m.value())["payload"]["source"]["lsn"]
            assert lsn > last_lsn.get(key, -1), "per-key order follows the source LSN"
            last_lsn[key] = lsn
        previous[key] = m
    assert all(len(p) == 1 for p in partitions.values())


def test_toast_placeholder_only_on_product_updates(generated: dict[str, Any]) -> None:
    seen = 0
    for m in generated["messages"]:
        if m.value() is None:
            continue
        payload = json.loads(m.value())["payload"]
        after = payload.get("after") or {}
        if PLACEHOLDER in after.values():
            seen += 1
            assert m.topic().endswith(".products") and payload["op"] == "u"
            assert [k for k, v in after.items() if v == PLACEHOLDER] == ["description"]
    assert seen > 0


def test_replaying_the_topics_reproduces_the_expected_state(generated: dict[str, Any]) -> None:
    state: dict[str, dict[Any, dict[str, Any]]] = {t: {} for t in TABLES}
    changes = []
    for m in generated["messages"]:
        if m.value() is not None:
            changes.append(json.loads(m.value()))
    changes.sort(key=lambda v: v["payload"]["source"]["lsn"])
    for value in changes:
        payload = value["payload"]
        table = payload["source"]["table"]
        after_schema = next(f for f in value["schema"]["fields"] if f["field"] == "after")
        types = {f["field"]: f for f in after_schema["fields"]}
        image = payload["after"] or payload["before"]
        key = image["id"]
        if payload["op"] == "d":
            del state[table][key]
            continue
        row = {name: decode_field(v, types[name]) for name, v in payload["after"].items()}
        old = state[table].get(key, {})
        state[table][key] = {k: (old[k] if v == PLACEHOLDER else v) for k, v in row.items()}
    expected = generated["expected"]
    for table in TABLES:
        want = {row["id"]: row for row in expected[table]}
        got = state[table]
        assert set(got) == set(want), table
        for key, row in got.items():
            for column, value in row.items():
                exp = want[key][column]
                if isinstance(value, Decimal):
                    assert value == Decimal(exp), (table, key, column)
                elif isinstance(value, datetime | date):
                    assert value.isoformat() == exp, (table, key, column)
                else:
                    assert value == exp, (table, key, column)


def test_generate_to_jsonl_is_deterministic(tmp_path: Path) -> None:
    outputs = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.jsonl"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cdcwh.cli",
                "generate",
                "--events",
                "500",
                "--seed",
                "7",
                "--output",
                str(path),
            ],
            check=True,
            capture_output=True,
            timeout=120,
            env={"PATH": "/usr/bin:/bin", "CDCWH_DATA_DIR": str(tmp_path)},
        )
        outputs.append(path.read_bytes())
    assert outputs[0] == outputs[1]
    assert len(outputs[0].splitlines()) >= 500
