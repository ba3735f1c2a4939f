"""Roles per service on the session's PostgreSQL: ``pg_roles`` runs ``cdcwh postgres init-roles`` (in-process,
the session DSN as admin) with role names and schemas no other test uses, and drops them after."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql

from cdcwh.cli import main
from cdcwh.pgroles import PURPOSES


@dataclass(frozen=True)
class Roles:
    admin_dsn: str
    prefix: str
    marts: str
    audit: str

    def name(self, purpose: str) -> str:
        return f"{self.prefix}{purpose}"

    def dsn(self, purpose: str) -> str:
        """The admin DSN logging in as the role (the embedded Postgres trusts local connections)."""
        return psycopg.conninfo.make_conninfo(self.admin_dsn, user=self.name(purpose))

    def init_args(self) -> list[str]:
        return ["postgres", "init-roles", "--role-prefix", self.prefix]

    def env(self) -> dict[str, str]:
        return {
            "CDCWH_POSTGRES__DSN": self.admin_dsn,
            "CDCWH_POSTGRES__SCHEMA": self.marts,
            "CDCWH_POSTGRES__AUDIT_SCHEMA": self.audit,
        }


def drop_roles(admin_dsn: str, roles: Roles) -> None:
    names = [sql.Identifier(roles.name(purpose)) for purpose in PURPOSES]
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for schema in (roles.marts, roles.audit):
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        existing = conn.execute(
            "SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)", ([roles.name(p) for p in PURPOSES],)
        ).fetchone()
        if existing and existing[0]:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.SQL(", ").join(names)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.SQL(", ").join(names)))


@pytest.fixture
def roles_unmade(postgres_dsn: str) -> Iterator[Roles]:
    """Unique role names and schemas (not created yet), dropped after the test."""
    tag = uuid.uuid4().hex[:8]
    roles = Roles(postgres_dsn, f"r{tag}_", f"m_{tag}", f"a_{tag}")
    yield roles
    drop_roles(postgres_dsn, roles)


@pytest.fixture
def pg_roles(roles_unmade: Roles, monkeypatch: pytest.MonkeyPatch) -> Roles:
    """``cdcwh postgres init-roles`` run once for unique role names and schemas."""
    for name, value in roles_unmade.env().items():
        monkeypatch.setenv(name, value)
    assert main(roles_unmade.init_args()) == 0
    return roles_unmade
