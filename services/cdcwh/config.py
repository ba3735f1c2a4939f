"""Typed settings: environment variables prefixed ``CDCWH_`` (``__`` separates nesting), then the secrets file
(``CDCWH_SECRETS_FILE``), then the config file (``CDCWH_CONFIG``, default ``./cdcwh.toml``).

``load_settings()`` is the one entry point. It fails fast with a ``ConfigError`` whose message names every
offending setting as the user would write it (``CDCWH_KAFKA__TOPICS``, or ``kafka.topics`` in a file), and
for a name that is no setting, the closest one that is; so a misconfigured service never starts half-way.
Secrets are ``SecretStr``: their repr is masked and they are never logged.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from cdcwh.config_keys import suggestion, unknown_keys, unknown_variables
from cdcwh.errors import ConfigError

ENV_PREFIX = "CDCWH_"
CONFIG_FILE = "cdcwh.toml"
CONFIG_ENV = "CDCWH_CONFIG"
"""Names the config file; unset: ``./cdcwh.toml`` when there is one."""
SECRETS_ENV = "CDCWH_SECRETS_FILE"
"""Names a second TOML file, merged over the config file (for the settings that are secrets)."""
NOT_SETTINGS = frozenset({CONFIG_ENV, SECRETS_ENV})
NOT_SETTING_PREFIXES = ("CDCWH_TEST_", "CDCWH_FAULT_")
"""Variables read by the test suite and the fault injection of the crash tests, not by Settings."""
KUBERNETES_SERVICE_VARIABLE = re.compile(
    r"^[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_\d+_(TCP|UDP|SCTP)(_[A-Z]+)?)?)$"
)
"""Kubernetes injects ``<SERVICE>_SERVICE_HOST``/``_PORT...`` for every Service in the namespace: a Service
named ``cdcwh-sink`` gives ``CDCWH_SINK_PORT`` and the like, which are not misspelt settings (settings
always hold a ``__``, these never do)."""
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


class Section(BaseModel):
    """A settings section: an unknown key in it is an error, not silently ignored. A validation error of a
    section built directly (not through ``load_settings``) does not quote the input, which may be a secret."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, hide_input_in_errors=True)


