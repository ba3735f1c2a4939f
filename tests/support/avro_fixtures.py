"""The real Avro captures in tests/fixtures/debezium (``*_avro.jsonl``): records plus their writer schemas."""

from __future__ import annotations

import base64
import json

from cdcwh.core.avro import WriterSchemas
from cdcwh.core.record import RawRecord
from tests.support.debezium import FIXTURES


def captured_avro(name: str) -> tuple[list[RawRecord], WriterSchemas]:
    """The capture's records (partition 0, offsets in capture order, the same timestamps as ``captured``)
    and the schemas the converter registered, by id."""
    lines = (FIXTURES / f"{name}.jsonl").read_text().splitlines()
    header = json.loads(lines[0])["header"]
    records = []
    for offset, line in enumerate(lines[1:]):
        item = json.loads(line)
        key, value = item["key"], item["value"]
        records.append(
            RawRecord(
                item["topic"],
                0,
                offset,
                1_700_000_000_000 + offset,
                None if key is None else base64.b64decode(key),
                None if value is None else base64.b64decode(value),
            )
        )
    schemas = {int(i): text for i, text in header["avro_schemas"].items()}
    return records, WriterSchemas(schemas)
