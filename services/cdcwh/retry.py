"""Retries decided by the error tree (``errors.py``), in one place, with tenacity.

``is_transient`` says which errors are worth retrying: ``TransientError`` and the driver errors that mean a
server is briefly unreachable (PostgreSQL connection lost, the Iceberg SQL catalog's database, a retriable
Kafka error, a refused or timed-out connection, the DuckDB file locked by another cdcwh command). Nothing else
is retried: a bad row is isolated where it is found (quarantine, a failed model, a sink dead letter), and any
other error stops the command with a one-line message, after which a supervisor restarts it.

``retrying`` retries transient errors with exponential back-off and jitter, capped at ``max_wait_s`` between
tries so that a recovered server is noticed within seconds, for at most ``budget_s`` in all; then it raises
``TransientError`` naming what it was doing and the last error.

``RestartBackoff`` is the other back-off: how long to wait before restarting something that stopped (the
Debezium engine, a supervised service), 1 s doubling to 30 s, back to 1 s once a run lasted long enough.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import duckdb
import psycopg
import sqlalchemy.exc
from confluent_kafka import KafkaError, KafkaException
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

from cdcwh.backoff import RestartBackoff as RestartBackoff
from cdcwh.errors import TransientError

log = logging.getLogger(__name__)

DEFAULT_BUDGET_S = 600.0
DEFAULT_MAX_WAIT_S = 5.0


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it was raised from, means "try again later" rather than "this will fail
    again" (cdcwh wraps driver errors in its own: an ``InfrastructureError`` from a DuckDB lock error)."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        if _transient(error):
            return True
        seen.add(id(error))
        error = error.__cause__
    return False


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, TransientError | psycopg.OperationalError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, sqlalchemy.exc.OperationalError):  # the SQL catalog's database
        return True
    if isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower():
        return True  # another cdcwh command (a rebuild, status) holds the warehouse file
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return bool(exc.args[0].retriable())
    return False


def retrying(
    what: str,
    *,
    max_wait_s: float = DEFAULT_MAX_WAIT_S,
    budget_s: float = DEFAULT_BUDGET_S,
    sleep: Callable[[float], None] = time.sleep,
    before_sleep: Callable[[BaseException, float], None] | None = None,
) -> Retrying:
    """A tenacity ``Retrying`` for ``what`` (a phrase for the log: "applying a sink batch")::

        for attempt in retrying("applying a sink batch"):
            with attempt:
                apply()

    ``sleep`` waits between tries (a service that must keep polling passes its own); ``before_sleep`` is
    called with the error and the wait before each one."""

    def report(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        if error is None:
            return
        log.warning("%s failed (%s: %s); retrying in %.1fs", what, type(error).__name__, error, wait)
        if before_sleep is not None:
            before_sleep(error, wait)

    def give_up(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise TransientError(
            f"{what}: still failing after {budget_s:.0f}s ({type(error).__name__}: {first_line})"
        ) from error

    return Retrying(
        retry=retry_if_exception(is_transient),
        wait=wait_exponential_jitter(multiplier=0.25, max=max_wait_s, jitter=0.25),
        stop=stop_after_delay(budget_s),
        sleep=sleep,
        before_sleep=report,
        retry_error_callback=give_up,
        reraise=False,
    )
