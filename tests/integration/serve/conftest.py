"""The API over the small shop (``shop.py``) and a client of it whose every request must be audited; a
module may define its own ``api``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.serve.shop import Api, Client, audit_rows, running, wait_for


@pytest.fixture
def api(postgres_dsn: str, pg_schema: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Api]:
    serve = getattr(request, "param", {})
    yield from running(postgres_dsn, pg_schema, tmp_path, **serve)


@pytest.fixture
def client(api: Api) -> Iterator[Client]:
    client = Client(api)
    yield client
    client.http.close()
    audit_schema = api.settings.postgres.audit_schema
    rows = wait_for(
        lambda: (r := audit_rows(api.dsn, audit_schema)) and len(r) >= client.sent and r,
        what=f"{client.sent} audit rows",
    )
    assert len(rows) == client.sent  # every request, once
