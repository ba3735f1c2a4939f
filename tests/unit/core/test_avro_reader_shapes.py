"""The generated Avro reader (``cdcwh.core.avro_reader``) against fastavro on shapes beyond the type zoo:
deeply nested schemas, the Debezium envelope projection with a ``transaction`` block, and random schemas and
values (hypothesis). fastavro writes every body and its ``schemaless_reader`` is the expected value."""

from __future__ import annotations

import io
import itertools
import struct
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdcwh.core.avro import _projection
from cdcwh.core.avro_reader import compile_reader


def write(schema: Any, value: Any) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, parse_schema(schema), value)
    return out.getvalue()


def fastavro_reads(schema: Any, body: bytes) -> Any:
    return schemaless_reader(io.BytesIO(body), parse_schema(schema), None)


def test_a_schema_nested_forty_levels_deep_compiles_and_reads() -> None:
    """Python refuses more than 20 statically nested blocks in one function: each array or map is its own."""
    schema: Any = "long"
    value: Any = 7
    for level in range(40):
        if level % 2:
            schema, value = {"type": "array", "items": ["null", schema]}, [None, value]
        else:
            schema, value = {"type": "map", "values": schema}, {"k": value}
    body = write(schema, value)
    assert compile_reader(schema)(body, 0) == (fastavro_reads(schema, body), len(body))


SOURCE = {
    "type": "record",
    "name": "Source",
    "namespace": "io.debezium.connector.postgresql",
    "fields": [
        {"name": "version", "type": "string"},
        {"name": "ts_ms", "type": "long"},
        {"name": "db", "type": "string"},
        {"name": "sequence", "type": ["null", "string"], "default": None},
        {"name": "schema", "type": "string"},
        {"name": "table", "type": "string"},
        {"name": "txId", "type": ["null", "long"], "default": None},
        {"name": "lsn", "type": ["null", "long"], "default": None},
    ],
}
BLOCK = {
    "type": "record",
    "name": "block",
    "namespace": "event",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "total_order", "type": "long"},
        {"name": "data_collection_order", "type": "long"},
    ],
}
VALUE = {
    "type": "record",
    "name": "Value",
    "fields": [{"name": "id", "type": "long"}, {"name": "s", "type": "string"}],
}
ENVELOPE = {
    "type": "record",
    "name": "Envelope",
    "namespace": "s.public.t",
    "fields": [
        {"name": "before", "type": ["null", VALUE], "default": None},
        {"name": "after", "type": ["null", "Value"], "default": None},
        {"name": "source", "type": SOURCE},
        {"name": "transaction", "type": ["null", BLOCK], "default": None},
        {"name": "op", "type": "string"},
        {"name": "ts_ms", "type": ["null", "long"], "default": None},
    ],
}


def test_the_envelope_projection_reads_what_fastavro_reads_of_the_kept_fields() -> None:
    """``transaction`` (a non-null record), ``ts_ms`` and ``source.version``/``sequence`` are read past."""
    source = {
        "version": "3.0",
        "ts_ms": 5,
        "db": "d",
        "sequence": '["1","2"]',
        "schema": "public",
        "table": "t",
        "txId": 77,
        "lsn": 123456,
    }
    value = {
        "before": {"id": 1, "s": "old"},
        "after": {"id": 1, "s": "new ✓"},
        "source": source,
        "transaction": {"id": "77:123456", "total_order": 3, "data_collection_order": 2},
        "op": "u",
        "ts_ms": 99,
    }
    body = write(ENVELOPE, value)
    keep = _projection(ENVELOPE)
    got, end = compile_reader(ENVELOPE, keep)(body, 0)
    whole = fastavro_reads(ENVELOPE, body)
    kept_source = {
        k: v for k, v in whole["source"].items() if k in keep["io.debezium.connector.postgresql.Source"]
    }
    assert end == len(body)
    assert got == {"before": whole["before"], "after": whole["after"], "source": kept_source, "op": "u"}
    assert set(kept_source) == {"ts_ms", "db", "schema", "table", "txId", "lsn"}


# Random schemas: primitives, records (possibly empty), enums, fixed, arrays, maps, unions with null.
_PRIMITIVE = st.sampled_from(["null", "boolean", "int", "long", "float", "double", "bytes", "string"])


