"""A **test stand-in** for a Confluent schema registry: no registry server installs on this machine.

It speaks the subset of the registry's REST API that Kafka Connect's ``AvroConverter`` (Confluent's Java
``CachedSchemaRegistryClient``) and confluent-kafka's Python ``SchemaRegistryClient`` use, with the bodies and
error codes the real registry returns (https://docs.confluent.io/platform/current/schema-registry/develop/api.html):

- ``POST /subjects/{subject}/versions`` ``{"schema": "..."}`` -> ``{"id": n}`` (an identical schema text gets
  the id it already has, in any subject, as the registry does);
- ``POST /subjects/{subject}`` (is this schema registered?) -> ``{"subject", "version", "id", "schema"}``, or
  404 ``40403``;
- ``GET /schemas/ids/{id}`` -> ``{"schema": "..."}``, or 404 ``{"error_code": 40403, ...}``;
- ``GET /subjects``, ``GET /subjects/{subject}/versions``, ``GET /subjects/{subject}/versions/{n|latest}``;
- ``GET/PUT /config`` and ``/config/{subject}`` (the compatibility level; stored, never enforced), and
  ``POST /compatibility/subjects/{subject}/versions/latest`` -> ``{"is_compatible": true}``.

Schemas are compared by their exact text (the real registry compares canonical forms; the converter always
sends the same text for the same Connect schema). ``fail_with`` makes every request answer that HTTP status,
for tests of an unavailable registry.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


@dataclass
class RegistryState:
    schemas: dict[int, str] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)
    subjects: dict[str, list[int]] = field(default_factory=dict)
    config: dict[str, str] = field(default_factory=lambda: {"": "BACKWARD"})
    fail_with: int | None = None
    authorizations: list[str | None] = field(default_factory=list)
    """The ``Authorization`` header of every request, in order (basic auth is not checked)."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def register(self, subject: str, schema: str) -> int:
        with self.lock:
            schema_id = self.ids.get(schema)
            if schema_id is None:
                schema_id = self.ids[schema] = max(self.schemas, default=0) + 1
                self.schemas[schema_id] = schema
            versions = self.subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return schema_id


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self, code: int, message: str) -> None:
        self._send(404, {"error_code": code, "message": message})

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def _route(self, method: str) -> None:
        state = self.server.state
        state.authorizations.append(self.headers.get("Authorization"))
        if state.fail_with is not None:
            self._send(state.fail_with, {"error_code": state.fail_with * 100, "message": "unavailable"})
            return
        path = self.path.split("?", 1)[0].rstrip("/")
        if method == "POST" and (m := re.fullmatch(r"/subjects/([^/]+)/versions", path)):
            schema_id = state.register(m[1], self._body()["schema"])
            self._send(200, {"id": schema_id})
        elif method == "POST" and (m := re.fullmatch(r"/subjects/([^/]+)", path)):
            schema = self._body()["schema"]
            registered = state.subjects.get(m[1], [])
            found = state.ids.get(schema)
            if found is None or found not in registered:
                self._not_found(40403, "Schema not found")
            else:
                version = registered.index(found) + 1
                self._send(200, {"subject": m[1], "version": version, "id": found, "schema": schema})
        elif method == "GET" and (m := re.fullmatch(r"/schemas/ids/(\d+)", path)):
            text = state.schemas.get(int(m[1]))
            if text is None:
                self._not_found(40403, f"Schema {m[1]} not found")
            else:
                self._send(200, {"schema": text})
        elif method == "GET" and path == "/subjects":
            self._send(200, sorted(state.subjects))
        elif method == "GET" and (m := re.fullmatch(r"/subjects/([^/]+)/versions", path)):
            if m[1] not in state.subjects:
                self._not_found(40401, f"Subject '{m[1]}' not found.")
            else:
                self._send(200, list(range(1, len(state.subjects[m[1]]) + 1)))
        elif method == "GET" and (m := re.fullmatch(r"/subjects/([^/]+)/versions/(\d+|latest)", path)):
            subject_ids = state.subjects.get(m[1])
            if not subject_ids:
                self._not_found(40401, f"Subject '{m[1]}' not found.")
                return
            number = len(subject_ids) if m[2] == "latest" else int(m[2])
            if not 1 <= number <= len(subject_ids):
                self._not_found(40402, f"Version {m[2]} not found.")
                return
            latest = subject_ids[number - 1]
            body = {"subject": m[1], "version": number, "id": latest, "schema": state.schemas[latest]}
            self._send(200, body)
        elif (m := re.fullmatch(r"/config(?:/([^/]+))?", path)) and method in ("GET", "PUT"):
            subject = m[1] or ""
            if method == "PUT":
                state.config[subject] = self._body()["compatibility"]
                self._send(200, {"compatibility": state.config[subject]})
            else:
                level = state.config.get(subject, state.config[""])
                self._send(200, {"compatibilityLevel": level})
        elif method == "POST" and re.fullmatch(r"/compatibility/subjects/[^/]+/versions/[^/]+", path):
            self._send(200, {"is_compatible": True})
        else:
            self._not_found(404, f"{method} {path} is not in the stand-in's subset")

    def do_GET(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler's names
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._route("PUT")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: RegistryState


@contextmanager
def schema_registry_standin(state: RegistryState | None = None) -> Iterator[tuple[str, RegistryState]]:
    """Run the stand-in on 127.0.0.1 and a free port; yields its URL and its state."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = state or RegistryState()
    thread = threading.Thread(target=server.serve_forever, name="schema-registry-standin", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
