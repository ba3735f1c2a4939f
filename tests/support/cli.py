"""The ``cdcwh`` commands as a user types them (subprocesses), for the few true CLI end-to-end tests: an
environment for a fresh data dir, ``cdcwh broker`` and ``cdcwh postgres`` in the background, a command run.

Most tests run the services in-process (tests.support.services); these pay a Python start per command.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cdcwh.config import Settings
from cdcwh.embedded import kafka_bootstrap, postgres_dsn
from cdcwh.errors import ServiceNotRunning
from tests.support.pipeline import HEARTBEAT_MS, SESSION_TIMEOUT_MS
from tests.support.ports import free_base_port


def user_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a user whose data dir is ``data_dir``, metrics on free ports.

    The consumer session timings are the tests' shorter ones (tests.support.pipeline): a group join on the
    embedded broker waits about half the session timeout, and every ``cdcwh`` service process joins once,
    so the 6 s default made each of them wait about 3 s (what the setting does is tested in
    tests/unit/test_kafka_config.py; these tests are about the commands)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDCWH_")}
    env["CDCWH_DATA_DIR"] = str(data_dir)
    env["CDCWH_METRICS__PORT"] = str(free_base_port())
    env["CDCWH_KAFKA__SESSION_TIMEOUT_MS"] = str(SESSION_TIMEOUT_MS)
    env["CDCWH_KAFKA__HEARTBEAT_INTERVAL_MS"] = str(HEARTBEAT_MS)
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


def cdcwh(
    env: dict[str, str], *args: str, timeout: float = 300, expect: int = 0
) -> subprocess.CompletedProcess[str]:
    """``cdcwh ARGS`` in ``env``; it must exit with ``expect``."""
    result = subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "cdcwh.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == expect, (
        f"cdcwh {' '.join(args)} exited {result.returncode}:\n"
        f"{result.stdout[-4000:]}\n{result.stderr[-3000:]}"
    )
    return result


@contextmanager
def background_services(env: dict[str, str]) -> Iterator[Settings]:
    """`cdcwh broker` and `cdcwh postgres` running in the background for the data dir of ``env``."""
    procs = [
        subprocess.Popen([sys.executable, "-m", "cdcwh.cli", name], env=env, stdout=subprocess.DEVNULL)  # noqa: S603
        for name in ("broker", "postgres")
    ]
    settings = Settings(data_dir=Path(env["CDCWH_DATA_DIR"]))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                kafka_bootstrap(settings)
                postgres_dsn(settings)
                break
            except ServiceNotRunning:
                assert all(p.poll() is None for p in procs), "an embedded service exited"
                assert time.monotonic() < deadline, "embedded services did not start"
                time.sleep(0.3)
        yield settings
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait(timeout=60) == 0
