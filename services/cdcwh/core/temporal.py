"""Temporal codecs: Debezium / Kafka Connect dates, times and timestamps -> Arrow date32, time64('us') and
timestamp('us'[, 'UTC']).

Nanosecond types are floored to microseconds (Iceberg v2 has neither ns times nor ns timestamps).

PostgreSQL ``infinity`` and ``-infinity`` are stored as the largest and smallest values that Python,
pyiceberg's Parquet statistics and DuckDB all handle: 9999-12-31 23:59:59.999999 and 0001-01-01 00:00:00 for
timestamps, 9999-12-31 and 0001-01-01 for dates. Debezium 3.6 (captures in tests/fixtures/debezium) sends
them as:

- ``ZonedTimestamp`` (timestamptz): the strings ``infinity`` / ``-infinity``;
- ``MicroTimestamp`` (timestamp): ``PGStatement.DATE_POSITIVE_INFINITY`` 9223372036825200000 and
  ``DATE_NEGATIVE_INFINITY`` -9223372036832400000; ``Timestamp`` (timestamp(0..3), ms) the same divided by
  1000; int64 max/min from other releases and ``NanoTimestamp``;
- ``Date``: int32 values that mean nothing as days and differ by path: 2147472692 below zero (+infinity) and
  2147472691 below zero (-infinity) when streaming, -622191234 and -625821272 in the snapshot.

Any other value outside those bounds (PostgreSQL reaches year 294276) is a ``type_mismatch`` with the reason
``out of range``, quarantined with its bytes rather than clamped.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from cdcwh.core.codec import Codec, ValueMismatch, int64_column, require_int

INT64_MAX: Final = 2**63 - 1
TS_POS_INFINITY: Final = 253_402_300_799_999_999
"""+infinity as stored: 9999-12-31 23:59:59.999999 UTC, in microseconds since the epoch."""
TS_NEG_INFINITY: Final = -62_135_596_800_000_000
"""-infinity as stored: 0001-01-01 00:00:00 UTC, in microseconds since the epoch."""
DATE_POS_INFINITY: Final = 2_932_896
"""+infinity as stored: 9999-12-31, in days since the epoch."""
DATE_NEG_INFINITY: Final = -719_162
"""-infinity as stored: 0001-01-01, in days since the epoch."""
_PG_POS_INFINITY: Final = 9223372036825200000  # PGStatement.DATE_POSITIVE_INFINITY (microseconds)
_PG_NEG_INFINITY: Final = -9223372036832400000
# raw values in the unit of the field: int64 max/min for every unit, PGStatement's only where Debezium sends
# them (micro- and milliseconds)
_INT64_SENTINELS: Final = (frozenset({INT64_MAX}), frozenset({-(2**63), -INT64_MAX}))
_PG_SENTINELS: Final = {
    1: (frozenset({_PG_POS_INFINITY}), frozenset({_PG_NEG_INFINITY})),  # microseconds
    1000: (frozenset({_PG_POS_INFINITY // 1000}), frozenset({_PG_NEG_INFINITY // 1000})),  # milliseconds
}
_DATE_POS_SENTINELS: Final = frozenset({-2_147_472_692, -622_191_234})
_DATE_NEG_SENTINELS: Final = frozenset({-2_147_472_691, -625_821_272})
_DAY_US: Final = 86_400_000_000
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_FRACTION: Final = re.compile(r"(\.\d{6})\d+")


class _Int64Codec(Codec):
    """A codec whose column is made from an int64 array (``_from_int64``, raising on any value it cannot
    take whole): the JSON path's list and the Avro block reader's integer column go the same way."""

    def fast(self, values: list[Any]) -> pa.Array:
        return self._from_int64(int64_column(values))

    def from_arrow(self, array: pa.Array) -> tuple[pa.Array, list[int]] | None:
        if type(self).fast is not _Int64Codec.fast or not pa.types.is_integer(array.type):
            return None  # a subclass that makes its list otherwise takes no array whole either
        return self._from_int64(array.cast(pa.int64())), []

    def _from_int64(self, array: pa.Array) -> pa.Array:
        raise NotImplementedError


class DateCodec(_Int64Codec):
    """``io.debezium.time.Date`` / Connect ``Date``: int32 days since epoch -> date32."""

    arrow_type = pa.date32()

    def __init__(self, label: str = "Date") -> None:
        self.label = label

    def one(self, value: Any) -> Any:
        days = require_int(value)
        if days in _DATE_POS_SENTINELS:
            return DATE_POS_INFINITY
        if days in _DATE_NEG_SENTINELS:
            return DATE_NEG_INFINITY
        if not DATE_NEG_INFINITY <= days <= DATE_POS_INFINITY:
            raise ValueMismatch("out of range (0001-01-01 .. 9999-12-31)")
        return days

    def _from_int64(self, array: pa.Array) -> pa.Array:
        bounds = pc.min_max(array).as_py()
        if bounds["min"] is not None and (
            bounds["min"] < DATE_NEG_INFINITY or bounds["max"] > DATE_POS_INFINITY
        ):
            raise ValueMismatch("infinity or out of range: per value")
        return array.cast(pa.int32()).cast(pa.date32())


class TimeCodec(_Int64Codec):
    """Time of day in ms, us or ns since midnight -> time64('us'); ns are floored to us."""

    arrow_type = pa.time64("us")

    def __init__(self, label: str, per_us: int = 1, us_per: int = 1) -> None:
        self.label, self.per_us, self.us_per = label, per_us, us_per
        self.max_raw = _DAY_US * per_us // us_per  # 24:00:00 is a valid PostgreSQL time

    def one(self, value: Any) -> Any:
        raw = require_int(value)
        if not 0 <= raw <= self.max_raw:
            raise ValueMismatch("not a time of day")
        return raw * self.us_per // self.per_us

    def _from_int64(self, array: pa.Array) -> pa.Array:
        bounds = pc.min_max(array).as_py()
        if bounds["min"] is not None and (bounds["min"] < 0 or bounds["max"] > self.max_raw):
            raise ValueMismatch("not a time of day")
        if self.us_per != 1:
            array = pc.multiply(array, self.us_per)
        if self.per_us != 1:
            array = pc.divide(array, self.per_us)  # non-negative here, so truncation is the floor
        return array.cast(self.arrow_type)


class DurationCodec(Codec):
    """A signed duration in us or ns -> int64 microseconds (ns floored). MySQL ``TIME`` arrives as
    ``MicroTime`` but is a duration (``-838:59:59`` .. ``838:59:59``), not a time of day; Iceberg v2 has no
    duration type, so it lands like PostgreSQL's ``interval`` (``MicroDuration``): int64 microseconds."""

    arrow_type = pa.int64()

    def __init__(self, label: str, per_us: int = 1) -> None:
        self.label, self.per_us = label, per_us

    def one(self, value: Any) -> Any:
        return require_int(value) // self.per_us

    def fast(self, values: list[Any]) -> pa.Array:
        array = int64_column(values)
        if self.per_us != 1:
            if (pc.min(array).as_py() or 0) < 0:
                raise ValueMismatch("negative: floor per value")
            array = pc.divide(array, self.per_us)
        return array


