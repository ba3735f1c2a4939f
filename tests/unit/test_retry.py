"""The retry helper retries what the error tree calls transient, and nothing else."""

from __future__ import annotations

import psycopg
import pytest

from cdcwh.errors import ConfigError, TransientError
from cdcwh.retry import is_transient, retrying


def test_transient_errors_are_told_from_the_rest() -> None:
    assert is_transient(TransientError("broker away"))
    assert is_transient(psycopg.OperationalError("connection refused"))
    assert is_transient(ConnectionRefusedError())
    assert not is_transient(ValueError("a bad value"))
    assert not is_transient(ConfigError("CDCWH_X is wrong"))
    assert not is_transient(psycopg.errors.CheckViolation("a row breaks a constraint"))


def test_a_transient_cause_makes_the_wrapping_error_transient() -> None:
    """cdcwh wraps driver errors (the DuckDB lock held by a rebuild becomes an InfrastructureError)."""
    import duckdb

    from cdcwh.errors import InfrastructureError

    lock = duckdb.IOException('IO Error: Could not set lock on file "w.duckdb": Conflicting lock is held')
    try:
        try:
            raise lock
        except duckdb.IOException as exc:
            raise InfrastructureError("the warehouse file is held by another command") from exc
    except InfrastructureError as wrapped:
        assert is_transient(wrapped)
    assert not is_transient(InfrastructureError("no such file"))


def test_a_transient_failure_is_retried_until_it_succeeds() -> None:
    calls: list[int] = []
    waits: list[float] = []
    seen: list[str] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise psycopg.OperationalError("server closed the connection")
        return "done"

    result = None
    for attempt in retrying(
        "a test", sleep=waits.append, before_sleep=lambda e, w: seen.append(type(e).__name__)
    ):
        with attempt:
            result = flaky()
    assert result == "done" and len(calls) == 3
    assert len(waits) == 2 and all(0 < w <= 5.0 for w in waits)
    assert seen == ["OperationalError", "OperationalError"]


def test_anything_else_is_raised_at_once() -> None:
    calls: list[int] = []
    with pytest.raises(ValueError, match="bad"):
        for attempt in retrying("a test", sleep=lambda s: None):
            with attempt:
                calls.append(1)
                raise ValueError("bad")
    assert calls == [1]


def test_a_spent_budget_raises_a_transient_error_naming_the_work() -> None:
    with pytest.raises(TransientError, match="landing a test batch: still failing"):
        for attempt in retrying("landing a test batch", budget_s=0, sleep=lambda s: None):
            with attempt:
                raise TransientError("catalog away")


def test_restarts_back_off_from_one_second_doubling_to_thirty_and_start_over_after_a_healthy_run() -> None:
    from cdcwh.retry import RestartBackoff

    backoff = RestartBackoff()
    waits = [backoff.wait(ran_for_s=2.0) for _ in range(7)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff.wait(ran_for_s=60.0) == 1.0  # ran a minute: healthy, start again
    assert backoff.wait(ran_for_s=0.5) == 2.0
