"""The real Avro captures in tests/fixtures/debezium (``*_avro.jsonl``): records plus their writer schemas."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cdcwh.core.avro import WriterSchemas
from cdcwh.core.record import RawRecord
from tests.support.debezium import FIXTURES


def captured_avro(name: str, directory: Path = FIXTURES) -> tuple[list[RawRecord], WriterSchemas]:
    """The capture's records (partition 0, offsets in capture order, the same timestamps as ``captured``)
    and the schemas the converter registered, by id."""
    header, records = read_capture(directory / f"{name}.jsonl", base64.b64decode)
    schemas = {int(i): text for i, text in header["avro_schemas"].items()}
    return records, WriterSchemas(schemas)


def read_capture(
    path: Path, decode: Callable[[str], bytes] = str.encode
) -> tuple[dict[str, Any], list[RawRecord]]:
    """A capture file written by tests/fixtures/debezium/capture.py: its header and its records."""
    lines = path.read_text().splitlines()
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
                None if key is None else decode(key),
                None if value is None else decode(value),
            )
        )
    return json.loads(lines[0])["header"], records
