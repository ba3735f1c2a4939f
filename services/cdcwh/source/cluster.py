"""The embedded source PostgreSQL: a second cluster from the ``pgserver`` wheel's binaries (PostgreSQL 16).

Unlike the warehouse Postgres it listens on 127.0.0.1 and a TCP port (the Debezium connector's JDBC driver
cannot use a Unix socket) and runs with ``wal_level=logical``, so the connector can stream it through
``pgoutput``. Data under ``<data_dir>/source``; the shop schema of ``sql/source/shop.sql`` is loaded into the
``shop`` database at the first start. As root, the server runs as pgserver's unprivileged user (initdb refuses
root). ``EmbeddedSource.start()`` records the DSN in ``<data_dir>/run/source.json``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import subprocess
import time
import warnings
from pathlib import Path
from types import TracebackType

import psycopg

from cdcwh.embedded.broker import free_port, port_in_use
from cdcwh.embedded.postgres import postgres_answers
from cdcwh.embedded.registry import ServiceRecord, pid_alive, read_record, remove_record, write_record
from cdcwh.errors import AlreadyRunning, EmbeddedStartError

NAME = "source"
HOST = "127.0.0.1"
DATABASE = "shop"
SUPERUSER = "postgres"
START_TIMEOUT_S = 60
OS_USER = "pgserver"  # the unprivileged user pgserver itself runs the warehouse Postgres as

SERVER_CONF = {
    "listen_addresses": f"'{HOST}'",
    "unix_socket_directories": "''",
    "wal_level": "logical",
    "max_replication_slots": "10",
    "max_wal_senders": "10",
    "timezone": "'UTC'",
}

log = logging.getLogger(__name__)


def bin_dir() -> Path:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset on servers
            from pgserver._commands import POSTGRES_BIN_PATH
    except ImportError as exc:
        raise EmbeddedStartError(
            "the embedded source needs the 'embedded' extra: pip install 'cdcwh[embedded]' "
            "(or set CDCWH_SOURCE__DSN to a PostgreSQL server with wal_level=logical)"
        ) from exc
    return Path(POSTGRES_BIN_PATH)


def make_dsn(port: int, database: str = DATABASE) -> str:
    return f"postgresql://{SUPERUSER}@{HOST}:{port}/{database}"


def _saved_port(path: Path) -> int | None:
    """The port this data dir's source used before, if free: the DSN stays the same across restarts."""
    try:
        port = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    if port_in_use(port):
        log.warning("the embedded source's previous port %d is taken; choosing another", port)
        return None
    return port


