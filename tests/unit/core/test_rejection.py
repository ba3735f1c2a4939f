"""Every rejection reason, each triggered by one record among good ones: good ones survive, offsets kept."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdcwh.core import Ignored, IgnoreReason, RawRecord, RejectReason, decode_batch, parse_contract
from cdcwh.core.record import DETAIL_MAX_CHARS

TOPIC = "shop.public.payments"
FIELDS = [
    {"type": "int64", "optional": False, "field": "id"},
    {"type": "int64", "optional": True, "field": "order_id"},
    {"type": "string", "optional": True, "field": "method"},
    {
        "type": "bytes",
        "optional": True,
        "field": "amount",
        "name": "org.apache.kafka.connect.data.Decimal",
        "parameters": {"scale": "2", "connect.decimal.precision": "10"},
    },
]
KEY_FIELDS = [{"type": "int64", "optional": False, "field": "id"}]
CONTRACT = parse_contract(
    {
        "key": ["id"],
        "columns": {
            "id": {"type": "int64", "nullable": False},
            "order_id": {"type": "int64", "nullable": False},
            "method": {
                "type": "string",
                "accepted_values": ["credit_card", "coupon", "bank_transfer", "gift_card"],
            },
            "amount": {"type": "decimal(10,2)", "min": "0", "max": "100000"},
        },
    },
    topic=TOPIC,
)


def amount(unscaled: int) -> str:
    return base64.b64encode(unscaled.to_bytes(8, "big", signed=True)).decode()


def row(ident: int, **overrides: Any) -> dict[str, Any]:
    return {"id": ident, "order_id": 10 + ident, "method": "coupon", "amount": amount(1050), **overrides}


def value(after: Any, op: str = "c", fields: list[dict[str, Any]] | None = None, **extra: Any) -> bytes:
    body = {"before": None, "after": after, "source": {"ts_ms": 1, "lsn": 5}, "op": op, "ts_ms": 2, **extra}
    schema = {
        "type": "struct",
        "name": f"{TOPIC}.Envelope",
        "fields": [
            {"type": "struct", "fields": fields or FIELDS, "optional": True, "field": "before"},
            {"type": "struct", "fields": fields or FIELDS, "optional": True, "field": "after"},
            {"type": "string", "optional": False, "field": "op"},
        ],
    }
    return orjson.dumps({"schema": schema, "payload": body})


def key(ident: Any) -> bytes:
    return orjson.dumps({"schema": {"type": "struct", "fields": KEY_FIELDS}, "payload": {"id": ident}})


def good(offset: int) -> RawRecord:
    return RawRecord(TOPIC, 0, offset, 1_000 + offset, key(offset), value(row(offset)))


def bad(offset: int, raw_value: bytes | None, raw_key: bytes | None = b"") -> RawRecord:
    return RawRecord(TOPIC, 0, offset, 1_000 + offset, key(offset) if raw_key == b"" else raw_key, raw_value)


def check(bad_record: RawRecord, reason: RejectReason, *, contracts: bool = True, **kw: Any) -> str:
    """Decode good, bad, good: exactly the bad one is rejected with ``reason``; returns its detail."""
    records = [good(0), bad_record, good(2)]
    batch = decode_batch(records, {TOPIC: CONTRACT} if contracts else {}, **kw)
    assert batch.tables[TOPIC].column("__offset").to_pylist() == [0, 2]
    assert len(batch.rejected) == 1, batch.rejected
    rejection = batch.rejected[0]
    assert (rejection.reason, rejection.topic, rejection.partition, rejection.offset) == (reason, TOPIC, 0, 1)
    assert (rejection.key, rejection.value, rejection.timestamp_ms) == (
        bad_record.key,
        bad_record.value,
        1_001,
    )
    assert len(rejection.detail) <= DETAIL_MAX_CHARS
    return rejection.detail


def test_too_large_value_and_key() -> None:
    big = value(row(1, method="x" * 2_000))
    check(bad(1, big), RejectReason.TOO_LARGE, max_value_bytes=1_500)
    check(bad(1, value(row(1)), b"{" + b" " * 2_000 + b"}"), RejectReason.TOO_LARGE, max_value_bytes=1_500)


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b'{"op": "c", "after": {"id": "\xff\xfe"}}',  # not UTF-8
        b"[" * 5_000 + b"]" * 5_000,  # nested deeper than the parser allows
        b"",
    ],
)
def test_invalid_json(raw: bytes) -> None:
    check(bad(1, raw), RejectReason.INVALID_JSON)


def test_invalid_json_key() -> None:
    detail = check(bad(1, value(row(1)), b"{\x00\x01"), RejectReason.INVALID_JSON)
    assert detail.startswith("key")


@pytest.mark.parametrize(
    "raw",
    [
        orjson.dumps({"schema": None}),  # no payload, no op
        orjson.dumps({"before": None, "after": row(1)}),  # no op
        orjson.dumps([1, 2]),
        orjson.dumps({"schema": None, "payload": "c"}),
        value("not an object"),
        value(None, op="c"),  # c without after
        value(row(1), source="shop"),
    ],
)
def test_invalid_envelope(raw: bytes) -> None:
    check(bad(1, raw), RejectReason.INVALID_ENVELOPE)


def test_unusable_schema_is_an_invalid_envelope() -> None:
    fields = [*FIELDS, {"type": "uint128", "optional": True, "field": "weird"}]
    detail = check(bad(1, value(row(1), fields=fields)), RejectReason.INVALID_ENVELOPE)
    assert "uint128" in detail


@pytest.mark.parametrize("op", ["x", "update", "", 1])
def test_unknown_op(op: Any) -> None:
    check(bad(1, value(row(1), op=op)), RejectReason.UNKNOWN_OP)


def test_missing_key_for_a_keyed_table() -> None:
    check(bad(1, value(row(1)), None), RejectReason.MISSING_KEY)
    check(bad(1, value(row(1)), b"null"), RejectReason.MISSING_KEY)
    check(bad(1, value(row(1)), key(None)), RejectReason.MISSING_KEY)  # null in a non-optional key field
    check(bad(1, value(row(1)), orjson.dumps({"other": 1})), RejectReason.MISSING_KEY)  # lacks the id column


def test_missing_key_of_a_tombstone_of_a_keyed_table() -> None:
    check(bad(1, None, None), RejectReason.MISSING_KEY)
    check(bad(1, None, b"null"), RejectReason.MISSING_KEY, contracts=False)  # a key, but a null one


def test_a_keyless_tables_tombstone_is_ignored_not_rejected() -> None:
    """Null key and null value without a keyed contract: what Debezium sends after a delete from a table
    without a primary key under REPLICA IDENTITY FULL. Skipped and listed, neither a row nor a rejection."""
    keyless = parse_contract({"key": [], "columns": {"id": {"type": "int64"}}}, topic=TOPIC)
    for contracts in ({}, {TOPIC: keyless}):
        batch = decode_batch([good(0), bad(1, None, None), good(2)], contracts)
        assert batch.rejected == []
        assert batch.tables[TOPIC].column("__offset").to_pylist() == [0, 2]
        assert batch.ignored == [Ignored(TOPIC, 0, 1, IgnoreReason.KEYLESS_TOMBSTONE)]
    only = decode_batch([bad(5, None, None)], {})
    assert only.tables == {} and only.rejected == [] and [i.offset for i in only.ignored] == [5]


@pytest.mark.parametrize(
    ("after", "where"),
    [
        (row(1, amount="%%not-base64%%"), "after.amount"),
        (
            row(1, amount=base64.b64encode((10**10).to_bytes(8, "big")).decode()),
            "after.amount",
        ),  # > precision
        (row(1, order_id="12"), "after.order_id"),
        (row(1, order_id=2**63), "after.order_id"),
        (row(1, method=5), "after.method"),
        (row(1, id=None), "after.id"),  # not optional
    ],
)
def test_type_mismatch(after: dict[str, Any], where: str) -> None:
    detail = check(bad(1, value(after)), RejectReason.TYPE_MISMATCH)
    assert detail.startswith(where)


def test_type_mismatch_in_source_metadata() -> None:
    detail = check(bad(1, value(row(1), source={"ts_ms": "yesterday"})), RejectReason.TYPE_MISMATCH)
    assert detail.startswith("source.ts_ms")


@pytest.mark.parametrize(
    ("after", "rule"),
    [
        (row(1, order_id=None), "not null"),
        (row(1, method="cash"), "not one of"),
        (row(1, amount=amount(-1)), "below min"),
        (row(1, amount=amount(10_000_001)), "above max"),
    ],
)
def test_contract_violation(after: dict[str, Any], rule: str) -> None:
    detail = check(bad(1, value(after)), RejectReason.CONTRACT_VIOLATION)
    assert rule in detail


def test_contract_rules_do_not_apply_to_deletes() -> None:
    delete = value(None, op="d", before=row(1, method="cash"))
    batch = decode_batch([good(0), bad(1, delete), good(2)], {TOPIC: CONTRACT})
    assert batch.rejected == []
    assert batch.tables[TOPIC].column("__op").to_pylist() == ["c", "d", "c"]


def test_truncates_and_messages_of_a_keyed_table_need_no_key() -> None:
    truncate = bad(1, value(None, op="t"), None)
    message = bad(3, orjson.dumps({"op": "m", "source": {"ts_ms": 1}, "message": {"prefix": "x"}}), None)
    batch = decode_batch([good(0), truncate, good(2), message], {TOPIC: CONTRACT})
    assert batch.rejected == []
    assert batch.tables[TOPIC].column("__op").to_pylist() == ["c", "t", "c", "m"]
    assert batch.tables[TOPIC].column("__key").to_pylist()[1] is None


def test_schema_conflict() -> None:
    changed = [*FIELDS[:2], {"type": "int32", "optional": True, "field": "method"}, FIELDS[3]]
    check(bad(1, value(row(1, method=3), fields=changed)), RejectReason.SCHEMA_CONFLICT, contracts=False)


def test_detail_is_truncated_and_names_the_value() -> None:
    detail = check(bad(1, value(row(1, method="q" * 5_000))), RejectReason.CONTRACT_VIOLATION)
    assert "method" in detail and "qqq" in detail


def test_all_rejected_topic_has_no_table() -> None:
    batch = decode_batch([bad(0, b"nope"), bad(1, b"{}")], {})
    assert batch.tables == {}
    assert [r.offset for r in batch.rejected] == [0, 1]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)
afters = st.fixed_dictionaries(
    {name: json_values | st.just("AAE=") for name in ("id", "order_id", "method", "amount")}
)
ops = st.sampled_from(["r", "c", "u", "d", "t", "m", "x"])
junk = st.one_of(
    st.builds(lambda after, op: value(after, op=op), afters, ops),
    st.builds(lambda after, op: orjson.dumps({"op": op, "after": after, "before": after}), afters, ops),
    st.binary(max_size=64),
    json_values.map(orjson.dumps),
    st.dictionaries(
        st.sampled_from(["op", "after", "before", "source", "payload", "schema"]), json_values
    ).map(orjson.dumps),
)


@settings(deadline=None)  # the examples: the profile's (tests/conftest.py)
@given(values=st.lists(st.one_of(st.none(), junk), max_size=6), keys=st.lists(st.none() | junk, max_size=6))
def test_decode_never_raises_and_accounts_for_every_record(
    values: list[bytes | None], keys: list[Any]
) -> None:
    records = [good(0)]
    for i, raw in enumerate(values, start=1):
        records.append(RawRecord(TOPIC, 0, i, None, keys[i - 1] if i - 1 < len(keys) else key(i), raw))
    records.append(good(len(records)))
    for contracts in ({}, {TOPIC: CONTRACT}):
        batch = decode_batch(records, contracts)
        landed = sum(t.num_rows for t in batch.tables.values())
        assert landed + len(batch.rejected) + len(batch.ignored) == len(records)
        assert RejectReason.INTERNAL_ERROR not in {r.reason for r in batch.rejected}
        offsets = batch.tables[TOPIC].column("__offset").to_pylist()
        assert offsets[0] == 0 and offsets[-1] == len(records) - 1
        assert offsets == sorted(offsets)


def test_a_decoder_bug_costs_one_record(monkeypatch: pytest.MonkeyPatch) -> None:
    from cdcwh.core import envelope

    real = envelope._decode_key

    def flaky(record: RawRecord, *args: Any, **kwargs: Any) -> Any:
        if record.offset == 1:
            raise RuntimeError("boom")
        return real(record, *args, **kwargs)

    monkeypatch.setattr(envelope, "_decode_key", flaky)
    detail = check(good(1), RejectReason.INTERNAL_ERROR)
    assert "RuntimeError: boom" in detail


def test_a_table_building_bug_costs_only_its_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    from cdcwh.core import builder

    real = builder.GroupBuilder.finish

    def flaky(self: builder.GroupBuilder, topic: str, *args: Any) -> Any:
        if topic == "other.topic":
            raise RuntimeError("boom")
        return real(self, topic, *args)

    monkeypatch.setattr(builder.GroupBuilder, "finish", flaky)
    other = RawRecord("other.topic", 0, 7, None, key(7), value(row(7)))
    batch = decode_batch([good(0), other, good(2)], {})
    assert batch.tables[TOPIC].column("__offset").to_pylist() == [0, 2]
    assert [(r.topic, r.offset, r.reason) for r in batch.rejected] == [
        ("other.topic", 7, RejectReason.INTERNAL_ERROR)
    ]
