"""Every Prometheus metric cdcwh exports (prefix ``cdcwh_``), defined once. See docs/metrics.md.

Label values that come from data stay bounded: ``topic`` takes only topics matched by ``CDCWH_KAFKA__TOPICS``
(one per source table), ``reason`` only the ``RejectReason`` values, ``model``/``mart`` only the SQL models.
"""

from __future__ import annotations

import logging
import time
import urllib.request
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from cdcwh.config import Settings
from cdcwh.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

SERVICES = ("ingest", "transform", "sink", "supervisor", "capture", "serve")

# Seconds from source commit: sub-second to minutes.
FRESHNESS_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 30, 60, 120, 300, 600)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

EVENTS_CONSUMED = Counter("cdcwh_events_consumed_total", "Kafka records consumed by ingest", ["topic"])
EVENTS_LANDED = Counter("cdcwh_events_landed_total", "Change events appended to a bronze table", ["topic"])
EVENTS_QUARANTINED = Counter(
    "cdcwh_events_quarantined_total",
    "Records rejected into bronze._quarantine and the DLQ",
    ["topic", "reason"],
)
EVENTS_SKIPPED = Counter(
    "cdcwh_events_skipped_total", "Records already landed (redelivered after a crash or a replay)", ["topic"]
)
EVENTS_IGNORED = Counter(
    "cdcwh_events_ignored_total",
    "Records that carry nothing to land, skipped by design (reason keyless_tombstone: the null-key, "
    "null-value tombstone of a table without a primary key)",
    ["topic", "reason"],
)
DEAD_LETTER_FAILURES = Counter(
    "cdcwh_dead_letter_failures_total",
    "Quarantined records that could not be published to <topic>.dlq after retries (bronze._quarantine, the "
    "system of record, still holds them)",
    ["topic"],
)
LOG_RESETS = Counter(
    "cdcwh_log_resets_total",
    "New incarnations of a partition's log detected by ingest (a restarted memory-only broker, a re-created "
    "topic, a new cluster): landed from their start, never skipped",
    ["topic"],
)
MAINTENANCE_FILES = Counter(
    "cdcwh_bronze_maintenance_files_total",
    "Bronze data files compacted (rewritten), written by compaction, or removed as orphans",
    ["table", "action"],
)
MAINTENANCE_BYTES = Counter(
    "cdcwh_bronze_maintenance_bytes_total", "Bytes of bronze data files rewritten by compaction", ["table"]
)
MAINTENANCE_DURATION = Histogram(
    "cdcwh_bronze_maintenance_duration_seconds",
    "One maintenance pass over one bronze table",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
BRONZE_MANIFESTS = Gauge(
    "cdcwh_bronze_manifests", "Data manifests in the current snapshot of a bronze table", ["table"]
)
BRONZE_DATA_FILES = Gauge(
    "cdcwh_bronze_data_files", "Live data files in the current snapshot of a bronze table", ["table"]
)
CONSUMER_LAG = Gauge(
    "cdcwh_consumer_lag",
    "Records behind the partition end, by consumer group",
    ["group", "topic", "partition"],
)
BRONZE_COMMIT_DURATION = Histogram(
    "cdcwh_bronze_commit_duration_seconds",
    "Decode, validate and Iceberg commit of one ingest checkpoint",
    buckets=DURATION_BUCKETS,
)
TRANSFORM_BATCH_DURATION = Histogram(
    "cdcwh_transform_batch_duration_seconds", "One transform micro-batch", buckets=DURATION_BUCKETS
)
TRANSFORM_ROWS = Counter(
    "cdcwh_transform_rows_total", "Rows read from bronze or changed in a model", ["model", "direction"]
)
TRANSFORM_MODEL_FAILURES = Counter(
    "cdcwh_transform_model_failures_total",
    "Gold model refreshes that raised (the batch went on without it)",
    ["model"],
)
TRANSFORM_MODEL_FAILED = Gauge(
    "cdcwh_transform_model_failed",
    "1 when the gold model failed in the last batch that ran it, else 0",
    ["model"],
)
TRANSFORM_MODEL_BEHIND = Gauge(
    "cdcwh_transform_model_behind",
    "1 while the gold model waits for a full refresh after missing a batch (it or a mart it reads failed)",
    ["model"],
)
DQ_TESTS = Counter(
    "cdcwh_dq_tests",
    "Data quality test runs by model, test id and status (pass, warn, fail); docs/data-quality.md",
    ["model", "test", "status"],
)
DQ_GATE_HELD = Gauge(
    "cdcwh_dq_gate_held",
    "1 while an error test holds the gold model's batches (its mart stays at its last passing state), else 0",
    ["model"],
)
TRANSFORM_TABLE_FAILURES = Counter(
    "cdcwh_transform_table_failures_total",
    "Batches in which a silver table's bronze rows could not be read or applied (the batch went on without "
    "it; its rows are retried)",
    ["table"],
)
CAPTURE_EVENTS = Counter(
    "cdcwh_capture_events_total",
    "Debezium records produced to Kafka by cdcwh capture (tombstones included), counted once delivered",
    ["topic"],
)
CAPTURE_RESTARTS = Counter(
    "cdcwh_capture_restarts_total",
    "Times cdcwh capture restarted the Debezium engine after it stopped on an error (it resumes from its "
    "offsets)",
)
CAPTURE_LAG_BYTES = Gauge(
    "cdcwh_capture_lag_bytes",
    "Bytes of WAL the source wrote beyond the replication slot's confirmed_flush_lsn (polled by cdcwh "
    "capture)",
)
SINK_ROWS = Counter("cdcwh_sink_rows_total", "Mart rows applied to PostgreSQL", ["mart", "op"])
SINK_DEAD_LETTERS = Counter(
    "cdcwh_sink_dead_letters_total",
    "Gold changes PostgreSQL refused (constraint, range, NUL byte), recorded in <schema>._dead_letters",
    ["mart", "reason"],
)
SINK_BATCH_DURATION = Histogram(
    "cdcwh_sink_batch_duration_seconds", "One sink batch (COPY + upsert + commit)", buckets=DURATION_BUCKETS
)
FRESHNESS = Histogram(
    "cdcwh_freshness_seconds",
    "Seconds from source commit (Debezium source.ts_ms) to the change being visible in a stage",
    ["stage"],
    buckets=FRESHNESS_BUCKETS,
)
LAST_SUCCESS = Gauge(
    "cdcwh_last_success_timestamp_seconds", "Unix time of the last successful batch", ["service"]
)
AUDIT_ROWS_WRITTEN = Counter(
    "cdcwh_audit_rows_written_total",
    "Rows written to the PostgreSQL audit schema (including rows already there, skipped by their key)",
    ["service", "table"],
)
AUDIT_WRITE_FAILURES = Counter(
    "cdcwh_audit_write_failures_total",
    "Failed writes to the PostgreSQL audit schema (retried later: the transform from DuckDB, ingest and sink "
    "from memory)",
    ["service", "table"],
)
AUDIT_ROWS_DROPPED = Counter(
    "cdcwh_audit_rows_dropped_total",
    "Audit rows of ingest, sink or serve given up: PostgreSQL unreachable at stop, more rows pending than "
    "kept, or (serve) a batch PostgreSQL refused",
    ["service", "table"],
)
AUDIT_BACKLOG = Gauge(
    "cdcwh_audit_backlog_rows",
    "Rows the transform recorded in DuckDB and has not yet shipped to the audit schema",
    ["table"],
)
ANOMALIES = Counter(
    "cdcwh_anomalies_total",
    "Anomalies detected (a signal beyond audit.anomaly_threshold MADs from its baseline); signal is volume, "
    "freshness, null_fraction or mean",
    ["table", "signal"],
)
PROFILE_DURATION = Histogram(
    "cdcwh_profile_duration_seconds",
    "Seconds to profile every silver table and gold model once",
    buckets=DURATION_BUCKETS,
)
ERRORS = Counter("cdcwh_errors_total", "Errors by service and kind (retried or fatal)", ["service", "kind"])

# cdcwh serve (the API); ``status`` takes only ok/error/denied/unauthorized/rate_limited, ``mart`` the models
API_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
API_REQUESTS = Counter("cdcwh_api_requests_total", "GraphQL requests answered by cdcwh serve", ["status"])
API_LATENCY = Histogram(
    "cdcwh_api_request_seconds", "Time to answer a GraphQL request over HTTP", buckets=API_LATENCY_BUCKETS
)
API_CACHE = Counter("cdcwh_api_cache_total", "Semantic answers looked up in the API's cache", ["result"])
API_SUBSCRIPTIONS = Gauge("cdcwh_api_subscriptions", "GraphQL subscriptions open")
API_PUSHES = Counter("cdcwh_api_subscription_pushes_total", "New answers pushed to subscriptions")
API_RATE_LIMITED = Counter("cdcwh_api_rate_limited_total", "API requests refused with 429 (per subject)")
API_ANNOUNCEMENTS = Counter(
    "cdcwh_api_mart_announcements_total", "Mart version announcements heard by cdcwh serve", ["mart"]
)


# source commit times observed per batch and stage: enough for the quantiles, cheap for a big batch
FRESHNESS_SAMPLE = 256


def observe_freshness(
    stage: str, source_times: pa.Array | pa.ChunkedArray, now_s: float | None = None
) -> None:
    """Observe ``cdcwh_freshness_seconds{stage}``, now minus the source commit time, for an evenly spaced
    sample of ``source_times`` (timestamps, any unit; nulls are passed over). Every stage samples the same
    way, so their histograms compare."""
    import pyarrow as pa  # the services have it loaded; the CLI's parser does not need it
    import pyarrow.compute as pc

    valid = source_times.drop_null()
    if len(valid) == 0:
        return
    step = max(1, len(valid) // FRESHNESS_SAMPLE)
    sample = valid.take(pa.array(range(0, len(valid), step)))
    micros = pc.cast(pc.cast(sample, pa.timestamp("us", tz="UTC")), pa.int64()).to_pylist()
    now = time.time() if now_s is None else now_s
    histogram = FRESHNESS.labels(stage)
    for value in micros:
        histogram.observe(max(0.0, now - value / 1e6))


def error_kind(exc: BaseException) -> str:
    """A bounded ``kind`` label for an unexpected exception: the library it came from."""
    module = type(exc).__module__.split(".")[0]
    known = {"duckdb": "duckdb", "pyiceberg": "iceberg", "psycopg": "postgres", "confluent_kafka": "kafka"}
    if module in known:
        return known[module]
    from cdcwh.errors import ConfigError, ProduceError

    if isinstance(exc, ProduceError):
        return "kafka"
    if isinstance(exc, ConfigError):
        return "config"
    return "other"


Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(host: str, port: int, timeout_s: float = 2.0) -> Samples:
    """Samples of a cdcwh ``/metrics`` endpoint by sample name; empty when it does not answer (yet)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout_s) as response:  # noqa: S310
            text = response.read().decode()
    except OSError:
        return {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def metrics_port(settings: Settings, service: str) -> int:
    """Ingest on the base port, transform +1, sink +2, supervisor +3, capture +4, serve (the API) +5;
    0 disables them all."""
    base = settings.metrics.port
    return 0 if base == 0 else base + SERVICES.index(service)


def serve_metrics(settings: Settings, service: str) -> int | None:
    """Start ``/metrics`` for this service; returns the port, or None when disabled (port 0)."""
    port = metrics_port(settings, service)
    if port == 0:
        return None
    try:
        start_http_server(port, addr=settings.metrics.host)
    except OSError as exc:
        raise ConfigError(
            f"CDCWH_METRICS__PORT: cannot serve {service} metrics on {settings.metrics.host}:{port} ({exc}); "
            f"choose another base port, or 0 to disable metrics"
        ) from exc
    log.info("metrics for %s on http://%s:%d/metrics", service, settings.metrics.host, port)
    return port
