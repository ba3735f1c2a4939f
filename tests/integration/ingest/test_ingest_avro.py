"""Avro topics through the bronze writer and the transform, with the schema registry asked over HTTP.

The records are the real output of Confluent's AvroConverter in the Debezium 3.6.3 engine
(tests/fixtures/debezium/type_zoo_avro.jsonl) and the JsonConverter's output of the same workload
(type_zoo.jsonl). The registry is **a test stand-in** (tests/support/schema_registry_standin.py: no registry
server installs here) holding the schemas the converter registered; cdcwh asks it with confluent-kafka's real
``SchemaRegistryClient``. The bronze writer and the transform run in-process against a real Iceberg
SqlCatalog and a real DuckDB file.
"""

from __future__ import annotations

import base64
import socket
from pathlib import Path
from typing import Any

import pytest

from cdcwh.bronze.catalog import QUARANTINE_TABLE, bronze_table_name, open_catalog
from cdcwh.config import SchemaRegistrySettings, Settings
from cdcwh.core import avro_batch
from cdcwh.core.record import RawRecord, RejectReason
from cdcwh.errors import TransientError
from cdcwh.ingest.bronze import IcebergBronzeWriter
from cdcwh.models import load_models
from cdcwh.schema_registry import RegistrySchemas
from cdcwh.transform.batch import run_batch
from cdcwh.warehouse import open_warehouse
from tests.support.avro_fixtures import captured_avro
from tests.support.debezium import captured, table_rows
from tests.support.schema_registry_standin import RegistryState, schema_registry_standin

TOPIC = "zoo.public.type_zoo"
# what differs between the two captures: the database name and the source positions and clocks
VARYING = {"__db", "__lsn", "__tx_id", "__source_ts", "__source_ts_ns", "__ingested_at"}


def registry_state() -> RegistryState:
    _, schemas = captured_avro("type_zoo_avro")
    state = RegistryState()
    for schema_id, text in sorted(schemas.by_id.items()):
        assert text is not None
        assert state.register(f"{TOPIC}-{'key' if schema_id == 1 else 'value'}", text) == schema_id
    return state


def writer(tmp_path: Path, registry_url: str | None) -> tuple[IcebergBronzeWriter, Settings]:
    settings = Settings(
        data_dir=tmp_path / "data",
        kafka={"topics": r"^zoo\.[^.]+\.[^.]+$"},
        schema_registry={"url": registry_url},
    )
    registry = RegistrySchemas(settings.schema_registry)
    bronze = IcebergBronzeWriter(
        open_catalog(settings), settings.iceberg.namespace, {}, max_value_bytes=10_000_000, registry=registry
    )
    return bronze, settings


def silver_rows(tmp_path: Path, records: list[RawRecord], registry_url: str | None) -> list[dict[str, Any]]:
    """Land ``records``, run the transform until bronze is drained, return silver.type_zoo by id."""
    bronze, settings = writer(tmp_path, registry_url)
    assert bronze.land(records).quarantined == []
    (tmp_path / "gold").mkdir()
    con = open_warehouse(settings)
    try:
        catalog = open_catalog(settings)
        while run_batch(
            settings, con, catalog, load_models(tmp_path / "gold"), max_offsets_per_partition=1000
        ).batch_id:
            pass
        cursor = con.execute("SELECT * FROM silver.type_zoo ORDER BY id")
        names = [d[0] for d in cursor.description or ()]
        rows = cursor.fetchall()
    finally:
        con.close()
    # repr: NaN != NaN, but its repr is stable
    return [{k: repr(v) for k, v in zip(names, row, strict=True) if k not in VARYING} for row in rows]


@pytest.mark.parametrize("in_blocks", [False, True], ids=["record-at-a-time", "block-reader"])
def test_silver_from_the_avro_capture_equals_silver_from_the_json_capture(
    tmp_path: Path, in_blocks: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through both Avro paths: the capture's 13 values are one chunk, below the block reader's minimum
    unless the test lowers it (``cdcwh.core.avro_batch``)."""
    monkeypatch.setattr(avro_batch, "MIN_RECORDS", 1 if in_blocks else 10**9)
    records, _ = captured_avro("type_zoo_avro")
    with schema_registry_standin(registry_state()) as (url, _):
        avro = silver_rows(tmp_path / "avro", records, url)
    json_rows = silver_rows(tmp_path / "json", captured("type_zoo"), None)
    assert len(json_rows) == 9  # ids 1-10 but the deleted 8
    assert avro == json_rows


def test_an_unreachable_registry_is_retried_and_lands_nothing_until_it_answers(tmp_path: Path) -> None:
    records, _ = captured_avro("type_zoo_avro")
    state = registry_state()
    state.fail_with = 503
    with schema_registry_standin(state) as (url, _):
        bronze, settings = writer(tmp_path, url)
        with pytest.raises(TransientError, match="503"):
            bronze.land(records)
        catalog = open_catalog(settings)
        namespace = settings.iceberg.namespace
        assert not catalog.table_exists((namespace, bronze_table_name(TOPIC)))
        assert not catalog.table_exists((namespace, QUARANTINE_TABLE))
        state.fail_with = None  # the registry is back: the same batch lands whole
        result = bronze.land(records)
    assert result.quarantined == [] and result.landed == {TOPIC: 14}


def test_a_refused_connection_is_a_transient_error(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    records, _ = captured_avro("type_zoo_avro")
    bronze, settings = writer(tmp_path, f"http://127.0.0.1:{port}")
    with pytest.raises(TransientError, match="unreachable"):
        bronze.land(records)
    assert not open_catalog(settings).table_exists((settings.iceberg.namespace, bronze_table_name(TOPIC)))


def test_unknown_ids_and_a_missing_registry_are_quarantined_with_their_bytes(tmp_path: Path) -> None:
    records, _ = captured_avro("type_zoo_avro")
    with schema_registry_standin() as (url, _):  # an empty registry: it knows no id
        bronze, settings = writer(tmp_path, url)
        result = bronze.land(records[:3])
    assert [r.reason for r in result.quarantined] == [RejectReason.UNKNOWN_SCHEMA] * 3
    quarantine = table_rows(settings, QUARANTINE_TABLE)
    assert sorted(quarantine["value"].to_pylist()) == sorted(r.value for r in records[:3])
    assert all("schema id 2" in d for d in quarantine["detail"].to_pylist())

    unconfigured, _ = writer(tmp_path / "other", None)
    rejected = unconfigured.land(records[:1]).quarantined
    assert [r.reason for r in rejected] == [RejectReason.UNKNOWN_SCHEMA]
    assert "CDCWH_SCHEMA_REGISTRY__URL" in rejected[0].detail


def test_registry_settings_reach_the_client_with_basic_auth() -> None:
    state = RegistryState()
    schema_id = state.register("t-value", '{"type": "string"}')
    with schema_registry_standin(state) as (url, _):
        settings = SchemaRegistrySettings(url=url, basic_auth="user:secret")  # type: ignore[arg-type]
        found = RegistrySchemas(settings).writer_schemas([schema_id, 99])
    assert found.by_id == {schema_id: '{"type": "string"}', 99: None}
    expected = "Basic " + base64.b64encode(b"user:secret").decode()
    assert state.authorizations and set(state.authorizations) == {expected}