class KafkaSettings(Section):
    """Where the Debezium topics are and how to read them."""

    bootstrap_servers: str | None = None
    """``host:port[,host:port]``. Unset: the embedded broker recorded in the data dir (``cdcwh broker``)."""
    topics: str = r"^shop\.[^.]+\.[^.]+$"
    """Regex of the Debezium topics to ingest (``<prefix>.<schema>.<table>``). Matched against the cluster's
    topic list, which is refreshed while running so that a new source table is picked up."""
    gold_topic_prefix: str = "cdcwh.gold"
    """Gold change topics are ``<gold_topic_prefix>.<mart>``; ingest never subscribes to them."""
    group_prefix: str = "cdcwh"
    """Consumer groups are ``<group_prefix>-ingest`` and ``<group_prefix>-sink``."""
    session_timeout_ms: int | None = Field(default=None, ge=1000)
    """Consumer session timeout. Unset: 6000 on the embedded broker (whose group join waits about half of
    it), the client default otherwise."""
    heartbeat_interval_ms: int | None = Field(default=None, ge=100)
    """Consumer heartbeat interval. Unset: 500 on the embedded broker, the client default otherwise."""
    fetch_backoff_ms: int = Field(default=0, ge=0)
    """Opt-in: while fetched messages wait unread, a consumer postpones its next fetch of that partition this
    long (librdkafka ``queued.min.messages=1`` with ``fetch.queue.backoff.ms``), so a steady trickle arrives
    in fewer fetches. It also caps a catch-up at what one fetch returns per interval: on the embedded broker,
    which returns little per fetch, 100 ms cut a catch-up from about 60,000 to 14,000 records/s. 0 (the
    default) keeps the client's prefetch; on Apache Kafka ``fetch.min.bytes`` through ``extra`` is the
    better lever."""
    security_protocol: str | None = None
    """librdkafka ``security.protocol`` (``SASL_SSL``, ``SSL`` ...)."""
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    extra: dict[str, str] = Field(default_factory=dict)
    """Any other librdkafka setting passed through as is (``ssl.ca.location`` ...)."""

    @field_validator("topics")
    @classmethod
    def _valid_regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value

    def client_config(self, bootstrap_servers: str) -> dict[str, Any]:
        """librdkafka settings shared by producers, consumers and admin clients."""
        config: dict[str, Any] = {"bootstrap.servers": bootstrap_servers}
        if self.security_protocol:
            config["security.protocol"] = self.security_protocol
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            config["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            config["sasl.password"] = self.sasl_password.get_secret_value()
        config.update(self.extra)
        return config


def _parsable_dsn(value: SecretStr | None) -> SecretStr | None:
    """A DSN libpq can parse; refused here, at start, because libpq's parse error (raised later, by the first
    connection) quotes the text around the fault, which can be part of the password."""
    if value is not None:
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict

        try:
            conninfo_to_dict(value.get_secret_value())
        except ProgrammingError:
            raise ValueError(
                "not a libpq connection string (key=value ...) or URI (postgresql://...); the parser's "
                "message is not shown, since it can quote the password"
            ) from None
    return value


PostgresPurpose = Literal["owner", "sink", "audit", "reader"]
"""What a connection to the warehouse Postgres is for; each may have its own role (docs/security.md)."""


class PostgresSettings(Section):
    """The warehouse PostgreSQL that receives the marts."""

    dsn: SecretStr | None = None
    """libpq connection string or URI. Unset: the embedded Postgres recorded in the data dir."""
    schema_: str = Field(default="marts", alias="schema")
    """Schema holding the mart tables."""
    audit_schema: str = "audit"
    """Schema holding the audit tables (pipeline runs, data quality results, bad records, API access)."""
    owner_dsn: SecretStr | None = None
    """DSN of the role that owns the ``marts`` and ``audit`` schemas and runs DDL (``cdcwh_owner``).
    Unset: ``postgres.dsn``."""
    sink_dsn: SecretStr | None = None
    """DSN the sink and ``replay`` write the marts with (``cdcwh_sink``). Unset: ``postgres.dsn``."""
    audit_dsn: SecretStr | None = None
    """DSN the services write ``audit`` rows with (``cdcwh_audit``). Unset: ``postgres.dsn``."""
    reader_dsn: SecretStr | None = None
    """DSN of the read-only role (``cdcwh_reader``) for ``status``, the API and dashboards. Unset:
    ``postgres.dsn``."""

    def dsn_for(self, purpose: PostgresPurpose) -> SecretStr | None:
        """The DSN set for ``purpose``, else the common ``postgres.dsn`` (None: the embedded Postgres)."""
        specific: SecretStr | None = getattr(self, f"{purpose}_dsn")
        return specific if specific is not None else self.dsn

    def dsn_setting(self, purpose: PostgresPurpose) -> str:
        """The setting ``dsn_for(purpose)`` comes from: ``postgres.<purpose>_dsn`` when set, else
        ``postgres.dsn`` (the common one, or the embedded Postgres when unset too)."""
        return f"postgres.{purpose}_dsn" if getattr(self, f"{purpose}_dsn") is not None else "postgres.dsn"

    @property
    def roles_per_purpose(self) -> bool:
        """Some ``postgres.<purpose>_dsn`` is set: roles per service, and then a purpose without a DSN of its
        own or ``postgres.dsn`` is an error, never the embedded Postgres."""
        return any(getattr(self, f"{purpose}_dsn") is not None for purpose in get_args(PostgresPurpose))

    def has_dsn(self, purpose: PostgresPurpose) -> bool:
        """``purpose`` resolves to a connection: a DSN of its own, ``postgres.dsn``, or (no per-purpose DSN
        set at all) the embedded Postgres."""
        return self.dsn_for(purpose) is not None or not self.roles_per_purpose

    _dsns_parse = field_validator("dsn", "owner_dsn", "sink_dsn", "audit_dsn", "reader_dsn")(_parsable_dsn)


class SchemaRegistrySettings(Section):
    """Confluent-compatible schema registry, for Avro-encoded topics."""

    url: str | None = None
    basic_auth: SecretStr | None = None
    """``user:password`` for the registry."""


class IcebergSettings(Section):
    """The Iceberg catalog holding bronze."""

    catalog_uri: str | None = None
    """SQLAlchemy URI of the SQL catalog. Unset: sqlite file ``<data_dir>/iceberg/catalog.db``."""
    warehouse: str | None = None
    """Warehouse location. Unset: ``file://<data_dir>/iceberg/warehouse``."""
    namespace: str = "bronze"
    snapshots_kept: int = Field(default=20, ge=2)
    """Ingest expires older snapshots of each bronze table, keeping this many: an Iceberg commit rewrites the
    table metadata, which lists every snapshot, so without expiry each commit gets slower (about 50 ms at 50
    snapshots, 300 ms at 300). Data files stay; only history older than the kept snapshots goes."""
    maintain_interval_s: float = Field(default=300.0, gt=0)
    """Ingest maintains its bronze tables (compaction, orphan files) at most this often, between checkpoints;
    ``cdcwh maintain`` does the same on demand (docs/bronze.md, "Maintenance")."""
    compact_after_s: float = Field(default=3600.0, ge=0)
    """Data files whose newest ``__ingested_at`` is older than this are settled, and compacted."""
    target_file_bytes: int = Field(default=128 * 1024 * 1024, ge=1024)
    """Compaction writes files of about this size (Arrow bytes, before compression)."""
    min_files_to_compact: int = Field(default=8, ge=2)
    """A day partition is compacted once it holds at least this many small settled files."""
    orphan_age_s: float = Field(default=86_400.0, ge=600)
    """Files in a table's location that no metadata references are deleted once older than this (a crash
    between writing a file and committing it leaves one); the age keeps an in-flight write safe."""
    retention_days: int | None = Field(default=None, ge=1)
    """Drop bronze data ingested more than this many days ago. Unset: keep everything. A rebuild from bronze
    can then only restore what is left: silver and gold keep their state, but a rebuild loses the rest."""


class MetricsSettings(Section):
    """Prometheus ``/metrics`` endpoints."""

    host: str = "127.0.0.1"
    port: int = Field(default=9400, ge=0, le=65535)
    """Base port: ingest serves on it, transform on +1, sink on +2, the supervisor on +3, capture on +4.
    0 disables."""


class IngestSettings(Section):
    """The ingest service (Debezium topics -> bronze)."""

    commit_interval_s: float = Field(default=1.0, gt=0)
    """Land in bronze at least this often while events arrive."""
    commit_records: int = Field(default=50_000, ge=1)
    """...or as soon as this many records are buffered."""
    max_value_bytes: int = Field(default=1_048_576, ge=1024)
    """Larger values are quarantined (reason ``too_large``)."""
    dlq_max_value_bytes: int = Field(default=900_000, ge=1024)
    """A dead letter's key and value are cut to this many bytes together (the full size and sha256 of a
    cut part go in headers; the quarantine table keeps every byte). The DLQ producer's ``message.max.bytes``
    is set 32 KiB above it, for headers; the broker must accept that (Apache Kafka's 1 MiB default does for
    this default)."""
    topic_refresh_s: float = Field(default=30.0, gt=0)
    """How often the topic regex is re-matched against the cluster."""


class TransformSettings(Section):
    """The transform service (bronze -> silver -> gold)."""

    interval_s: float = Field(default=1.0, gt=0)
    """Seconds between the starts of two micro-batches."""
    max_offsets_per_partition: int = Field(default=200_000, ge=1)
    """Upper bound of the bronze rows one batch reads per partition (bounds memory on a large backlog)."""
    gold_partitions: int = Field(default=3, ge=1)
    """Partitions of the ``cdcwh.gold.<mart>`` topics when transform creates them."""
    hold_s: float = Field(default=3.0, ge=0)
    """While batches keep finding new rows, keep the DuckDB file open across them, closing it (which
    checkpoints it: a fifth of a busy transform's time when done every batch) and letting readers such as
    ``cdcwh query`` in at the end of the first batch that ends this long after the file was opened. The file
    is also released whenever a batch finds nothing new. 0 closes it after every batch."""


class QualitySettings(Section):
    """Data quality tests (docs/data-quality.md)."""

    full_interval_s: float = Field(default=300.0, ge=0)
    """Seconds between two full runs of every test by the transform service (recorded in
    ``cdcwh.dq_results``, counted in ``cdcwh_dq_tests_total``); 0 disables them. Batch-scope tests and the
    gate run after every batch regardless."""


class SinkSettings(Section):
    """The sink service (gold change topics -> Postgres)."""

    batch_max_rows: int = Field(default=20_000, ge=1)
    batch_max_s: float = Field(default=0.5, gt=0)


class ServeSettings(Section):
    """``cdcwh serve``: the GraphQL API and the live page over the marts (docs/serving.md)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8400, ge=0, le=65535)
    jwt_secret: SecretStr | None = None
    """HS256 key of the bearer tokens (the local default; ``cdcwh token`` signs with it). At least 32
    bytes. ``serve`` needs it or ``serve.jwks_url``."""
    jwks_url: str | None = None
    """JWKS of the identity provider (RS256/ES256 tokens, production)."""
    jwt_algorithms: list[str] = Field(default_factory=lambda: ["HS256"], min_length=1)
    jwt_audience: str | None = None
    """When set, tokens must carry this ``aud``."""
    jwt_issuer: str | None = None
    """When set, tokens must carry this ``iss``."""
    rate_limit: str = "50/second"
    """Requests per subject (``limits`` notation: ``50/second``, ``1000/minute``); more get 429."""
    client_rate_limit: str = "200/second"
    """Requests per client address, counted before authentication (so floods without a valid token are
    limited too); more get 429. Behind a proxy every client shares the proxy's address: raise it there."""
    jwks_refresh_s: float = Field(default=30.0, ge=0)
    """Least seconds between two fetches of ``serve.jwks_url`` for a token naming an unknown key."""
    max_depth: int = Field(default=8, ge=2)
    """Deepest GraphQL selection accepted."""
    max_tokens: int = Field(default=2000, ge=10)
    """Longest GraphQL document accepted, in tokens."""
    max_cost: int = Field(default=20_000, ge=1)
    """Estimated values of one query's (or subscription's) answer (rows asked times fields,
    docs/serving.md); more: refused. 20,000 values take the API about a second to render (a 400-value
    typed page about 23 ms, docs/benchmarks.md)."""
    max_members: int = Field(default=12, ge=1)
    """Measures + dimensions + filters of one semantic query."""
    max_rows: int = Field(default=10_000, ge=1)
    """Rows of one answer; a query that would return more without a ``limit`` is refused."""
    cache_size: int = Field(default=1024, ge=0)
    """Answers cached (0: none); each is dropped when a mart it read gets a new version."""
    cache_rows: int = Field(default=200_000, ge=0)
    """Rows of all cached answers together (least recently used out first); a bigger answer is not cached."""
    max_subscriptions: int = Field(default=10, ge=1)
    """Subscriptions running at once on one WebSocket connection; one more is refused."""
    pool_size: int = Field(default=8, ge=1)
    statement_timeout_s: float = Field(default=10.0, gt=0)
    semantic_dir: Path | None = None
    """The semantic model files (``*.yml``). Unset: the project's ``schemas/semantic``."""

    @field_validator("rate_limit", "client_rate_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        from limits import parse

        parse(value)  # ValueError: pydantic names the setting
        return value

    @property
    def semantic_path(self) -> Path:
        return self.semantic_dir if self.semantic_dir is not None else PROJECT_ROOT / "schemas" / "semantic"


class AuditSettings(Section):
    """The audit schema in PostgreSQL (``postgres.audit_schema``), profiling and anomaly detection
    (docs/data-quality.md)."""

    enabled: bool | None = None
    """Write ``audit.*`` rows. Unset: on when a PostgreSQL is configured (``postgres.audit_dsn`` or
    ``postgres.dsn``) or an embedded one is recorded in the data dir; off otherwise."""
    retention_days: int = Field(default=90, ge=1)
    """Audit rows older than this many days are deleted in PostgreSQL and in the warehouse file's
    ``cdcwh.column_profiles`` and ``cdcwh.anomalies`` (by the transform, every ``prune_interval_s``)."""
    prune_interval_s: float = Field(default=3600.0, gt=0)
    """How often the transform deletes audit rows past the retention."""
    retry_s: float = Field(default=10.0, gt=0)
    """After a failed audit write, nothing is sent for this long: the transform's rows stay in DuckDB until
    shipped, ingest's and sink's in memory (at most 10,000 per table); none of them waits for PostgreSQL."""
    connect_timeout_s: int = Field(default=3, ge=1)
    """Connection timeout of an audit write; ingest and sink try once per batch, then warn and go on."""
    statement_timeout_s: float = Field(default=10.0, gt=0)
    """Longest wait of an audit connection for a lock, and of an audit statement (``lock_timeout`` and
    ``statement_timeout``; pruning has the lock timeout only)."""
    profile_interval_s: float = Field(default=60.0, ge=0)
    """Profile the silver tables' new changes and judge anomalies at most this often (0: every batch)."""
    gold_profile_interval_s: float = Field(default=600.0, ge=0)
    """Profile the gold models (each in full, holding the warehouse file meanwhile) at most this often, at a
    profiling (0: at every profiling)."""
    anomaly_threshold: float = Field(default=6.0, gt=0)
    """A signal further than this many (scaled) MADs from its baseline's median is an anomaly."""
    anomaly_window: int = Field(default=60, ge=5)
    """Points of trailing history a baseline uses (minutes for volume, profiles for columns)."""
    anomaly_min_points: int = Field(default=10, ge=3)
    """Fewer history points than this: no verdict (a new table is not flagged while it warms up)."""
    volume_lateness_s: float = Field(default=120.0, ge=0)
    """A minute of source commit time is judged for change volume once the newest source commit time seen
    is this far past its end: changes arriving later (another table's topic behind) count in later
    baselines, not in their minute's verdict."""


class SourceSettings(Section):
    """The source PostgreSQL that ``cdcwh capture`` reads with the Debezium engine (docs/source.md)."""

    dsn: SecretStr | None = None
    """libpq connection string or URI of the source database. Unset: the embedded source cluster recorded in
    the data dir (``cdcwh source``)."""
    offsets_file: Path | None = None
    """The Debezium engine's offsets (FileOffsetBackingStore). Unset: ``<data_dir>/capture/offsets.dat``."""
    jvm_heap: str = Field(default="1g", pattern=r"^[1-9][0-9]*[kKmMgG]?$")
    """Maximum JVM heap of ``cdcwh capture`` (``-Xmx``), e.g. ``512m``, ``1g``."""
    connector_file: Path | None = None
    """The connector's properties (Kafka Connect JSON, ``{"name", "config"}``); only the connection and the
    offset storage are overridden. Unset: the project's ``deploy/debezium/shop-connector.json``."""
    lag_poll_s: float = Field(default=5.0, gt=0)
    """How often capture polls the replication slot's lag on the source."""

    _dsn_parses = field_validator("dsn")(_parsable_dsn)

    @property
    def connector_path(self) -> Path:
        if self.connector_file is not None:
            return self.connector_file
        return PROJECT_ROOT / "deploy" / "debezium" / "shop-connector.json"


class Settings(BaseSettings):
    """All cdcwh settings. Env: ``CDCWH_<FIELD>`` / ``CDCWH_<SECTION>__<FIELD>``; file: ``cdcwh.toml``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        populate_by_name=True,
        hide_input_in_errors=True,  # the input may be a secret; load_settings shows the others' values
    )

    data_dir: Path = Path(".cdcwh")
    """Where the local state lives: Iceberg catalog and warehouse, DuckDB file, embedded services."""
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_upper)] = "INFO"
    """Any case (``debug`` works)."""
    log_format: Annotated[Literal["auto", "text", "json"], BeforeValidator(_lower)] = "auto"
    """``json``: one JSON object per log line; ``text``: one plain line per record; ``auto``: text on a
    terminal, json otherwise. ``cdcwh --log-format`` sets it for one command (docs/configuration.md)."""
    sql_dir: Path | None = None
    """SQL models: ``gold/`` (DuckDB marts, their data quality tests in ``gold/*.yml``), ``silver/*.yml``
    (tests of silver tables) and ``postgres/`` (mart DDL). Unset: the project's ``sql/``."""
    contracts_dir: Path | None = None
    """Table contracts, one TOML file per topic (docs/decoding.md). Unset: the project's schemas/contracts."""
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    schema_registry: SchemaRegistrySettings = Field(default_factory=SchemaRegistrySettings)
    iceberg: IcebergSettings = Field(default_factory=IcebergSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    transform: TransformSettings = Field(default_factory=TransformSettings)
    sink: SinkSettings = Field(default_factory=SinkSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    source: SourceSettings = Field(default_factory=SourceSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)

    audit: AuditSettings = Field(default_factory=AuditSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        files = [TomlConfigSettingsSource(settings_cls, toml_file=path) for path, _ in settings_files()]
        return (init_settings, env_settings, *files, file_secret_settings)

    @property
    def run_dir(self) -> Path:
        """Addresses and pids of the embedded services started for this data dir."""
        return self.data_dir / "run"

    @property
    def capture_offsets_path(self) -> Path:
        """``source.offsets_file``, or ``<data_dir>/capture/offsets.dat``."""
        if self.source.offsets_file is not None:
            return self.source.offsets_file
        return self.data_dir / "capture" / "offsets.dat"

    @property
    def sql_path(self) -> Path:
        """``sql_dir``, or the ``sql`` directory shipped with the project."""
        return self.sql_dir if self.sql_dir is not None else PROJECT_ROOT / "sql"

    @property
    def contracts_path(self) -> Path:
        """``contracts_dir``, or the ``schemas/contracts`` directory shipped with the project."""
        if self.contracts_dir is not None:
            return self.contracts_dir
        return PROJECT_ROOT / "schemas" / "contracts"


def setting_name(loc: tuple[int | str, ...]) -> str:
    """``("kafka", "topics")`` -> ``CDCWH_KAFKA__TOPICS``: the name the user writes."""
    parts = [str(part) for part in loc if not isinstance(part, int)]
    parts = [part.rstrip("_") for part in parts]
    return ENV_PREFIX + "__".join(part.upper() for part in parts)


def settings_files() -> list[tuple[Path, str]]:
    """The TOML files to read, highest priority first, each with the variable that named it: the secrets
    file, then the config file (``./cdcwh.toml`` only when it exists)."""
    files = []
    secrets = os.environ.get(SECRETS_ENV)
    if secrets:
        files.append((Path(secrets), SECRETS_ENV))
    config = os.environ.get(CONFIG_ENV)
    if config:
        files.append((Path(config), CONFIG_ENV))
    elif Path(CONFIG_FILE).is_file():
        files.append((Path(CONFIG_FILE), CONFIG_FILE))
    return files


def _readable_by_others(path: Path) -> str | None:
    """Why the secrets file must not be used (group or others may read it), or None."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None  # reported when it is read
    if os.name != "posix" or not mode & (stat.S_IRGRP | stat.S_IROTH):
        return None
    return (
        f"{SECRETS_ENV}: {path} is readable by other users (mode {mode:04o}); it holds secrets, so only its "
        f"owner may read it: chmod 600 {path} (or 400; in Kubernetes, defaultMode: 0400)"
    )


def _check_names() -> list[str]:
    """Every unknown setting name in the environment and the TOML files, with a suggestion each."""
    variables = {
        name: value
        for name, value in os.environ.items()
        if name.upper() not in NOT_SETTINGS
        and not name.upper().startswith(NOT_SETTING_PREFIXES)
        and not ("__" not in name and KUBERNETES_SERVICE_VARIABLE.match(name.upper()))
    }
    problems = unknown_variables(variables, Settings, ENV_PREFIX)
    for path, named_by in settings_files():
        if named_by == SECRETS_ENV and (exposed := _readable_by_others(path)):
            problems.append(exposed)
            continue  # not read: what it holds may already be known to others, and must be changed
        try:
            document = tomllib.loads(path.read_text())
        except FileNotFoundError:
            problems.append(f"{named_by}: no such file {path}")
            continue
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            problems.append(f"{path}: cannot read it as TOML: {exc}")
            continue
        problems.extend(f"{path}: {problem}" for problem in unknown_keys(document, Settings))
    return problems


def _is_secret(loc: tuple[int | str, ...]) -> bool:
    """Whether ``loc`` names a ``SecretStr`` setting (whose value an error message must not show)."""
    model: Any = Settings
    annotation: Any = None
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not isinstance(part, str) or fields is None:
            return False
        field = fields.get(part) or next((f for f in fields.values() if f.alias == part), None)
        if field is None:
            return False
        annotation = model = field.annotation
    return "SecretStr" in str(annotation)


def _describe(error: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden":  # a section given as JSON in one variable (CDCWH_KAFKA='{...}')
        return f"{setting_name(loc)}: no such setting; {suggestion(Settings, loc, ENV_PREFIX)}"
    value = error.get("input")
    hidden = isinstance(value, dict) or error["type"] == "missing" or _is_secret(loc)
    shown = "" if hidden else f" (got {value!r})"
    dotted = ".".join(str(part).rstrip("_") for part in loc if not isinstance(part, int))
    return f"{setting_name(loc)} ({dotted}): {error['msg']}{shown}"


def load_settings(**overrides: Any) -> Settings:
    """Read and validate every setting, or raise ``ConfigError`` naming each invalid or unknown one."""
    problems = _check_names()
    if not problems:
        try:
            return Settings(**overrides)
        except ValidationError as exc:
            problems = [_describe(error) for error in exc.errors()]
    raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
