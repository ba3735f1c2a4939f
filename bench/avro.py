"""The Avro section: the shop workload as Avro in the Confluent wire format, ingested, against a raw consume
of the same Avro messages; and the decoder alone on the same events as JSON and as Avro (us per event).

The generator writes Debezium JSON with the schema envelope; each record is re-encoded here the way Kafka
Connect's AvroConverter would (``AvroData``: records with ``connect.name``, ``["null", X]`` unions for
optional fields, ``connect.type`` for int8/int16, Decimal as ``bytes`` with ``logicalType: decimal`` and
``connect.parameters``), its schemas registered in the schema registry **test stand-in**
(tests/support/schema_registry_standin.py; no registry server installs here, and the registry is asked once
per schema id, so it does not weigh on the figure).
"""

from __future__ import annotations

import base64
import gc
import io
import json
import time
from collections.abc import Iterator
from typing import Any

from bench.common import Bench, broker, create_topics, log, settings_from, summary
from bench.ingest import raw_consume, run_ingest

_AVRO_TYPES = {
    "boolean": "boolean",
    "int8": "int",
    "int16": "int",
    "int32": "int",
    "int64": "long",
    "float32": "float",
    "float64": "double",
    "string": "string",
    "bytes": "bytes",
}
DECODE_EVENTS = 50_000
DECODE_BATCH = 5_000
DECODE_ROUNDS = 5
# cdcwh.ingest.service.GC_THRESHOLDS, not imported: importing it imports quixstreams
GC_THRESHOLDS = (50_000, 20, 10)


def avro_schema(connect: dict[str, Any], namespace: str = "", defined: set[str] | None = None) -> Any:
    """The Avro schema ``AvroData`` makes of a Connect schema (the subset the shop generator uses); a record
    defined earlier in the schema is referred to by its full name."""
    defined = set() if defined is None else defined
    kind = connect["type"]
    name = connect.get("name")
    out: Any
    if kind == "struct":
        full = name or f"{namespace}.Record"
        if full in defined:
            return full
        defined.add(full)
        space, _, short = full.rpartition(".")
        fields = [{"name": f["field"], **_field_type(f, space, defined)} for f in connect["fields"]]
        out = {"type": "record", "name": short, "namespace": space, "fields": fields}
    elif kind == "array":
        out = {"type": "array", "items": avro_schema(connect["items"], namespace, defined)}
    elif kind == "map":
        out = {"type": "map", "values": avro_schema(connect["values"], namespace, defined)}
    else:
        out = {"type": _AVRO_TYPES[kind]}
        if kind in ("int8", "int16"):
            out["connect.type"] = kind
        parameters = connect.get("parameters")
        if name == "org.apache.kafka.connect.data.Decimal" and parameters:
            out["logicalType"] = "decimal"
            out["scale"] = int(parameters["scale"])
            out["precision"] = int(parameters.get("connect.decimal.precision", 64))
    if name is not None:
        out["connect.name"] = name
    if connect.get("parameters"):
        out["connect.parameters"] = connect["parameters"]
    return out


def _field_type(field: dict[str, Any], namespace: str, defined: set[str]) -> dict[str, Any]:
    schema = avro_schema(field, namespace, defined)
    if field.get("optional"):
        return {"type": ["null", schema], "default": None}
    return {"type": schema}


def avro_datum(connect: dict[str, Any], value: Any) -> Any:
    """The JSON converter's payload value as the datum fastavro writes (bytes from base64)."""
    if value is None:
        return None
    kind = connect["type"]
    if kind == "struct":
        return {f["field"]: avro_datum(f, value.get(f["field"])) for f in connect["fields"]}
    if kind == "bytes":
        return base64.b64decode(value)
    if kind == "array":
        return [avro_datum(connect["items"], v) for v in value]
    if kind in ("float32", "float64") and isinstance(value, str):
        return float(value.replace("Infinity", "inf"))
    return value


