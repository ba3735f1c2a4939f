"""Fault injection for the crash tests, in one place: production code calls ``hit(point, data_dir)`` where a
test may want to SIGKILL the process, and nothing happens unless that point is armed.

At an armed point, ``hit`` appends a line to ``<data_dir>/fault-<point>`` (the test waits for it) and sleeps
for the point's pause, so the test can kill the process inside the window. The points:

- ``landed`` (ingest): after a batch is landed in bronze, before quixstreams commits the Kafka offsets;
- ``before_commit`` (transform): silver and gold written, the DuckDB transaction not committed;
- ``before_publish`` (transform): committed, the outbox not yet published;
- ``warehouse_created`` / ``warehouse_linked`` (a new warehouse file): made under its own name, not yet
  linked into place / linked, its own name not yet removed.

A test running a service in another process arms points through its environment, read once per process
(on the first ``hit``): ``CDCWH_FAULT_PAUSE_AFTER_LAND_S=<s>`` arms ``landed``; ``CDCWH_FAULT_POINT=<point>``
with ``CDCWH_FAULT_PAUSE_S=<s>`` arms that point. A test in the same process calls ``arm`` and ``reset``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from cdcwh.errors import ConfigError

LANDED = "landed"
BEFORE_COMMIT = "before_commit"
BEFORE_PUBLISH = "before_publish"
WAREHOUSE_CREATED = "warehouse_created"
WAREHOUSE_LINKED = "warehouse_linked"

PAUSE_AFTER_LAND_ENV = "CDCWH_FAULT_PAUSE_AFTER_LAND_S"
POINT_ENV = "CDCWH_FAULT_POINT"
PAUSE_ENV = "CDCWH_FAULT_PAUSE_S"

_armed: dict[str, float] | None = None
_lock = threading.Lock()


def from_environment(environ: Mapping[str, str]) -> dict[str, float]:
    """The points the variables arm, with their pauses in seconds; ``ConfigError`` names a bad variable."""
    armed: dict[str, float] = {}
    if environ.get(PAUSE_AFTER_LAND_ENV):
        armed[LANDED] = _seconds(environ, PAUSE_AFTER_LAND_ENV)
    if environ.get(POINT_ENV) and environ.get(PAUSE_ENV):
        armed[environ[POINT_ENV]] = _seconds(environ, PAUSE_ENV)
    return armed


def _seconds(environ: Mapping[str, str], name: str) -> float:
    try:
        return float(environ[name])
    except ValueError as exc:
        raise ConfigError(f"{name}={environ[name]!r} is not a number of seconds") from exc


def _points() -> dict[str, float]:
    global _armed
    with _lock:
        if _armed is None:
            _armed = from_environment(os.environ)
        return _armed


def arm(point: str, pause_s: float) -> None:
    """Make ``hit(point, ...)`` pause for ``pause_s`` seconds in this process."""
    _points()[point] = pause_s


def reset() -> None:
    """Disarm every point, and read the environment again at the next ``hit``."""
    global _armed
    with _lock:
        _armed = None


def armed(point: str) -> bool:
    return point in _points()


def hit(point: str, data_dir: Path, note: str = "paused") -> None:
    """At an armed ``point``: append ``note`` to ``<data_dir>/fault-<point>``, then pause. Else nothing."""
    pause = _points().get(point)
    if pause is None:
        return
    with (data_dir / f"fault-{point}").open("a") as marker:
        marker.write(f"{note}\n")
    time.sleep(pause)
