"""The cdcwh error tree. Every error the package raises on purpose derives from ``CdcwhError``::

    CdcwhError
    ├── ConfigError              a setting is invalid or missing; names the setting (terminal)
    ├── InfrastructureError      a broker, catalog or database the command needs is not usable
    │   ├── ServiceNotRunning    nothing is listening where the data dir says it should; says how to start it
    │   ├── AlreadyRunning       an embedded service is already running for this data dir
    │   └── EmbeddedStartError   the embedded broker or Postgres could not start; carries its log tail
    └── TransientError           worth retrying with back-off (a broker or database briefly unavailable)
        └── ProduceError         a Kafka delivery failed

Terminal errors stop a command with exit code 2 and a one-line message; transient errors are retried by the
services and only surface after the retry budget is spent. Malformed *data* is never an exception: decoders
return rejections, which are quarantined (see ``cdcwh.core``).
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


class TransientError(CdcwhError):
    """A condition worth retrying with back-off."""


class ProduceError(TransientError):
    """A Kafka delivery failed."""