class AvroEncoder:
    """Re-encodes JSON-converter records as Confluent Avro, registering each schema once."""

    def __init__(self, registry_url: str) -> None:
        from fastavro import parse_schema
        from tests.support.schema_registry_standin import RegistryState

        self._parse = parse_schema
        self.registry_url = registry_url
        self.state: RegistryState | None = None
        self._by_schema: dict[str, tuple[int, Any, dict[str, Any]]] = {}

    def encode(self, topic: str, part: str, raw: bytes) -> bytes:
        from fastavro import schemaless_writer

        assert self.state is not None  # noqa: S101 (set by the caller before encoding)
        document = json.loads(raw)
        schema_text = json.dumps(document["schema"], sort_keys=True)
        known = self._by_schema.get(schema_text)
        if known is None:
            avro = avro_schema(document["schema"])
            schema_id = self.state.register(f"{topic}-{part}", json.dumps(avro))
            known = self._by_schema[schema_text] = (schema_id, self._parse(avro), document["schema"])
        schema_id, parsed, connect = known
        out = io.BytesIO()
        out.write(b"\x00" + schema_id.to_bytes(4, "big"))
        schemaless_writer(out, parsed, avro_datum(connect, document["payload"]))
        return out.getvalue()


def workload(events: int, seed: int) -> Iterator[Any]:
    """The shop workload's JSON records (as ``cdcwh generate`` makes them)."""
    from cdcwh.commands.generate import records, wall_clock_lsn
    from cdcwh.generate import ShopGenerator

    generator = ShopGenerator(seed, first_lsn=wall_clock_lsn())
    return records(generator, events, schemaless=False, prefix="shop", wall_clock=True, counts={})


def decode_us_per_event(
    json_records: list[Any], avro_records: list[Any], encoder: AvroEncoder
) -> dict[str, float]:
    """The decoder alone (``decode_batch``, batches of 5,000, ingest's GC thresholds) on the same events as
    JSON (with the schema envelope) and as Avro: CPU us per event, the best of interleaved rounds."""
    from cdcwh.config import Settings
    from cdcwh.contracts import load_contracts
    from cdcwh.core import RawRecord, decode_batch
    from cdcwh.core.avro import WriterSchemas

    assert encoder.state is not None  # noqa: S101
    gc.set_threshold(*GC_THRESHOLDS)
    contracts = load_contracts(Settings().contracts_path)
    schemas = WriterSchemas(dict(encoder.state.schemas))
    batches = {
        name: [RawRecord(r.topic, 0, i, 1_700_000_000_000, r.key, r.value) for i, r in enumerate(batch)]
        for name, batch in (("json", json_records), ("avro", avro_records))
    }
    best = {name: float("inf") for name in batches}
    for _ in range(DECODE_ROUNDS):  # interleaved, best of: the machine is shared and noisy
        for name, raws in batches.items():
            start = time.process_time()
            for at in range(0, len(raws), DECODE_BATCH):
                decoded = decode_batch(raws[at : at + DECODE_BATCH], contracts, writer_schemas=schemas)
                if decoded.rejected:
                    raise RuntimeError(f"{name}: {decoded.rejected[0].reason}: {decoded.rejected[0].detail}")
            best[name] = min(best[name], (time.process_time() - start) * 1e6 / len(raws))
    return best


