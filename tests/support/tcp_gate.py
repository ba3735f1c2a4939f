"""A TCP gate in front of a real PostgreSQL: it forwards connections while open; closing it drops the
connections it carries and refuses new ones, as a database host that went away does. Tests use it to take
the real server away from a running service and give it back (the server itself is never touched)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class TcpGate:
    """Listens on 127.0.0.1 and forwards to the server of ``dsn`` (a Unix socket directory or a TCP host)."""

    def __init__(self, dsn: str) -> None:
        params = conninfo_to_dict(dsn)
        host, port = str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)
        self._target: tuple[int, Any] = (
            (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}")
            if host.startswith("/")
            else (socket.AF_INET, (host, port))
        )
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.dsn = make_conninfo(dsn, host="127.0.0.1", port=str(self.port))
        self.open = True
        self._carried: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="tcp-gate").start()

    def close(self) -> None:
        """Refuse new connections and drop the ones carried."""
        with self._lock:
            self.open = False
            for sock in self._carried:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._carried.clear()

    def reopen(self) -> None:
        with self._lock:
            self.open = True

    def stop(self) -> None:
        self.close()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if not self.open:
                    client.close()
                    continue
                server = socket.socket(self._target[0], socket.SOCK_STREAM)
                try:
                    server.connect(self._target[1])
                except OSError:  # the server refused: so does the gate, for this connection only
                    client.close()
                    server.close()
                    continue
                self._carried += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    for sock in (source, sink):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def tcp_gate(dsn: str) -> Iterator[TcpGate]:
    gate = TcpGate(dsn)
    try:
        yield gate
    finally:
        gate.stop()
