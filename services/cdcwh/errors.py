"""The cdcwh error tree. Every error the package raises on purpose derives from ``CdcwhError``::

    CdcwhError
    ├── ConfigError              a setting is invalid or missing; names the setting (terminal)
    ├── InfrastructureError      a broker, catalog or database the command needs is not usable
    │   ├── ServiceNotRunning    nothing is listening where the data dir says it should; says how to start it
    │   ├── AlreadyRunning       an embedded service is already running for this data dir
    │   └── EmbeddedStartError   the embedded broker or Postgres could not start; carries its log tail
    ├── QueryRefused             user SQL that is not a single read query (``cdcwh.sandbox``; terminal)
    ├── TransientError           worth retrying with back-off (a broker or database briefly unavailable)
    │   └── ProduceError         a Kafka delivery failed
    └── MalformedGoldChange      a gold change message not in ``cdcwh.goldfeed``'s format (also a ValueError)

Terminal errors stop a command with exit code 2 and a one-line message. Transient errors (and the driver
errors ``cdcwh.retry.is_transient`` counts with them) are retried by ``cdcwh.retry.retrying`` where a service
does its work: ingest landing a batch, the transform's batch, the sink applying a batch. Each retries within
a time budget (``budget_s``: ``retry.DEFAULT_BUDGET_S`` unless the caller sets a shorter one), then raises
``TransientError`` naming what it was doing and the last error, which stops the service for its supervisor
to restart it. Publishing dead letters retries within its own budget and then gives up without raising
(``bronze._quarantine`` keeps the records). Anywhere else an error stops the command. Malformed *data* is
never an exception: decoders return rejections, which are quarantined (see ``cdcwh.core``).
"""

from __future__ import annotations


class CdcwhError(Exception):
    """Root of every error cdcwh raises on purpose."""


class ConfigError(CdcwhError):
    """A setting is invalid; the message names the setting (``CDCWH_...``)."""


class InfrastructureError(CdcwhError):
    """A broker, catalog or database that the command needs is not usable."""


class ServiceNotRunning(InfrastructureError):
    """No broker or Postgres is reachable; the message says how to start one."""


class AlreadyRunning(InfrastructureError):
    """An embedded service is already running for this data dir."""


class EmbeddedStartError(InfrastructureError):
    """The embedded broker or Postgres could not start."""


class QueryRefused(CdcwhError):
    """User SQL that is not a single read query; the message says what was found and what is allowed."""


class TransientError(CdcwhError):
    """A condition worth retrying with back-off."""


class ProduceError(TransientError):
    """A Kafka delivery failed."""


class MalformedGoldChange(CdcwhError, ValueError):
    """A gold change message that is not in ``cdcwh.goldfeed``'s format; the message says what is wrong."""