def _compound(
    inner: st.SearchStrategy[Any], *, maps: bool = True, min_fields: int = 0
) -> st.SearchStrategy[Any]:
    """Arrays, maps (unless ``maps`` is false), unions with null in either place, and records of
    ``min_fields`` to 4 fields, of ``inner`` schemas."""
    not_union = inner.filter(lambda s: not isinstance(s, list))
    kinds = [st.builds(lambda items: {"type": "array", "items": items}, inner)]
    if maps:
        kinds.append(st.builds(lambda values: {"type": "map", "values": values}, inner))
    return st.one_of(
        *kinds,
        st.builds(
            lambda t, first: [t, "null"] if first else ["null", t],
            not_union.filter(lambda s: s != "null"),
            st.booleans(),
        ),
        st.builds(
            lambda types: {
                "type": "record",
                "name": "?",
                "fields": [{"name": f"f{i}", "type": t} for i, t in enumerate(types)],
            },
            st.lists(inner, min_size=min_fields, max_size=4),
        ),
    )


_SCHEMAS = st.recursive(
    st.one_of(
        _PRIMITIVE,
        st.just({"type": "enum", "name": "?", "symbols": ["A", "B", "C"]}),
        st.builds(lambda n: {"type": "fixed", "name": "?", "size": n}, st.integers(0, 5)),
    ),
    _compound,
    max_leaves=12,
)


def _named(schema: Any, counter: itertools.count[int]) -> Any:
    """Give every record, enum and fixed a name of its own."""
    if isinstance(schema, list):
        return [_named(s, counter) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if out.get("name") == "?":
        out["name"] = f"N{next(counter)}"
    if "fields" in out:
        out["fields"] = [{**f, "type": _named(f["type"], counter)} for f in out["fields"]]
    for key in ("items", "values"):
        if key in out:
            out[key] = _named(out[key], counter)
    return out


def _values(schema: Any) -> st.SearchStrategy[Any]:
    if isinstance(schema, list):
        return st.one_of(*(_values(s) for s in schema))
    if isinstance(schema, str):
        return {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": st.integers(-(2**31), 2**31 - 1),
            "long": st.integers(-(2**63), 2**63 - 1),
            "float": st.floats(width=32, allow_nan=False),
            "double": st.floats(allow_nan=False),
            "bytes": st.binary(max_size=20),
            "string": st.text(max_size=20),
        }[schema]
    kind = schema["type"]
    if kind == "record":
        return st.fixed_dictionaries({f["name"]: _values(f["type"]) for f in schema["fields"]})
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "fixed":
        return st.binary(min_size=schema["size"], max_size=schema["size"])
    if kind == "array":
        return st.lists(_values(schema["items"]), max_size=4)
    return st.dictionaries(st.text(max_size=5), _values(schema["values"]), max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_schemas_and_values_read_as_fastavro_reads_them(data: st.DataObject) -> None:
    schema = _named(data.draw(_SCHEMAS), itertools.count())
    value = data.draw(_values(schema))
    body = write(schema, value)
    assert compile_reader(schema)(body, 0) == (fastavro_reads(schema, body), len(body))


# Projection: the fields of a record that are not kept are read past (checked, not built). Debezium writes
# primitives wrapped, {"type": "long", "connect.name": ...}, and optional fields as ["null", X].
_WRAPPED = _PRIMITIVE.map(lambda p: {"type": p, "connect.name": "c"})
_FIELD_TYPES = st.one_of(
    _SCHEMAS,
    _WRAPPED,
    st.builds(lambda t: ["null", t], _WRAPPED.filter(lambda s: s["type"] != "null")),
)


def _unwrap_values(schema: Any) -> Any:
    """The schema with wrapped primitives as plain names, for :func:`_values`."""
    if isinstance(schema, list):
        return [_unwrap_values(s) for s in schema]
    if isinstance(schema, dict) and "connect.name" in schema:
        return schema["type"]
    return schema


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_projected_record_reads_the_kept_fields_as_fastavro_reads_them(data: st.DataObject) -> None:
    types = data.draw(st.lists(_FIELD_TYPES, min_size=1, max_size=6))
    fields = [{"name": f"f{i}", "type": t} for i, t in enumerate(types)]
    schema = _named({"type": "record", "name": "Top", "namespace": "p", "fields": fields}, itertools.count())
    value = data.draw(
        st.fixed_dictionaries({f["name"]: _values(_unwrap_values(f["type"])) for f in schema["fields"]})
    )
    kept = frozenset(data.draw(st.sets(st.sampled_from([f["name"] for f in fields]))))
    body = write(schema, value)
    read = compile_reader(schema, {"p.Top": kept})
    whole = fastavro_reads(schema, body)
    assert read(body, 0) == ({k: v for k, v in whole.items() if k in kept}, len(body))
    cut = data.draw(st.integers(0, len(body) - 1)) if body else 0
    if body:  # a truncated body never reads as a whole value, kept fields or not
        try:
            _, end = read(body[:cut], 0)
        except (IndexError, ValueError, struct.error):
            return
        assert end != cut