def body_us_per_event(
    json_records: list[Any], avro_records: list[Any], encoder: AvroEncoder
) -> dict[str, float]:
    """The body alone, values only, CPU us per event (best of interleaved rounds): ``orjson`` on the JSON
    payload (the schema block cut off, as the decoder's memo does), the generated Avro reader
    (``cdcwh.core.avro``'s, with its envelope projection, and without it: every field built, like for like
    with fastavro), the block reader of the columnar branch (``cdcwh.core.avro_block``: polars into Arrow,
    each body's length checked; every field, in columns), and fastavro's block reader over an in-memory
    object container per batch of 5,000 and schema id (its fastest path; logical types off, whole records)."""
    import orjson
    from fastavro import reader as fastavro_reader
    from fastavro import writer as fastavro_writer

    from cdcwh.core.avro import _compile
    from cdcwh.core.avro_reader import compile_reader

    assert encoder.state is not None  # noqa: S101
    separator = b',"payload":'
    payloads = [
        memoryview(r.value)[r.value.find(separator) + len(separator) : -1] for r in json_records if r.value
    ]
    values = [r.value for r in avro_records if r.value is not None]
    texts = encoder.state.schemas
    containers: list[bytes] = []
    for at in range(0, len(values), DECODE_BATCH):
        groups: dict[int, list[bytes]] = {}
        for value in values[at : at + DECODE_BATCH]:
            groups.setdefault(int.from_bytes(value[1:5], "big"), []).append(value[5:])
        for schema_id, bodies in groups.items():
            containers.append(
                _container(_no_logical_types(json.loads(texts[schema_id])), bodies, fastavro_writer)
            )

    def json_payloads() -> None:
        for payload in payloads:
            orjson.loads(payload)

    def generated() -> None:
        for value in values:
            read = _compile(texts[int.from_bytes(value[1:5], "big")]).read
            assert read is not None  # noqa: S101
            read(value, 5)

    whole = {i: compile_reader(json.loads(text)) for i, text in texts.items()}

    def generated_whole() -> None:  # like for like with fastavro: every field built
        for value in values:
            whole[int.from_bytes(value[1:5], "big")](value, 5)

    from cdcwh.core.avro_block import block_schema, read_bodies

    blocks = {i: block_schema(json.loads(text)) for i, text in texts.items()}
    chunks: list[tuple[Any, list[memoryview]]] = []
    for at in range(0, len(values), DECODE_BATCH):
        by_id: dict[int, list[memoryview]] = {}
        for value in values[at : at + DECODE_BATCH]:
            by_id.setdefault(int.from_bytes(value[1:5], "big"), []).append(memoryview(value)[5:])
        chunks.extend((blocks[i], bodies) for i, bodies in by_id.items())

    def block_reader() -> None:  # what decode_batch's columnar branch reads: Arrow columns, lengths checked
        for block, bodies in chunks:
            if block is None or read_bodies(block, bodies) is None:
                raise RuntimeError("the block reader did not take the shop events")

    def fastavro_blocks() -> None:
        count = sum(1 for container in containers for _ in fastavro_reader(io.BytesIO(container)))
        if count != len(values):
            raise RuntimeError(f"fastavro read {count} records of {len(values)}")

    runs = {
        "orjson_payload": json_payloads,
        "generated_reader": generated,
        "generated_reader_whole": generated_whole,
        "block_reader": block_reader,
        "fastavro_block": fastavro_blocks,
    }
    best = {name: float("inf") for name in runs}
    for _ in range(DECODE_ROUNDS):
        for name, run in runs.items():
            start = time.process_time()
            run()
            best[name] = min(best[name], (time.process_time() - start) * 1e6 / len(values))
    return best


def _no_logical_types(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _no_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_no_logical_types(v) for v in schema]
    return schema


def _container(schema: Any, bodies: list[bytes], fastavro_writer: Any) -> bytes:
    """An Avro object container of ``bodies`` (already encoded) as one data block: fastavro writes the header
    (no records), then the block is appended with its record count and byte size, and the sync marker."""
    from fastavro import parse_schema

    from cdcwh.core.avro_block import avro_count

    out = io.BytesIO()
    fastavro_writer(out, parse_schema(schema), [], sync_marker=SYNC)
    data = b"".join(bodies)
    out.write(avro_count(len(bodies)) + avro_count(len(data)))
    out.write(data)
    out.write(SYNC)
    return out.getvalue()


