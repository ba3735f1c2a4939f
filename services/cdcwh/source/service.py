"""``CaptureService``: the source database -> Debezium engine -> Kafka, until told to stop.

In-process use (one per process: the JVM cannot be restarted)::

    service = CaptureService(settings)      # resolves the source DSN, the broker, the connector file
    service.run(stop_event)                 # blocks; set stop_event (e.g. from SIGTERM) for a clean stop

or as a subprocess: ``python -m cdcwh.cli capture`` (SIGTERM stops it cleanly).
"""

from __future__ import annotations

import logging
import threading

import psycopg

from cdcwh.config import Settings
from cdcwh.embedded.registry import read_record
from cdcwh.errors import InfrastructureError, ServiceNotRunning
from cdcwh.kafka import client_config, producer_config
from cdcwh.source import cluster
from cdcwh.source.connector import engine_properties, masked, read_connector, topic_partitions
from cdcwh.source.engine import CaptureEngine
from cdcwh.source.java import require_capture, start_jvm
from cdcwh.source.lag import poll_lag
from cdcwh.source.relay import KafkaRelay

log = logging.getLogger(__name__)

LOG4J2 = """\
rootLogger.level = INFO
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log_path}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d [%level] [%t] %c{{2}} - %m%n
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = debezium %level: %m%n
appender.console.filter.threshold.type = ThresholdFilter
appender.console.filter.threshold.level = ERROR
rootLogger.appenderRef.file.ref = file
rootLogger.appenderRef.console.ref = console
"""


def source_dsn(settings: Settings) -> str:
    """``CDCWH_SOURCE__DSN``, or the DSN of the running embedded source (``cdcwh source``)."""
    if settings.source.dsn is not None:
        return settings.source.dsn.get_secret_value()
    record = read_record(settings.run_dir, cluster.NAME)
    if record is None:
        raise ServiceNotRunning(
            f"no source database: CDCWH_SOURCE__DSN is unset and no embedded source is recorded in "
            f"{settings.run_dir}; start one with `cdcwh source` (same CDCWH_DATA_DIR) or set the variable"
        )
    if not record.alive:
        raise ServiceNotRunning(
            f"the embedded source recorded for {settings.data_dir} (pid {record.pid}) is not running; "
            "start it again with `cdcwh source` (its data and replication slot are kept)"
        )
    return record.address


def check_source(dsn: str) -> None:
    """The source answers and has ``wal_level=logical``, or a one-line ``InfrastructureError``."""
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            row = conn.execute("SHOW wal_level").fetchone()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InfrastructureError(f"cannot connect to the source database: {first}") from exc
    if row is None or row[0] != "logical":
        raise InfrastructureError(
            f"the source database has wal_level={row[0] if row else '?'}; Debezium needs wal_level=logical"
        )


class CaptureService:
    def __init__(self, settings: Settings, dsn: str | None = None) -> None:
        self.settings = settings
        self.java = require_capture()
        self.dsn = dsn if dsn is not None else source_dsn(settings)
        name, config = read_connector(settings.source.connector_path)
        self.offsets = settings.capture_offsets_path.resolve()
        self.properties = engine_properties(config, name, self.dsn, self.offsets)
        self.partitions = topic_partitions(config)
        self.engine_log = (settings.data_dir / "logs" / "capture-engine.log").resolve()

    @property
    def slot(self) -> str:
        return self.properties.get("slot.name", "debezium")

    def run(self, stop: threading.Event) -> None:
        """Capture until ``stop`` is set; the engine is restarted from its offsets if it stops on its own."""
        check_source(self.dsn)
        self.offsets.parent.mkdir(parents=True, exist_ok=True)
        self.engine_log.parent.mkdir(parents=True, exist_ok=True)
        log_config = self.offsets.parent / "log4j2.properties"
        log_config.write_text(LOG4J2.format(log_path=self.engine_log))
        start_jvm(self.java, self.settings.source.jvm_heap, log_config)
        relay = KafkaRelay(
            producer_config(self.settings), client_config(self.settings), partitions=self.partitions
        )
        log.info("capture: connector properties %s", masked(self.properties))
        lag = poll_lag(self.dsn, self.slot, self.settings.source.lag_poll_s, stop)
        try:
            CaptureEngine(self.properties, relay, str(self.engine_log)).run(stop)
        finally:
            stop.set()
            lag.join(timeout=10)
            relay.close()
