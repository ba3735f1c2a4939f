"""Codecs taking a column whole as an Arrow array (``Codec.from_arrow``: the Avro block reader's columns) must
decode it exactly as they decode the same values as a Python list (the JSON path's, and the reference): the
array, the bad rows with their messages, and the TOASTed rows. Random arrays of every Arrow type the block
reader gives, with nulls, the TOAST placeholder, infinity sentinels and values out of range (hypothesis)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdcwh.core.builder import SnapshotCodec
from cdcwh.core.codec import (
    TOAST_PLACEHOLDER,
    BoolCodec,
    BytesCodec,
    Codec,
    FloatCodec,
    IntCodec,
    JsonTextCodec,
    StringCodec,
    decode_column,
)
from cdcwh.core.semantic import DecimalCodec, LegacyVariableScaleDecimalCodec, VariableScaleDecimalCodec
from cdcwh.core.temporal import DateCodec, DurationCodec, TimeCodec, TimestampCodec, ZonedTimestampCodec

CODECS: list[Codec] = [
    IntCodec(8),
    IntCodec(16),
    IntCodec(32),
    IntCodec(64),
    FloatCodec(32),
    FloatCodec(64),
    BoolCodec(),
    StringCodec(),
    StringCodec("string", toastable=False),
    SnapshotCodec(),
    JsonTextCodec(),
    VariableScaleDecimalCodec(),
    BytesCodec(),
    DecimalCodec(10, 2),
    LegacyVariableScaleDecimalCodec(),
    DateCodec(),
    DurationCodec("MicroDuration"),
    ZonedTimestampCodec(),
    TimeCodec("Time", us_per=1000),
    TimeCodec("MicroTime"),
    TimeCodec("NanoTime", per_us=1000),
    TimestampCodec("Timestamp", us_per=1000),
    TimestampCodec("MicroTimestamp"),
    TimestampCodec("NanoTimestamp", per_us=1000, tz="UTC"),
]

EDGES = [0, 1, -1, 127, -128, 32767, -32768, 2**31 - 1, -(2**31), 86_400_000, 2_932_896, -719_162]
INT64_EDGES = [
    *EDGES,
    86_400_000_000,
    2**62,
    9_223_372_036_825_200_000,
    -9_223_372_036_832_400_000,
    2**63 - 1,
    -(2**63),
]


def ints(bits: int) -> st.SearchStrategy[int | None]:
    edges = EDGES if bits == 32 else INT64_EDGES
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return st.none() | st.sampled_from(edges) | st.integers(low, high)


ARRAYS: st.SearchStrategy[pa.Array] = st.one_of(
    st.lists(ints(32), max_size=8).map(lambda v: pa.array(v, pa.int32())),
    st.lists(ints(64), max_size=8).map(lambda v: pa.array(v, pa.int64())),
    st.lists(st.none() | st.floats(width=32), max_size=8).map(lambda v: pa.array(v, pa.float32())),
    st.lists(st.none() | st.floats(), max_size=8).map(lambda v: pa.array(v, pa.float64())),
    st.lists(st.none() | st.booleans(), max_size=8).map(lambda v: pa.array(v, pa.bool_())),
    st.lists(st.none() | st.just(TOAST_PLACEHOLDER) | st.text(max_size=6), max_size=8).flatmap(
        lambda v: st.sampled_from([pa.array(v, pa.string()), pa.array(v, pa.large_string())])
    ),
    st.lists(st.none() | st.just(TOAST_PLACEHOLDER.encode()) | st.binary(max_size=6), max_size=8).flatmap(
        lambda v: st.sampled_from([pa.array(v, pa.binary()), pa.array(v, pa.large_binary())])
    ),
)


def result(codec: Codec, values: Any) -> tuple[list[Any], dict[int, str], list[int]]:
    column = decode_column(codec, values)
    assert column.array.type == codec.arrow_type
    # NaN != NaN: compare the rows as their reprs
    return [repr(v) for v in column.array.to_pylist()], column.errors, column.toasted


@st.composite
def columns(draw: st.DrawFn) -> pa.Array:
    """An array as the block reader's columns come: whole, all null, or a slice (a struct's child after
    ``flatten`` or ``filter``), with nulls."""
    array = draw(ARRAYS)
    shape = draw(st.sampled_from(["whole", "nulls", "slice"]))
    if shape == "nulls":
        return pa.nulls(len(array))
    if shape == "slice" and len(array) > 1:
        start = draw(st.integers(0, len(array) - 1))
        return array.slice(start, draw(st.integers(0, len(array) - start)))
    return array


@settings(max_examples=150, deadline=None)
@given(columns())
@pytest.mark.parametrize("codec", CODECS, ids=lambda c: f"{type(c).__name__}-{c.label}")
def test_an_arrow_column_decodes_as_the_same_values_in_a_list(codec: Codec, array: pa.Array) -> None:
    assert result(codec, array) == result(codec, array.to_pylist())


def test_the_common_columns_are_taken_whole() -> None:
    """What the block reader gives the shop's columns in: taken without Python values (the speed-up)."""
    for codec, array in [
        (IntCodec(32), pa.array([1, None], pa.int64())),
        (IntCodec(64), pa.array([1, None], pa.int64())),
        (StringCodec(), pa.array(["a", TOAST_PLACEHOLDER, None], pa.large_string())),
        (TimestampCodec("Timestamp", us_per=1000, tz="UTC"), pa.array([1_700_000_000_000], pa.int64())),
        (DateCodec(), pa.array([19_000], pa.int64())),
        (BoolCodec(), pa.array([True, None])),
        (FloatCodec(64), pa.array([1.5])),
        (BytesCodec(), pa.array([b"x"], pa.large_binary())),
    ]:
        assert codec.from_arrow(array) is not None, codec.label
    assert StringCodec().from_arrow(pa.array(["a", TOAST_PLACEHOLDER], pa.large_string()))[1] == [1]  # type: ignore[index]
    # out of range, a sentinel, another type: given back to the list path, which finds the rows
    assert IntCodec(16).from_arrow(pa.array([70_000], pa.int64())) is None
    assert JsonTextCodec().from_arrow(pa.array(["a"])) is None
    assert decode_column(IntCodec(16), pa.array([1, 70_000], pa.int64())).errors.keys() == {1}
