"""Embedded infrastructure for the local default: a Kafka-compatible broker and PostgreSQL.

``kafka_bootstrap(settings)`` and ``postgres_dsn(settings)`` are how every command finds them: the configured
servers when set, else the embedded ones recorded in the data dir, else a ``ServiceNotRunning`` that says how
to start one.
"""

from __future__ import annotations

from cdcwh.config import PostgresPurpose, Settings
from cdcwh.embedded import broker as _broker
from cdcwh.embedded import postgres as _postgres
from cdcwh.embedded.broker import EmbeddedBroker
from cdcwh.embedded.postgres import EmbeddedPostgres
from cdcwh.embedded.registry import read_record
from cdcwh.errors import ConfigError, ServiceNotRunning

__all__ = ["EmbeddedBroker", "EmbeddedPostgres", "kafka_bootstrap", "postgres_dsn", "uses_embedded_broker"]


def uses_embedded_broker(settings: Settings) -> bool:
    """True when the broker is the embedded one: none configured, or the configured address is the one
    recorded by ``cdcwh broker`` for this data dir."""
    if settings.kafka.bootstrap_servers is None:
        return True
    record = read_record(settings.run_dir, _broker.NAME)
    return record is not None and record.address == settings.kafka.bootstrap_servers


def kafka_bootstrap(settings: Settings) -> str:
    """The configured bootstrap servers, or the address of the running embedded broker."""
    if settings.kafka.bootstrap_servers:
        return settings.kafka.bootstrap_servers
    record = read_record(settings.run_dir, _broker.NAME)
    if record is None:
        raise ServiceNotRunning(
            f"no Kafka broker: CDCWH_KAFKA__BOOTSTRAP_SERVERS is unset and no embedded broker is recorded in "
            f"{settings.run_dir}; start one with `cdcwh broker` (same CDCWH_DATA_DIR) or set the variable"
        )
    if not record.alive or not _broker.broker_answers(record.address):
        raise ServiceNotRunning(
            f"the embedded broker recorded at {record.address} (pid {record.pid}) is not running; "
            f"start it again with `cdcwh broker` (its topics were in memory and are gone)"
        )
    return record.address


def postgres_dsn(settings: Settings, purpose: PostgresPurpose | None = None) -> str:
    """The DSN configured for ``purpose`` (``postgres.<purpose>_dsn``, else ``postgres.dsn``), or the URI of
    the running embedded Postgres."""
    configured = settings.postgres.dsn if purpose is None else settings.postgres.dsn_for(purpose)
    if configured is not None:
        return configured.get_secret_value()
    if purpose is not None and settings.postgres.roles_per_purpose:
        raise ConfigError(
            f"postgres.{purpose}_dsn (CDCWH_POSTGRES__{purpose.upper()}_DSN) is unset, and so is "
            f"postgres.dsn, while other postgres.*_dsn are set: set it (roles per service, "
            f"docs/security.md); cdcwh does not fall back to the embedded Postgres then"
        )
    record = read_record(settings.run_dir, _postgres.NAME)
    if record is None:
        raise ServiceNotRunning(
            f"no PostgreSQL: CDCWH_POSTGRES__DSN is unset and no embedded Postgres is recorded in "
            f"{settings.run_dir}; start one with `cdcwh postgres` (same CDCWH_DATA_DIR) or set the variable"
        )
    if not record.alive or not _postgres.postgres_answers(record.address):
        raise ServiceNotRunning(
            f"the embedded Postgres recorded for {settings.data_dir} (pid {record.pid}) is not running; "
            f"start it again with `cdcwh postgres` (its data is kept)"
        )
    return record.address
