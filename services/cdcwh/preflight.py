"""Before a service starts: is the broker or database it is configured with there at all?

Without this check an unreachable broker surfaced seconds later as a ``KafkaException`` traceback from deep
inside a service, after librdkafka had printed its connection failures on stderr. Here it is one line that
names the setting (``kafka.bootstrap_servers: broker 127.0.0.1:9 unreachable (Connection refused)``).

The broker check is a TCP connect to each bootstrap address, so it needs no Kafka client (and prints
nothing); the database check is a real connection with a short timeout. An embedded broker or PostgreSQL
(no address configured) is already checked where its address is read from the data dir (cdcwh.embedded).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

from cdcwh.config import PostgresPurpose, Settings
from cdcwh.errors import ConfigError, InfrastructureError

TIMEOUT_S = 5.0
KAFKA_DEFAULT_PORT = 9092
NEEDS: dict[str, tuple[str, ...]] = {
    "ingest": ("kafka",),
    "transform": ("kafka",),
    "sink": ("kafka", "postgres"),
    "capture": ("kafka",),
}
"""What each long-running command needs at start (``run`` checks after starting the embedded services)."""


def _address(server: str) -> tuple[str, int]:
    """``host:port``, ``PLAINTEXT://host:port`` or ``[::1]:port`` -> (host, port); no port: 9092."""
    _, _, hostport = server.strip().rpartition("://")
    host, sep, port = hostport.rpartition(":")
    if not sep or "]" in port:  # no port given ("kafka", "[::1]")
        host, port = hostport, str(KAFKA_DEFAULT_PORT)
    if not host or not port.isdigit():
        raise ConfigError(f"kafka.bootstrap_servers: {server!r} is not host:port")
    return host.strip("[]"), int(port)


def check_kafka(settings: Settings) -> None:
    """At least one configured bootstrap server accepts a connection, or one ``InfrastructureError``."""
    servers = settings.kafka.bootstrap_servers
    if not servers:
        return
    failures = []
    for server in servers.split(","):
        try:
            with socket.create_connection(_address(server), timeout=TIMEOUT_S):
                return
        except OSError as exc:
            failures.append((server.strip(), exc.strerror or str(exc)))
    if len(failures) == 1:
        name, reason = failures[0]
        raise InfrastructureError(f"kafka.bootstrap_servers: broker {name} unreachable ({reason})")
    reasons = "; ".join(f"{name}: {reason}" for name, reason in failures)
    raise InfrastructureError(f"kafka.bootstrap_servers: no broker reachable ({reasons})")


def check_postgres(settings: Settings) -> None:
    """The sink's warehouse PostgreSQL DSNs (``postgres.sink_dsn`` and ``postgres.owner_dsn``, each else
    ``postgres.dsn``) accept a connection, or one ``InfrastructureError`` naming the setting."""
    import psycopg

    from cdcwh.redaction import scrub

    seen: set[str] = set()
    purposes: tuple[PostgresPurpose, ...] = ("sink", "owner")
    for purpose in purposes:
        dsn = settings.postgres.dsn_for(purpose)
        if dsn is None or dsn.get_secret_value() in seen:
            continue
        seen.add(dsn.get_secret_value())
        setting = settings.postgres.dsn_setting(purpose)
        try:
            psycopg.connect(dsn.get_secret_value(), connect_timeout=int(TIMEOUT_S)).close()
        except psycopg.Error as exc:
            reason = scrub(" ".join(str(exc).split("\n")[0].split()))  # libpq's first line; hints follow
            raise InfrastructureError(f"{setting}: cannot connect to the database ({reason})") from None


def check(settings: Settings, needs: Iterable[str]) -> None:
    """Run the checks named in ``needs`` (``kafka``, ``postgres``), in that order."""
    for need in needs:
        {"kafka": check_kafka, "postgres": check_postgres}[need](settings)
