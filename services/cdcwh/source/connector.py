"""The connector's properties for the embedded engine, from the one connector file Kafka Connect also uses.

``deploy/debezium/shop-connector.json`` (``CDCWH_SOURCE__CONNECTOR_FILE``) is the single source of truth:
every property is taken as is, except the connection (``database.hostname/port/user/password/dbname``, from
the source DSN) and what the embedded engine needs instead of a Kafka Connect worker (``name``, the
``offset.storage*`` properties). Kafka Connect worker-only keys (``tasks.max``, the converters, the
``topic.creation.*`` rules) are dropped: the engine's JSON format is the JsonConverter with schemas, and
capture creates the topics itself with ``topic.creation.default.partitions``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from cdcwh.errors import ConfigError

OFFSET_FLUSH_INTERVAL_MS = 1000
DEFAULT_PARTITIONS = 3
WORKER_ONLY = ("tasks.max", "key.converter", "value.converter", "topic.creation.")
OVERRIDDEN = (
    "name",
    "database.hostname",
    "database.port",
    "database.user",
    "database.password",
    "database.dbname",
    "offset.storage",
    "offset.storage.file.filename",
    "offset.flush.interval.ms",
)


def read_connector(path: Path) -> tuple[str, dict[str, str]]:
    """(name, config) of a Kafka Connect connector JSON file (``{"name": ..., "config": {...}}``)."""
    try:
        data: Any = json.loads(path.read_text())
        name = str(data["name"])
        config = {str(key): str(value) for key, value in data["config"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"CDCWH_SOURCE__CONNECTOR_FILE: {path} is not a readable connector file "
            f'({{"name": ..., "config": {{...}}}}): {exc}'
        ) from exc
    return name, config


def topic_partitions(config: dict[str, str]) -> int:
    """Partitions of the topics capture creates: the connector's ``topic.creation.default.partitions``."""
    try:
        return max(1, int(config.get("topic.creation.default.partitions", DEFAULT_PARTITIONS)))
    except ValueError:
        return DEFAULT_PARTITIONS


def engine_properties(config: dict[str, str], name: str, dsn: str, offsets: Path) -> dict[str, str]:
    """The engine's properties: ``config`` with the connection from ``dsn`` and file-based offsets."""
    try:
        conn = conninfo_to_dict(dsn)
    except Exception as exc:
        raise ConfigError(f"CDCWH_SOURCE__DSN: not a valid libpq connection string ({exc})") from exc
    host = str(conn.get("host") or conn.get("hostaddr") or "")
    if not host or host.startswith("/"):
        raise ConfigError(
            "CDCWH_SOURCE__DSN: the Debezium connector needs a TCP host (JDBC cannot use a Unix socket), "
            f"got host={host or '(none)'}"
        )
    props = {key: value for key, value in config.items() if not key.startswith(WORKER_ONLY)}
    props.update(
        {
            "name": f"cdcwh-capture-{name}",
            "database.hostname": host,
            "database.port": str(conn.get("port") or 5432),
            "database.user": str(conn.get("user") or "postgres"),
            "database.dbname": str(conn.get("dbname") or conn.get("user") or "postgres"),
            "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
            "offset.storage.file.filename": str(offsets),
            "offset.flush.interval.ms": str(OFFSET_FLUSH_INTERVAL_MS),
        }
    )
    password = conn.get("password")
    if password:
        props["database.password"] = str(password)
    else:
        props.pop("database.password", None)  # trust/peer authentication: no password to send
    return props


def masked(props: dict[str, str]) -> dict[str, str]:
    """The properties fit for a log line."""
    return {key: ("****" if "password" in key else value) for key, value in props.items()}
