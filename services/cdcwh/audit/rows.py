"""Audit rows of ingest and sink batches, built from plain values (no service imports another).

A run's key is a digest of the Kafka offset ranges it consumed, per (topic, partition): a batch consumed
again after a crash between the service's commit and its Kafka offset commit gets the same key when it
covers the same records, and its audit row is not written twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from cdcwh.core.record import Rejection

PREVIEW_CHARS = 500


def run_key(offsets: Iterable[tuple[str, int, int]]) -> str:
    """``<digest>``: of the min and max offset per (topic, partition) of ``(topic, partition, offset)``s."""
    ranges: dict[tuple[str, int], tuple[int, int]] = {}
    for topic, partition, offset in offsets:
        low, high = ranges.get((topic, partition), (offset, offset))
        ranges[(topic, partition)] = (min(low, offset), max(high, offset))
    text = ";".join(f"{t}/{p}:{lo}-{hi}" for (t, p), (lo, hi) in sorted(ranges.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def run_row(
    service: str,
    key: str,
    started: datetime,
    finished: datetime,
    *,
    rows_in: int,
    rows_out: int,
    status: str = "ok",
    error: str | None = None,
) -> tuple[Any, ...]:
    """A ``pipeline_runs`` row (columns in ``schema.TABLES`` order)."""
    return (service, key, started, finished, status, rows_in, rows_out, error)


def kafka_time(timestamp_ms: int | None) -> datetime | None:
    """A Kafka timestamp as a time; None when absent or outside what a ``datetime`` holds."""
    if timestamp_ms is None:
        return None
    try:
        return datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return None


def bad_record_rows(rejections: Sequence[Rejection], quarantined_at: datetime) -> list[tuple[Any, ...]]:
    """``bad_records`` rows: reason, coordinates, times, and the value's size and first characters (the
    bytes themselves stay in ``bronze._quarantine``, the system of record)."""
    rows = []
    for r in rejections:
        kafka_ts = kafka_time(r.timestamp_ms)
        value = r.value or b""
        preview = value[:PREVIEW_CHARS].decode("utf-8", errors="replace").replace("\x00", "\ufffd")
        rows.append(
            (
                r.topic,
                r.partition,
                r.offset,
                str(r.reason),
                r.detail.replace("\x00", "\ufffd"),
                kafka_ts,
                quarantined_at,
                None if r.value is None else len(r.value),
                preview if r.value is not None else None,
            )
        )
    return rows


def landing_rows(
    offsets: Iterable[tuple[str, int, int]],
    *,
    rows_in: int,
    landed: int,
    rejections: Sequence[Rejection],
    started: datetime,
    finished: datetime,
    rejected: Sequence[Rejection] | None = None,
) -> dict[str, list[tuple[Any, ...]]]:
    """The audit rows of one ingest landing: its run and its bad records. ``rejections`` are the records
    this landing quarantined, ``rejected`` (default: the same) every rejected record of the batch, including
    those a previous try quarantined before a crash: their ``bad_records`` rows are sent again (skipped by
    their key when already there). A landing that found everything landed already (a batch consumed again
    after a crash) adds no run."""
    bad = bad_record_rows(rejections if rejected is None else rejected, finished)
    if not landed and not rejections:
        return {"bad_records": bad} if bad else {}
    run = run_row(
        "ingest", run_key(offsets), started, finished, rows_in=rows_in, rows_out=landed + len(rejections)
    )
    return {"pipeline_runs": [run], "bad_records": bad}


def apply_rows(
    offsets: Iterable[tuple[str, int, int]],
    *,
    rows_in: int,
    rows_out: int,
    dead_letters: int,
    started: datetime,
    finished: datetime,
) -> dict[str, list[tuple[Any, ...]]]:
    """The audit row of one sink batch; ``partial`` when PostgreSQL refused some changes (dead letters)."""
    status, error = ("partial", f"{dead_letters} dead letters") if dead_letters else ("ok", None)
    run = run_row(
        "sink",
        run_key(offsets),
        started,
        finished,
        rows_in=rows_in,
        rows_out=rows_out,
        status=status,
        error=error,
    )
    return {"pipeline_runs": [run]}
