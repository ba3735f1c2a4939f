"""``cdcwh status`` against real parts: the session broker (embedded Tansu unless configured), a real Iceberg
catalog and DuckDB file, the session PostgreSQL.

The records of a real Debezium capture are produced to a one-partition topic in one batch (after which the
embedded broker's ListOffsets answers a stale end), landed in bronze by the real writer and applied to silver
by the transform. The status must report the true end, a healthy pipeline (exit 0), lag once more records
arrive (exit 1) and, with the broker gone, every other part still (exit 2). A PostgreSQL mart named like rich
markup must come out verbatim in JSON and in the table. ``cdcwh status`` runs through the CLI's ``main`` in
the test process (its environment patched), ``cdcwh replay rebuild`` as a subprocess; tests/e2e/test_cli.py
runs ``cdcwh status`` as a user does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from psycopg import sql

from cdcwh import redaction
from cdcwh.bronze.catalog import open_catalog
from cdcwh.cli import main
from cdcwh.config import Settings
from cdcwh.core.record import RawRecord
from cdcwh.ingest.bronze import IcebergBronzeWriter
from cdcwh.kafka import client_config, ensure_topics, producer_config
from cdcwh.overview.status import Thresholds, collect_status
from cdcwh.transform.service import TransformService
from tests.support.debezium import captured

MARKUP_MART = "[b]abc[/b] x[/]"


@dataclass
class Pipeline:
    settings: Settings
    env: dict[str, str]
    topic: str
    records: list[RawRecord]
    capsys: pytest.CaptureFixture[str]

    def produce(self, records: list[RawRecord]) -> None:
        """Produce in one batch, flushed once: the case where the embedded broker's ListOffsets is stale."""
        producer = Producer(producer_config(self.settings))
        for record in records:
            producer.produce(self.topic, key=record.key, value=record.value, partition=0)
        assert producer.flush(30) == 0

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``cdcwh status ARGS`` through the CLI's ``main`` in this process, in ``env`` (the ``CDCWH_*``
        variables of the test process replaced): its exit code, stdout and stderr."""
        with pytest.MonkeyPatch.context() as patch:
            for name in [n for n in os.environ if n.startswith("CDCWH_")]:
                patch.delenv(name)
            for name, value in (env or self.env).items():
                if name.startswith("CDCWH_"):
                    patch.setenv(name, value)
            self.capsys.readouterr()
            try:
                code = main(["status", *args])
            finally:
                redaction.forget_secrets()  # what main() registered
            out = self.capsys.readouterr()
        return subprocess.CompletedProcess(["cdcwh", "status", *args], code, out.out, out.err)


@pytest.fixture
def pipeline(
    tmp_path: Path,
    kafka_bootstrap: str,
    postgres_dsn: str,
    unique_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Pipeline]:
    topic = f"{unique_prefix}.public.type_zoo"
    schema = f"marts_{uuid.uuid4().hex[:8]}"
    (tmp_path / "sql" / "gold").mkdir(parents=True)  # no gold models: nothing can be behind
    values: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "sql_dir": str(tmp_path / "sql"),
        "kafka": {
            "bootstrap_servers": kafka_bootstrap,
            "topics": rf"^{unique_prefix}\.",
            "gold_topic_prefix": f"{unique_prefix}.gold",
            "group_prefix": unique_prefix,
        },
        "postgres": {"dsn": postgres_dsn, "schema": schema},
    }
    settings = Settings(**values)
    records = [
        RawRecord(topic, r.partition, r.offset, r.timestamp_ms, r.key, r.value) for r in captured("type_zoo")
    ]
    ensure_topics(AdminClient(client_config(settings)), [topic], 1)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, _updated_at timestamptz)").format(
                sql.Identifier(schema, MARKUP_MART)
            )
        )
        conn.execute(sql.SQL("INSERT INTO {} VALUES (1, now())").format(sql.Identifier(schema, MARKUP_MART)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDCWH_")}
    env.update(
        CDCWH_DATA_DIR=values["data_dir"],
        CDCWH_SQL_DIR=values["sql_dir"],
        CDCWH_KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap,
        CDCWH_KAFKA__TOPICS=values["kafka"]["topics"],
        CDCWH_KAFKA__GOLD_TOPIC_PREFIX=values["kafka"]["gold_topic_prefix"],
        CDCWH_KAFKA__GROUP_PREFIX=unique_prefix,
        CDCWH_POSTGRES__DSN=postgres_dsn,
        CDCWH_POSTGRES__SCHEMA=schema,
    )
    pipeline = Pipeline(settings, env, topic, records, capsys)
    pipeline.produce(records)
    writer = IcebergBronzeWriter(
        open_catalog(settings), settings.iceberg.namespace, {}, max_value_bytes=1 << 24
    )
    assert not writer.land(records).quarantined
    TransformService(settings).run_once()
    try:
        yield pipeline
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_status_in_process(pipeline: Pipeline) -> None:
    n = len(pipeline.records)
    status = collect_status(pipeline.settings)
    assert [(p.name, p.reachable) for p in status.parts] == [
        ("kafka", True),
        ("bronze", True),
        ("warehouse", True),
        ("postgres", True),
    ]
    [lag] = status.source
    assert (lag.topic, lag.partition, lag.end, lag.in_bronze, lag.in_silver, lag.behind) == (
        pipeline.topic,
        0,
        n,
        n,
        n,
        0,
    )
    [silver] = status.silver
    assert silver.name == "type_zoo" and silver.rows > 0 and silver.newest_source_commit is not None
    assert [m.name for m in status.marts] == [MARKUP_MART] and status.marts[0].rows == 1
    assert status.health is not None and status.health.code == 0, status.health

    pipeline.produce(pipeline.records[:3])  # three records ingest has not landed
    lagging = collect_status(pipeline.settings, Thresholds(max_lag=2))
    [lag] = lagging.source
    assert (lag.end, lag.to_ingest, lag.behind) == (n + 3, 3, 3)
    assert lagging.health is not None and lagging.health.code == 1
    assert any(pipeline.topic in p and "3 records behind" in p for p in lagging.health.problems)
    within = collect_status(pipeline.settings, Thresholds(max_lag=3, max_staleness_s=3600))
    assert within.health is not None and within.health.code == 0, within.health


def test_status_cli_json_exit_codes_and_verbatim_values(pipeline: Pipeline) -> None:
    n = len(pipeline.records)
    healthy = pipeline.cli("--format", "json")
    assert healthy.returncode == 0, healthy.stderr[-3000:]
    document = json.loads(healthy.stdout)
    assert document["health"] == {"code": 0, "state": "healthy", "problems": []}
    [lag] = document["source"]
    assert (lag["topic"], lag["end"], lag["in_bronze"], lag["in_silver"]) == (pipeline.topic, n, n, n)
    assert [m["name"] for m in document["marts"]] == [MARKUP_MART]

    pipeline.produce(pipeline.records[:2])
    lagging = pipeline.cli("--format", "json", "--max-lag", "1")
    assert lagging.returncode == 1, lagging.stderr[-3000:]
    assert json.loads(lagging.stdout)["source"][0]["end"] == n + 2

    # the broker gone (an embedded one that is not running): every other part is still reported
    env = {k: v for k, v in pipeline.env.items() if k != "CDCWH_KAFKA__BOOTSTRAP_SERVERS"}
    down = pipeline.cli("--format", "json", env=env)
    assert down.returncode == 2, down.stderr[-3000:]
    document = json.loads(down.stdout)
    parts = {p["name"]: p for p in document["parts"]}
    assert not parts["kafka"]["reachable"] and "no Kafka broker" in parts["kafka"]["error"]
    assert all(parts[name]["reachable"] for name in ("bronze", "warehouse", "postgres"))
    [lag] = document["source"]
    assert (lag["end"], lag["in_bronze"], lag["in_silver"]) == (None, n, n)
    assert [m["name"] for m in document["marts"]] == [MARKUP_MART]
    assert document["health"]["code"] == 2

    table = pipeline.cli(env=env)
    assert table.returncode == 2
    assert MARKUP_MART in table.stdout
    # piped: the Kafka error stays on one line, longer than 80 columns
    lines = [line for line in table.stdout.splitlines() if "no Kafka broker" in line]
    assert lines and all(len(line) > 80 and "set the variable" in line for line in lines), table.stdout


def test_replay_rebuild_prints_one_json_document(pipeline: Pipeline) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cdcwh.cli", "replay", "rebuild", "--format", "json"],
        env=pipeline.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rebuilt = json.loads(result.stdout)["rebuild"]  # stdout is the document alone: progress is on stderr
    status = collect_status(pipeline.settings)
    [silver] = status.silver
    changes = [r for r in pipeline.records if r.value is not None]  # tombstones are not changes
    assert rebuilt[silver.name] == len(changes) and silver.rows > 0
