"""The embedded PostgreSQL: binaries from the ``pgserver`` wheel, data under ``<data_dir>/postgres``.

It listens on a Unix socket only (no TCP port, so nothing on the network can reach it and no port can be
busy). ``EmbeddedPostgres.start()`` initialises the cluster on first use, starts it, waits for ``SELECT 1``
and records its connection URI in the data dir.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg

from cdcwh.embedded.registry import ServiceRecord, pid_alive, read_record, remove_record, write_record
from cdcwh.errors import AlreadyRunning, EmbeddedStartError

NAME = "postgres"
START_TIMEOUT_S = 30.0
DATABASE = "cdcwh"

log = logging.getLogger(__name__)


def postgres_answers(dsn: str, timeout_s: float = 2.0) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=max(1, int(timeout_s))) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


class EmbeddedPostgres:
    """A pgserver-managed PostgreSQL cluster owned by this object."""

    def __init__(self, data_dir: Path, run_dir: Path) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self.run_dir = run_dir
        self.record: ServiceRecord | None = None
        self._server: Any = None

    @property
    def dsn(self) -> str:
        if self.record is None:
            raise EmbeddedStartError("the embedded Postgres is not started")
        return self.record.address

    def start(self) -> ServiceRecord:
        existing = read_record(self.run_dir, NAME)
        if existing is not None and existing.alive:
            raise AlreadyRunning(
                f"an embedded Postgres is already running for this data dir (pid {existing.pid}); "
                f"connect with: psql '{existing.address}'"
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset on servers
                from pgserver.postgres_server import PostgresServer, get_server
        except ImportError as exc:
            raise EmbeddedStartError(
                "the embedded Postgres needs the 'embedded' extra: pip install 'cdcwh[embedded]' "
                "(or set CDCWH_POSTGRES__DSN to a PostgreSQL server)"
            ) from exc
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale_pid_file()
        # pgserver caches one handle per data dir per process; after a stop or a crash it must start afresh.
        PostgresServer._instances.pop(self.pgdata, None)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset on servers
                self._server = get_server(self.pgdata, cleanup_mode=None)
        except Exception as exc:
            raise EmbeddedStartError(
                f"the embedded Postgres could not start in {self.pgdata}: {exc}"
            ) from exc
        admin_dsn = self._server.get_uri()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not postgres_answers(admin_dsn):
            if time.monotonic() > deadline:
                raise EmbeddedStartError(f"the embedded Postgres in {self.pgdata} did not answer in time")
            time.sleep(0.2)
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if exists is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
        dsn = self._server.get_uri(DATABASE)
        self.record = write_record(self.run_dir, NAME, int(self._server.get_pid()), dsn)
        return self.record

    def _remove_stale_pid_file(self) -> None:
        """A killed postmaster can linger as a zombie (no init to reap it in a container), which both
        pgserver and postgres would take for a live server: drop its lock files (``postmaster.pid`` and the
        socket's ``.s.PGSQL.<port>.lock``) when their pid is dead."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            return
        if pid_alive(pid):
            return
        log.warning("removing the lock files of a dead embedded Postgres (pid %d)", pid)
        socket_dirs = {self.pgdata}
        if len(lines) > 4 and lines[4].strip():
            socket_dirs.add(Path(lines[4].strip()))
        for directory in socket_dirs:
            for lock in directory.glob(".s.PGSQL.*.lock"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    if int(lock.read_text().splitlines()[0]) == pid:
                        lock.unlink()
        pid_file.unlink(missing_ok=True)

    def stop(self) -> None:
        """Fast shutdown (pg_ctl -m fast): open transactions roll back, committed data stays."""
        if self._server is None or self.record is None:
            return
        pid = self.record.pid
        if pid_alive(pid):
            from pgserver._commands import pg_ctl  # type: ignore[attr-defined]  # generated at import

            try:
                pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._server.system_user)
            except Exception as exc:  # already stopped or killed meanwhile
                log.warning("stopping the embedded Postgres: %s", exc)
        with contextlib.suppress(OSError):
            remove_record(self.run_dir, NAME, pid)
        self._server = None

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
