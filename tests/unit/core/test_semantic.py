"""Semantic type codecs: every Debezium / Kafka Connect type with edge values; expectations by hand."""

from __future__ import annotations

import base64
import datetime as dt
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from cdcwh.core.codec import TOAST_PLACEHOLDER, ColumnResult, decode_column
from cdcwh.core.semantic import (
    LegacyVariableScaleDecimalCodec,
    SchemaError,
    codec_for,
    decimal_text,
    legacy_decimal_columns,
)

INT64_MAX = 2**63 - 1
MAX_US = 253_402_300_799_999_999  # 9999-12-31 23:59:59.999999, how +infinity is stored
MIN_US = -62_135_596_800_000_000  # 0001-01-01 00:00:00, how -infinity is stored
UTC = dt.UTC


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def unscaled_b64(unscaled: int, width: int | None = None) -> str:
    """Big-endian two's complement, minimal width unless given (what Java's BigInteger.toByteArray emits)."""
    size = width or (unscaled.bit_length() + 8) // 8 or 1
    return b64(unscaled.to_bytes(size, "big", signed=True))


def decode(schema: dict[str, Any], values: list[Any]) -> ColumnResult:
    return decode_column(codec_for(schema), values)


def decimal_schema(scale: int, precision: int | None = None) -> dict[str, Any]:
    params = {"scale": str(scale)}
    if precision is not None:
        params["connect.decimal.precision"] = str(precision)
    return {"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "parameters": params}


# -- decimals -----------------------------------------------------------------------------------------------


def test_decimal_negative_positive_and_null() -> None:
    values = [unscaled_b64(-1234), unscaled_b64(1234), None, unscaled_b64(0), unscaled_b64(-1)]
    result = decode(decimal_schema(2, 10), values)
    assert result.errors == {}
    assert result.array.type == pa.decimal128(10, 2)
    assert result.array.to_pylist() == [
        Decimal("-12.34"),
        Decimal("12.34"),
        None,
        Decimal("0.00"),
        Decimal("-0.01"),
    ]


def test_decimal_scale_zero_and_default_precision() -> None:
    result = decode(decimal_schema(0), [unscaled_b64(-42), unscaled_b64(10**37)])
    assert result.array.type == pa.decimal128(38, 0)
    assert result.array.to_pylist() == [Decimal(-42), Decimal(10**37)]


def test_decimal_beyond_int64_is_exact() -> None:
    unscaled = -(10**30) - 7
    result = decode(decimal_schema(4, 38), [unscaled_b64(unscaled), unscaled_b64(5)])
    assert result.errors == {}
    assert result.array.to_pylist() == [Decimal("-100000000000000000000000000.0007"), Decimal("0.0005")]


def test_decimal_padded_bytes_decode_the_same() -> None:
    result = decode(decimal_schema(2, 10), [unscaled_b64(-1234, width=8), unscaled_b64(1234, width=8)])
    assert result.array.to_pylist() == [Decimal("-12.34"), Decimal("12.34")]


def test_decimal_bad_values_are_isolated() -> None:
    values = [unscaled_b64(100), "not base64!", "", unscaled_b64(10**10), 12, unscaled_b64(-(10**10)), "AAA"]
    result = decode(decimal_schema(2, 10), values)
    assert sorted(result.errors) == [1, 2, 3, 4, 5, 6]
    assert "precision 10" in result.errors[3]
    assert result.array.to_pylist() == [Decimal("1.00"), None, None, None, None, None, None]


def test_decimal_schema_without_scale_is_a_schema_error() -> None:
    with pytest.raises(SchemaError):
        codec_for({"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "parameters": {}})


def vsd(scale: int, unscaled: int) -> dict[str, Any]:
    return {"scale": scale, "value": unscaled_b64(unscaled)}


VSD_SCHEMA = {"type": "struct", "name": "io.debezium.data.VariableScaleDecimal", "fields": []}


def test_variable_scale_decimal_is_its_exact_text() -> None:
    values = [vsd(3, 12345), vsd(0, -7), vsd(20, 1500), vsd(20, 1), vsd(0, 10**21), vsd(-2, 5), None]
    values += [vsd(8, -12345), vsd(4, 0), vsd(-3, 0), vsd(2, -5)]
    result = decode(VSD_SCHEMA, values)
    assert result.array.type == pa.string()
    assert result.errors == {}
    assert result.array.to_pylist() == [
        "12.345",
        "-7",
        "0.00000000000000001500",  # exactly `scale` fractional digits, trailing zeros kept
        "0.00000000000000000001",  # beyond decimal(38,18): exact
        "1000000000000000000000",  # 22 integer digits
        "500",  # negative scale
        None,
        "-0.00012345",
        "0.0000",
        "0",
        "-0.05",
    ]
    assert [Decimal(v) for v in result.array.to_pylist() if v is not None][:2] == [Decimal("12.345"), -7]


def test_variable_scale_decimal_beyond_any_fixed_decimal() -> None:
    """PostgreSQL's numeric reaches 131072 integer digits and 16383 fractional ones; the type_zoo capture's
    huge value (39 integer and 29 fractional digits) is the real case. No float, no digit limit."""
    huge = 123456789012345678901234567890123456789_12345678901234567890123456789
    big = 10**5000 + 1  # beyond sys.get_int_max_str_digits() (4300): still exact
    result = decode(VSD_SCHEMA, [vsd(29, huge), vsd(16383, -1), vsd(0, big)])
    assert result.errors == {}
    text = result.array.to_pylist()
    assert text[0] == "123456789012345678901234567890123456789.12345678901234567890123456789"
    assert text[1] == "-0." + "0" * 16382 + "1"
    assert text[2] == "1" + "0" * 4999 + "1"


def test_variable_scale_decimal_bad_values() -> None:
    values = [{"scale": 1}, {"scale": "1", "value": "AQ=="}, {"scale": 1, "value": ""}, 12, vsd(99_999, 1)]
    result = decode(VSD_SCHEMA, [*values, vsd(1, 15)])
    assert sorted(result.errors) == [0, 1, 2, 3, 4]
    assert result.array.to_pylist()[-1] == "1.5"


def test_legacy_variable_scale_decimal_keeps_decimal_38_18() -> None:
    """A bronze column made as decimal(38,18) by earlier releases keeps its type: values that fit land
    exactly, the others are rejected as before."""
    codec = LegacyVariableScaleDecimalCodec()
    values = [vsd(3, 12345), vsd(0, -7), vsd(20, 1500), vsd(20, 1), vsd(0, 10**21), vsd(-2, 5), None]
    result = decode_column(codec, values)
    assert result.array.type == pa.decimal128(38, 18)
    assert sorted(result.errors) == [3, 4]  # 20 fractional digits that are not zero; 22 integer digits
    assert result.array.to_pylist() == [
        Decimal("12.345"),
        Decimal(-7),
        Decimal("0.000000000000000015"),
        None,
        None,
        Decimal(500),
        None,
    ]


def test_legacy_decimal_columns_only_names_decimal_38_18() -> None:
    schema = pa.schema(
        [
            ("n", pa.decimal128(38, 18)),
            ("m", pa.decimal128(10, 2)),
            ("s", pa.string()),
            ("__key", pa.struct([("k", pa.decimal128(38, 18)), ("id", pa.int64())])),
        ]
    )
    assert legacy_decimal_columns(schema) == {(False, "n"), (True, "k")}
    assert legacy_decimal_columns(None) == frozenset()


@pytest.mark.parametrize(
    ("unscaled", "scale", "text"),
    [(0, 0, "0"), (1, 0, "1"), (-1, 1, "-0.1"), (123, 2, "1.23"), (-123, 5, "-0.00123"), (7, -2, "700")],
)
def test_decimal_text(unscaled: int, scale: int, text: str) -> None:
    assert decimal_text(unscaled, scale) == text
    assert Decimal(text) == Decimal(unscaled).scaleb(-scale)


# -- dates and times ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["io.debezium.time.Date", "org.apache.kafka.connect.data.Date"])
def test_dates_before_and_after_epoch(name: str) -> None:
    epoch = dt.date(1970, 1, 1)
    days = [-1, 0, 19_000, -719_162, None]
    result = decode({"type": "int32", "name": name}, days)
    assert result.array.type == pa.date32()
    expected = [epoch + dt.timedelta(days=d) if d is not None else None for d in days]
    assert result.array.to_pylist() == expected
    assert expected[3] == dt.date(1, 1, 1)


def test_date_rejects_non_integers() -> None:
    result = decode({"type": "int32", "name": "io.debezium.time.Date"}, [1, "2024-01-01", 1.5, True])
    assert sorted(result.errors) == [1, 2, 3]


def test_time_variants_map_to_microseconds() -> None:
    ms = decode({"type": "int32", "name": "io.debezium.time.Time"}, [3_723_004])
    connect = decode({"type": "int32", "name": "org.apache.kafka.connect.data.Time"}, [1])
    micro = decode({"type": "int64", "name": "io.debezium.time.MicroTime"}, [3_723_004_005, 86_400_000_000])
    nano = decode({"type": "int64", "name": "io.debezium.time.NanoTime"}, [3_723_004_005_999, 1_500])
    for result in (ms, connect, micro, nano):
        assert result.array.type == pa.time64("us")
        assert result.errors == {}
    assert ms.array.to_pylist() == [dt.time(1, 2, 3, 4000)]
    assert connect.array.to_pylist() == [dt.time(0, 0, 0, 1000)]
    assert micro.array.cast(pa.int64()).to_pylist() == [3_723_004_005, 86_400_000_000]  # 24:00:00 is valid
    assert nano.array.cast(pa.int64()).to_pylist() == [3_723_004_005, 1]  # floored to microseconds


def test_time_out_of_day_is_rejected() -> None:
    result = decode({"type": "int64", "name": "io.debezium.time.MicroTime"}, [-1, 86_400_000_001, 5])
    assert sorted(result.errors) == [0, 1]


MYSQL_TIME_LIMIT_US = (838 * 3600 + 59 * 60 + 59) * 1_000_000  # MySQL TIME is -838:59:59 .. 838:59:59


def test_mysql_time_is_a_duration_in_microseconds() -> None:
    """The MySQL connector sends TIME as MicroTime = ``Duration.toNanos() / 1000`` (BinlogValueConverters):
    negative and beyond 24 hours. For MySQL fields it lands as int64 microseconds, like an interval."""
    values = [-MYSQL_TIME_LIMIT_US, MYSQL_TIME_LIMIT_US, 0, 86_400_000_001, -1, None]
    micro = decode_column(
        codec_for({"type": "int64", "name": "io.debezium.time.MicroTime"}, mysql=True), values
    )
    assert micro.errors == {}
    assert micro.array.type == pa.int64()
    assert micro.array.to_pylist() == values
    assert -MYSQL_TIME_LIMIT_US == -3_020_399_000_000
    nano = codec_for({"type": "int64", "name": "io.debezium.time.NanoTime"}, mysql=True)
    floored = decode_column(nano, [-1, 1_999, -3_020_399_000_000_000, None])
    assert floored.errors == {}
    assert floored.array.to_pylist() == [-1, 1, -3_020_399_000_000, None]  # floored to microseconds
    # without the MySQL flag (PostgreSQL), MicroTime stays a time of day: 24:00:00 valid, beyond rejected
    pg = decode({"type": "int64", "name": "io.debezium.time.MicroTime"}, values)
    assert pg.array.type == pa.time64("us")
    assert sorted(pg.errors) == [0, 1, 3, 4]


def test_mysql_flag_reaches_nested_fields() -> None:
    schema = {"type": "array", "items": {"type": "int64", "name": "io.debezium.time.MicroTime"}}
    result = decode_column(codec_for(schema, mysql=True), [[-1, 2]])
    assert result.errors == {} and result.array.to_pylist() == [[-1, 2]]


def test_timestamps_without_zone() -> None:
    ms = decode({"type": "int64", "name": "io.debezium.time.Timestamp"}, [-1, 1_700_000_000_123])
    connect = decode({"type": "int64", "name": "org.apache.kafka.connect.data.Timestamp"}, [86_400_000])
    micro = decode({"type": "int64", "name": "io.debezium.time.MicroTimestamp"}, [-1, 1_700_000_000_123_456])
    nano = decode(
        {"type": "int64", "name": "io.debezium.time.NanoTimestamp"}, [-1, 1_700_000_000_123_456_789]
    )
    for result in (ms, connect, micro, nano):
        assert result.array.type == pa.timestamp("us")
        assert result.errors == {}
    epoch = dt.datetime(1970, 1, 1)  # noqa: DTZ001 - the naive epoch is the expectation for zone-less types
    assert ms.array.to_pylist() == [
        epoch - dt.timedelta(milliseconds=1),
        epoch + dt.timedelta(milliseconds=1_700_000_000_123),
    ]
    assert connect.array.to_pylist() == [dt.datetime(1970, 1, 2)]  # noqa: DTZ001
    assert micro.array.cast(pa.int64()).to_pylist() == [-1, 1_700_000_000_123_456]
    assert nano.array.cast(pa.int64()).to_pylist() == [-1, 1_700_000_000_123_456]  # floor, not truncation


def test_postgres_infinity_timestamps() -> None:
    """int64 max/min mean infinity in every unit; PGStatement's sentinels only in the unit Debezium sends
    them in (a nanosecond value that happens to equal one is an ordinary time in 1970)."""
    micro = decode(
        {"type": "int64", "name": "io.debezium.time.MicroTimestamp"},
        [INT64_MAX, -(2**63), 9223372036825200000, -9223372036832400000, 0],
    )
    assert micro.errors == {}
    assert micro.array.cast(pa.int64()).to_pylist() == [MAX_US, MIN_US, MAX_US, MIN_US, 0]
    assert micro.array[0].as_py().year == 9999  # within what Python and Parquet statistics handle
    nano = decode(
        {"type": "int64", "name": "io.debezium.time.NanoTimestamp"}, [INT64_MAX, -(2**63), 9223372036825200]
    )
    assert nano.errors == {}
    assert nano.array.cast(pa.int64()).to_pylist() == [MAX_US, MIN_US, 9223372036825]


def test_postgres_infinity_in_milliseconds_and_dates() -> None:
    """As Debezium 3.6 sends them (tests/fixtures/debezium/README.md): timestamp(3) in ms, dates as int32
    values that depend on the path (snapshot or streaming)."""
    millis = decode(
        {"type": "int64", "name": "io.debezium.time.Timestamp"}, [9223372036825200, -9223372036832400]
    )
    assert millis.errors == {}
    assert millis.array.cast(pa.int64()).to_pylist() == [MAX_US, MIN_US]
    days = decode(
        {"type": "int32", "name": "io.debezium.time.Date"},
        [-622191234, -625821272, -2147472692, -2147472691, 19782],
    )
    assert days.errors == {}
    assert days.array.to_pylist() == [
        dt.date(9999, 12, 31),
        dt.date(1, 1, 1),
        dt.date(9999, 12, 31),
        dt.date(1, 1, 1),
        dt.date(2024, 2, 29),
    ]


def test_dates_and_timestamps_beyond_year_9999_are_rejected_not_clamped() -> None:
    far = 2_932_897  # 10000-01-01
    days = decode({"type": "int32", "name": "io.debezium.time.Date"}, [far, 0])
    assert list(days.errors) == [0] and "out of range" in days.errors[0]
    micros = decode({"type": "int64", "name": "io.debezium.time.MicroTimestamp"}, [MAX_US + 1, 0])
    assert list(micros.errors) == [0] and "out of range" in micros.errors[0]


def test_zoned_timestamp_offsets_are_normalised_to_utc() -> None:
    values = [
        "2024-03-01T12:00:00+05:30",
        "1969-12-31T23:59:59.999999Z",
        "2024-03-01T12:00:00.123456789-02:00",
        "infinity",
        "-infinity",
        None,
    ]
    result = decode({"type": "string", "name": "io.debezium.time.ZonedTimestamp"}, values)
    assert result.array.type == pa.timestamp("us", tz="UTC")
    assert result.errors == {}
    got = result.array.cast(pa.int64()).to_pylist()
    epoch = dt.datetime(1970, 1, 1, tzinfo=UTC)

    def micros(moment: dt.datetime) -> int:
        delta = moment - epoch
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds

    assert got == [
        micros(dt.datetime(2024, 3, 1, 6, 30, tzinfo=UTC)),
        -1,
        micros(dt.datetime(2024, 3, 1, 14, 0, 0, 123456, tzinfo=UTC)),
        MAX_US,
        MIN_US,
        None,
    ]


def test_zoned_timestamp_rejects_missing_zone_and_garbage() -> None:
    values = ["2024-03-01T12:00:00", "yesterday", 17, "2024-03-01T12:00:00Z"]
    result = decode({"type": "string", "name": "io.debezium.time.ZonedTimestamp"}, values)
    assert sorted(result.errors) == [0, 1, 2]
    assert result.array[3].as_py() == dt.datetime(2024, 3, 1, 12, tzinfo=UTC)


# -- strings, bytes, numbers, booleans ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("io.debezium.data.Json", '{"a": [1, 2]}'),
        ("io.debezium.data.Uuid", "6f1c2a52-3a1e-4a8e-9d0c-1b2c3d4e5f60"),
        ("io.debezium.data.Enum", "shipped"),
        ("io.debezium.time.ZonedTime", "10:15:30+01:00"),
    ],
)
def test_string_semantic_types_stay_text(name: str, value: str) -> None:
    result = decode({"type": "string", "name": name}, [value, None])
    assert result.array.type == pa.string()
    assert result.array.to_pylist() == [value, None]


def test_bytes_including_zero_length() -> None:
    result = decode({"type": "bytes"}, [b64(b"\x00\xff"), "", None, "%%%"])
    assert result.array.type == pa.binary()
    assert result.array.to_pylist() == [b"\x00\xff", b"", None, None]
    assert list(result.errors) == [3]


def test_integers_map_to_iceberg_widths_and_check_ranges() -> None:
    int8 = decode({"type": "int8"}, [-128, 127, 128])
    int16 = decode({"type": "int16"}, [-(2**15), 2**15])
    int32 = decode({"type": "int32"}, [2**31 - 1, 2**31, "1", 1.5, True])
    int64 = decode({"type": "int64"}, [2**63 - 1, 2**53 + 1, -(2**63)])
    assert int8.array.type == int16.array.type == int32.array.type == pa.int32()
    assert int64.array.type == pa.int64()
    assert list(int8.errors) == [2]
    assert list(int16.errors) == [1]
    assert sorted(int32.errors) == [1, 2, 3, 4]
    assert int64.errors == {}
    assert int64.array.to_pylist() == [2**63 - 1, 2**53 + 1, -(2**63)]


def test_floats_and_booleans() -> None:
    f32 = decode({"type": "float"}, [1.5, 2])
    f64 = decode({"type": "double"}, [0.1, "NaN", "Infinity", "x", True])
    flags = decode({"type": "boolean"}, [True, False, None, 1, "true"])
    assert f32.array.type == pa.float32()
    assert f32.array.to_pylist() == [1.5, 2.0]
    assert f64.array.type == pa.float64()
    assert sorted(f64.errors) == [3, 4]
    assert f64.array[2].as_py() == float("inf")
    assert flags.array.to_pylist() == [True, False, None, None, None]
    assert sorted(flags.errors) == [3, 4]


# -- nested types --------------------------------------------------------------------------------------------


def test_arrays_of_primitives_and_semantic_types() -> None:
    ints = decode({"type": "array", "items": {"type": "int32", "optional": True}}, [[1, None, 3], [], None])
    assert ints.array.type == pa.list_(pa.int32())
    assert ints.array.to_pylist() == [[1, None, 3], [], None]
    decimals = decode(
        {"type": "array", "items": decimal_schema(2, 5)}, [[unscaled_b64(-5), unscaled_b64(250)]]
    )
    assert decimals.array.to_pylist() == [[Decimal("-0.05"), Decimal("2.50")]]
    strict = decode({"type": "array", "items": {"type": "int32", "optional": False}}, [[1, None], "x"])
    assert sorted(strict.errors) == [0, 1]


def test_maps_and_structs() -> None:
    maps = decode({"type": "map", "keys": {"type": "string"}, "values": {"type": "int64"}}, [{"a": 1}, {}])
    assert maps.array.to_pylist() == [[("a", 1)], []]
    point = {
        "type": "struct",
        "name": "io.debezium.data.geometry.Point",
        "fields": [
            {"field": "x", "type": "double", "optional": False},
            {"field": "y", "type": "double", "optional": False},
            {"field": "wkb", "type": "bytes", "optional": True},
        ],
    }
    result = decode(point, [{"x": 1.0, "y": -2.5, "wkb": b64(b"\x01")}, {"x": 1.0}])
    assert result.array.to_pylist()[0] == {"x": 1.0, "y": -2.5, "wkb": b"\x01"}
    assert list(result.errors) == [1]  # y is not optional


def test_toast_placeholder_in_string_bytes_and_array_columns() -> None:
    text = decode({"type": "string"}, ["a", TOAST_PLACEHOLDER, None])
    raw = decode({"type": "bytes"}, [b64(TOAST_PLACEHOLDER.encode()), b64(b"x")])
    tags = decode({"type": "array", "items": {"type": "string"}}, [[TOAST_PLACEHOLDER], ["a"]])
    assert (text.toasted, raw.toasted, tags.toasted) == ([1], [0], [0])
    assert text.array.to_pylist() == ["a", None, None]
    assert raw.array.to_pylist() == [None, b"x"]
    assert tags.array.to_pylist() == [None, ["a"]]
    assert text.errors == raw.errors == tags.errors == {}


def test_unmappable_schemas() -> None:
    with pytest.raises(SchemaError):
        codec_for({"type": "uint128"})
    with pytest.raises(SchemaError):
        codec_for({"type": "string", "name": "io.debezium.time.Date"})
    nested: dict[str, Any] = {"type": "int32"}
    for _ in range(40):
        nested = {"type": "array", "items": nested}
    with pytest.raises(SchemaError):
        codec_for(nested)