class EmbeddedSource:
    """A source cluster owned by this object (use as a context manager, or ``start``/``stop``)."""

    def __init__(self, data_dir: Path, run_dir: Path, shop_sql: Path, port: int | None = None) -> None:
        self.base = (data_dir / "source").resolve()
        self.pgdata = self.base / "pgdata"
        self.log_path = self.base / "postgres.log"
        self.port_path = self.base / "port"
        self.run_dir = run_dir
        self.shop_sql = shop_sql
        self.requested_port = port
        self.record: ServiceRecord | None = None
        self.os_user: str | None = None

    @property
    def dsn(self) -> str:
        if self.record is None:
            raise EmbeddedStartError("the embedded source is not started")
        return self.record.address

    def start(self) -> ServiceRecord:
        existing = read_record(self.run_dir, NAME)
        if existing is not None and existing.alive:
            raise AlreadyRunning(
                f"an embedded source is already running for this data dir (pid {existing.pid}); "
                f"connect with: psql '{existing.address}'"
            )
        binaries = bin_dir()
        self._prepare_user(binaries)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(binaries)
        self._remove_stale_pid_file()
        port = self.requested_port or _saved_port(self.port_path) or free_port()
        if port_in_use(port):
            raise EmbeddedStartError(f"cannot start the embedded source: port {port} on {HOST} is in use")
        self.port_path.write_text(f"{port}\n")
        try:
            self._run(binaries / "pg_ctl", "-D", str(self.pgdata), "-l", str(self.log_path), "-o",
                      f"-p {port}", "-w", "-t", str(START_TIMEOUT_S), "start")  # fmt: skip
        except subprocess.CalledProcessError as exc:
            raise EmbeddedStartError(
                f"the embedded source could not start in {self.pgdata}: {exc.stderr.strip()}; "
                f"last lines of {self.log_path}:\n{self._log_tail()}"
            ) from exc
        admin = make_dsn(port, "postgres")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not postgres_answers(admin):
            if time.monotonic() > deadline:
                raise EmbeddedStartError(f"the embedded source on port {port} did not answer in time")
            time.sleep(0.2)
        self._load_shop(admin, make_dsn(port))
        self.record = write_record(self.run_dir, NAME, self._postmaster_pid(), make_dsn(port))
        return self.record

    def alive(self) -> bool:
        return self.record is not None and pid_alive(self.record.pid)

    def stop(self) -> None:
        """Fast shutdown: open transactions roll back, committed data (and the replication slot) stays."""
        if self.record is None:
            return
        pid = self.record.pid
        if pid_alive(pid):
            try:
                self._run(bin_dir() / "pg_ctl", "-D", str(self.pgdata), "-w", "-m", "fast", "stop")
            except subprocess.CalledProcessError as exc:  # killed meanwhile
                log.warning("stopping the embedded source: %s", exc.stderr.strip())
        with contextlib.suppress(OSError):
            remove_record(self.run_dir, NAME, pid)
        self.record = None

    # -- internals ------------------------------------------------------------------------------------------

    def _run(self, *command: str | Path) -> None:
        subprocess.run(  # noqa: S603 - the wheel's binaries, arguments built here
            [str(part) for part in command],
            check=True,
            user=self.os_user,
            cwd=self.base,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # Ctrl-C in the terminal reaches cdcwh, which then stops the server
        )

    def _prepare_user(self, binaries: Path) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        if os.geteuid() != 0:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset on servers
            from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

        self.os_user = OS_USER
        ensure_user_exists(OS_USER)
        ensure_prefix_permissions(self.base)
        ensure_prefix_permissions(binaries)
        entry = pwd.getpwnam(OS_USER)
        for path in (self.base, self.log_path):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _initdb(self, binaries: Path) -> None:
        log.info("initialising the embedded source cluster in %s", self.pgdata)
        self._run(binaries / "initdb", "-D", str(self.pgdata), "--auth=trust", "-U", SUPERUSER,
                  "--encoding=UTF8", "--locale=C")  # fmt: skip
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write("\n# cdcwh embedded source\n")
            conf.writelines(f"{key} = {value}\n" for key, value in SERVER_CONF.items())
        with (self.pgdata / "pg_hba.conf").open("a") as hba:
            hba.write(f"host replication all {HOST}/32 trust\n")

    def _load_shop(self, admin_dsn: str, shop_dsn: str) -> None:
        """Create the shop database and load ``shop.sql`` into it, once (the database existing means done)."""
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
                return
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
        try:
            with psycopg.connect(shop_dsn) as conn:
                conn.execute(self.shop_sql.read_bytes())
        except (OSError, psycopg.Error) as exc:
            with psycopg.connect(admin_dsn, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}"')
            raise EmbeddedStartError(f"cannot load {self.shop_sql} into the embedded source: {exc}") from exc

    def _postmaster_pid(self) -> int:
        return int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])

    def _remove_stale_pid_file(self) -> None:
        """A killed postmaster (a zombie without init to reap it) leaves postmaster.pid behind."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        if not pid_alive(pid):
            log.warning("removing the lock file of a dead embedded source (pid %d)", pid)
            pid_file.unlink(missing_ok=True)

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> EmbeddedSource:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
