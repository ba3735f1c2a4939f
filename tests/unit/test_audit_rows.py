"""Audit rows of ingest landings and the services' guard around recording them (no PostgreSQL reached)."""

from __future__ import annotations

from datetime import UTC, datetime

from cdcwh.audit.rows import bad_record_rows
from cdcwh.audit.writer import BufferedAuditWriter, PostgresAuditWriter
from cdcwh.core.record import Rejection, RejectReason
from tests.support.metrics import counter_total

AT = datetime(2026, 3, 2, tzinfo=UTC)


def rejection(offset: int, timestamp_ms: int | None) -> Rejection:
    return Rejection("t", 0, offset, RejectReason.INVALID_JSON, "bad", None, b"{", timestamp_ms)


def test_a_kafka_timestamp_out_of_range_becomes_null() -> None:
    rejections = [rejection(1, 10**18), rejection(2, -(10**17)), rejection(3, 1_700_000_000_000)]
    rows = bad_record_rows(rejections, AT)
    assert [row[5] for row in rows] == [None, None, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)]


def test_an_audit_failure_is_counted_and_never_raised() -> None:
    def unreachable() -> str:
        raise AssertionError("no connection is opened when the rows cannot be built")

    writer = BufferedAuditWriter("ingest", PostgresAuditWriter(unreachable, unreachable, "audit"), 60)
    errors = counter_total("cdcwh_errors_total", service="ingest", kind="audit")

    def broken() -> dict[str, list[tuple[object, ...]]]:
        raise ValueError("year 31690708 is out of range")

    assert writer.record_from(broken) is False
    assert counter_total("cdcwh_errors_total", service="ingest", kind="audit") == errors + 1
