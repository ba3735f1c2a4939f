"""The gold change codec: what the transform encodes, the sink decodes to the same change, for any mart name
and any row the outbox can hold (JSON made here by the standard library, not by the code under test)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdcwh.goldfeed import GoldChange, MalformedGoldChange, decode, encode, gold_topic

AWKWARD = ["orders", 'we"ird', "back\\slash", "line\nbreak", "märt ☃", "\x00nul", "{}", '","op":"delete']

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)  # wider than 64 bits, as DuckDB's HUGEINT
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def roundtrip(mart: str, op: str, key: dict[str, Any], row: dict[str, Any] | None, ts: int | None) -> None:
    key_json = json.dumps(key)
    row_json = None if row is None else json.dumps(row)
    value = encode(mart=mart, op=op, version=7, source_ts_ms=ts, key=key_json, row=row_json)
    assert decode(key_json.encode(), value) == GoldChange(mart, op, 7, key_json, row, ts)
    # any JSON reader sees the same message, the mart escaped
    assert json.loads(value) == {
        "mart": mart,
        "op": op,
        "version": 7,
        "source_ts_ms": ts,
        "key": key,
        "row": row,
    }


@pytest.mark.parametrize("mart", AWKWARD)
def test_awkward_mart_names_survive(mart: str) -> None:
    row = {"order_id": 1, "total": "12.50", "note": 'say "hi"\\\n', "big": 2**70, "tags": ["a", None]}
    roundtrip(mart, "upsert", {"order_id": 1}, row, 1_700_000_000_123)
    roundtrip(mart, "delete", {"order_id": 1}, None, None)


@given(
    mart=st.text(),
    key=st.dictionaries(st.text(), json_values, max_size=3),
    row=st.dictionaries(st.text(), json_values),
)
def test_any_mart_key_and_row_round_trip(mart: str, key: dict[str, Any], row: dict[str, Any]) -> None:
    roundtrip(mart, "upsert", key, row, 0)


def test_topic_is_prefix_dot_mart() -> None:
    assert gold_topic("cdcwh.gold", "orders") == "cdcwh.gold.orders"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"op": "upsert", "version": 1}', "mart"),
        (b'{"mart": "m", "op": "upsert", "version": "x"}', "bad"),
        (b'{"mart": "m", "op": "merge", "version": 1}', "merge"),
    ],
)
def test_a_malformed_message_is_named(value: bytes, says: str) -> None:
    with pytest.raises(MalformedGoldChange, match=says):
        decode(b'{"id": 1}', value)