class TimestampCodec(_Int64Codec):
    """Epoch ms/us/ns -> timestamp('us'[, tz]); ns floored to us; PostgreSQL +/-infinity sentinels mapped."""

    def __init__(self, label: str, per_us: int = 1, us_per: int = 1, tz: str | None = None) -> None:
        self.label, self.per_us, self.us_per = label, per_us, us_per
        self.arrow_type = pa.timestamp("us", tz=tz)
        pg_pos, pg_neg = _PG_SENTINELS.get(us_per, (frozenset(), frozenset())) if per_us == 1 else ((), ())
        self.pos_sentinels = _INT64_SENTINELS[0] | frozenset(pg_pos)
        self.neg_sentinels = _INT64_SENTINELS[1] | frozenset(pg_neg)
        self.sentinels = pa.array(sorted(self.pos_sentinels | self.neg_sentinels), pa.int64())

    def one(self, value: Any) -> Any:
        raw = require_int(value)
        if raw in self.pos_sentinels:
            return TS_POS_INFINITY
        if raw in self.neg_sentinels:
            return TS_NEG_INFINITY
        us = raw * self.us_per // self.per_us
        if not TS_NEG_INFINITY <= us <= TS_POS_INFINITY:
            raise ValueMismatch("out of range (0001-01-01 .. 9999-12-31)")
        return us

    def _from_int64(self, array: pa.Array) -> pa.Array:
        if pc.any(pc.is_in(array, value_set=self.sentinels)).as_py():
            raise ValueMismatch("infinity sentinel")
        if self.us_per != 1:
            array = pc.multiply_checked(array, self.us_per)
        if self.per_us != 1:
            if (pc.min(array).as_py() or 0) < 0:
                raise ValueMismatch("negative: floor per value")
            array = pc.divide(array, self.per_us)
        bounds = pc.min_max(array).as_py()
        if bounds["min"] is not None and (bounds["min"] < TS_NEG_INFINITY or bounds["max"] > TS_POS_INFINITY):
            raise ValueMismatch("out of range: per value")
        return array.cast(self.arrow_type)


class ZonedTimestampCodec(Codec):
    """``io.debezium.time.ZonedTimestamp`` ISO-8601 string with offset -> timestamp('us', 'UTC')."""

    arrow_type = pa.timestamp("us", tz="UTC")
    label = "ZonedTimestamp"

    def one(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueMismatch("not a string")
        if value in ("infinity", "+infinity"):
            return TS_POS_INFINITY
        if value == "-infinity":
            return TS_NEG_INFINITY
        try:
            parsed = dt.datetime.fromisoformat(_FRACTION.sub(r"\1", value))
        except ValueError:
            raise ValueMismatch("not an ISO-8601 timestamp") from None
        if parsed.tzinfo is None:
            raise ValueMismatch("no zone offset")
        delta = parsed - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds

    def fast(self, values: list[Any]) -> pa.Array:
        return pa.array(values, type=pa.string()).cast(self.arrow_type)