SYNC = bytes(range(16))


def bench_avro(bench: Bench) -> None:
    from tests.support.schema_registry_standin import schema_registry_standin

    from cdcwh.generate.output import produce
    from cdcwh.kafka import producer_config

    args = bench.args
    raw, ingest, decode = [], [], []
    bodies: list[dict[str, float]] = []
    with broker(bench.root, "avro") as bootstrap, schema_registry_standin() as (url, state):
        encoder = AvroEncoder(url)
        encoder.state = state
        env = bench.env(bootstrap, "avro-prefill")
        create_topics(env)
        log.print(
            f"[bold]avro[/]: producing {args.events:,} change events as Confluent Avro to {bootstrap} ..."
        )
        t0 = time.perf_counter()
        json_sample: list[Any] = []
        avro_sample: list[Any] = []

        def avro_stream() -> Iterator[Any]:
            for record in workload(args.events, args.seed):
                key = encoder.encode(record.topic, "key", record.key)
                value = None if record.value is None else encoder.encode(record.topic, "value", record.value)
                converted = type(record)(record.topic, key, value)
                if len(json_sample) < DECODE_EVENTS:
                    json_sample.append(record)
                    avro_sample.append(converted)
                yield converted

        with settings_from(env) as settings:
            records = produce(avro_stream(), producer_config=producer_config(settings), partitions=3)
        log.print(
            f"  {records:,} Kafka records in {time.perf_counter() - t0:.1f}s, {len(state.schemas)} schemas"
        )
        for i in range(args.runs):
            count, seconds = raw_consume(bootstrap, records)
            raw.append(count / seconds)
            log.print(
                f"  run {i + 1}: raw consume {count:,} Avro records in {seconds:.2f}s = {raw[-1]:,.0f}/s"
            )
            run_env = {**bench.env(bootstrap, "avro-ingest"), "CDCWH_SCHEMA_REGISTRY__URL": url}
            result = run_ingest(run_env, records)
            ingest.append(result)
            log.print(f"  run {i + 1}: Avro ingest {result['records_per_s']:,.0f} records/s")
            decode.append(decode_us_per_event(json_sample, avro_sample, encoder))
            log.print(
                f"  run {i + 1}: decoder alone {decode[-1]['json']:.1f} us/event JSON, "
                f"{decode[-1]['avro']:.1f} us/event Avro ({len(json_sample):,} events)"
            )
            bodies.append(body_us_per_event(json_sample, avro_sample, encoder))
            log.print(
                f"  run {i + 1}: bodies alone {bodies[-1]['orjson_payload']:.1f} us/event orjson, "
                f"{bodies[-1]['generated_reader']:.1f} generated Avro reader "
                f"({bodies[-1]['generated_reader_whole']:.1f} building every field), "
                f"{bodies[-1]['block_reader']:.1f} block reader (polars, lengths checked), "
                f"{bodies[-1]['fastavro_block']:.1f} fastavro block reader"
            )
    rates = [r["records_per_s"] for r in ingest]
    bench.results["avro"] = {
        "change_events": args.events,
        "kafka_records": records,
        "raw_consume_records_per_s": summary(raw),
        "ingest_records_per_s": summary(rates),
        "ingest_events_per_s": summary([r["events_per_s"] for r in ingest]),
        "ratio": summary([r / w for r, w in zip(rates, raw, strict=True)]),
        "peak_rss_mb": summary([r["peak_rss_mb"] for r in ingest]),
        "cpu_us_per_record": summary([r["cpu_s"] * 1e6 / records for r in ingest]),
        "decode_us_per_event_json": summary([d["json"] for d in decode]),
        "decode_us_per_event_avro": summary([d["avro"] for d in decode]),
        "decode_events": len(json_sample),
        "body_us_per_event": {name: summary([b[name] for b in bodies]) for name in bodies[0]},
        "per_run": ingest,
    }
