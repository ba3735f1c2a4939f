"""``cdcwh_capture_lag_bytes``: WAL the source wrote beyond what the replication slot has confirmed.

Polled with psycopg every ``CDCWH_SOURCE__LAG_POLL_S`` seconds: ``pg_current_wal_lsn() - confirmed_flush_lsn``
of the connector's slot. The connector confirms an LSN when the engine commits its offsets, so the gauge
drops back after each offset flush; it grows while capture is stopped or behind.
"""

from __future__ import annotations

import logging
import threading

import psycopg

from cdcwh import metrics

log = logging.getLogger(__name__)

LAG_SQL = (
    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
    "FROM pg_replication_slots WHERE slot_name = %s"
)


def slot_lag_bytes(dsn: str, slot: str) -> int | None:
    """The slot's lag in bytes, or None while the slot does not exist (before the first start)."""
    with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
        row = conn.execute(LAG_SQL, (slot,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def poll_lag(dsn: str, slot: str, interval_s: float, stop: threading.Event) -> threading.Thread:
    """Start a daemon thread setting the gauge until ``stop`` is set."""

    def loop() -> None:
        while True:
            try:
                lag = slot_lag_bytes(dsn, slot)
            except psycopg.Error as exc:
                log.debug("capture: cannot read the slot lag: %s", exc)
            else:
                if lag is not None:
                    metrics.CAPTURE_LAG_BYTES.set(lag)
            if stop.wait(interval_s):
                return

    thread = threading.Thread(target=loop, name="capture-lag", daemon=True)
    thread.start()
    return thread
