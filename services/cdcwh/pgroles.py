"""PostgreSQL roles per service: the SQL of ``cdcwh postgres init-roles`` and ``deploy/postgres/roles.sql``.

One source of truth: ``role_statements`` builds the statements (psycopg.sql, every identifier quoted), the
command runs them, and ``deploy/postgres/roles.sql`` is ``render_sql`` of the defaults (a test checks the file
against it; regenerate with ``cdcwh postgres init-roles --print-sql > deploy/postgres/roles.sql``).

The roles (``<prefix>`` is ``cdcwh_`` unless ``--role-prefix`` says otherwise):

- ``<prefix>owner`` owns the marts and audit schemas and every table in them: it runs the DDL (the sink's
  mart tables, migrations); the audit tables (``cdcwh.audit.schema``, ``api_access`` included) are created
  here, as the owner (``SET ROLE``), so services with only the audit DSN find them;
- ``<prefix>sink`` reads and writes the rows of the mart tables (marts, tombstones, dead letters): SELECT,
  INSERT, UPDATE, DELETE; no CREATE in the schema, owns nothing, so it can neither create, alter nor drop;
- ``<prefix>audit`` inserts into the audit tables, nothing else: not even SELECT (the writers'
  ``ON CONFLICT DO NOTHING`` needs INSERT only, and identity columns need no sequence grant);
- ``<prefix>reader`` selects from the mart tables (the API, dashboards, ``cdcwh status``).

Every role can log in (``LOGIN``); a password is set only when given (``init-roles`` reads them from the
environment, never from the command line, and sends a SCRAM-SHA-256 verifier, never the password itself).
``ALTER DEFAULT PRIVILEGES FOR ROLE <prefix>owner`` makes a table the owner creates later carry the same
grants. Every statement is idempotent: running the whole script again changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass

from psycopg import sql

from cdcwh.audit.schema import tables_ddl

DEFAULT_PREFIX = "cdcwh_"
PURPOSES = ("owner", "sink", "audit", "reader")
SCRAM_ITERATIONS = 4096

# What each role may do on the tables of a schema ("marts" or "audit"); the owner owns them.
TABLE_GRANTS: dict[str, dict[str, tuple[str, ...]]] = {
    "marts": {"sink": ("SELECT", "INSERT", "UPDATE", "DELETE"), "reader": ("SELECT",)},
    "audit": {"audit": ("INSERT",)},
}
# The database privileges of each role: the sink stages rows in temporary tables; none relies on PUBLIC's.
DATABASE_GRANTS: dict[str, tuple[str, ...]] = {
    "owner": ("CONNECT",),
    "sink": ("CONNECT", "TEMPORARY"),
    "audit": ("CONNECT",),
    "reader": ("CONNECT",),
}


@dataclass(frozen=True)
class RoleNames:
    owner: str
    sink: str
    audit: str
    reader: str

    @classmethod
    def with_prefix(cls, prefix: str = DEFAULT_PREFIX) -> RoleNames:
        return cls(*(f"{prefix}{purpose}" for purpose in PURPOSES))

    def of(self, purpose: str) -> str:
        name: str = getattr(self, purpose)
        return name


def scram_verifier(password: str, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677), so the password never
    travels in a statement a server log could keep."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _create_role(name: str) -> sql.Composed:
    """CREATE ROLE when missing (a DO block: CREATE ROLE has no IF NOT EXISTS); the name is a literal inside
    the quoted body, then quoted as an identifier by format()."""
    body = sql.SQL(
        "BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {name}) THEN "
        "EXECUTE format('CREATE ROLE %I LOGIN', {name}); END IF; END"
    ).format(name=sql.Literal(name))
    return sql.SQL("DO {}").format(sql.Literal(body.as_string()))


def role_statements(
    roles: RoleNames,
    marts_schema: str,
    audit_schema: str,
    passwords: Mapping[str, str] | None = None,
) -> list[sql.Composed]:
    """The statements creating the roles, the schemas (owned by the owner role) and the grants, in order.
    ``passwords``: per purpose ("owner", ...), the password to set (others are left as they are)."""
    out: list[sql.Composed] = []
    for purpose in PURPOSES:
        out.append(_create_role(roles.of(purpose)))
        out.append(
            sql.SQL("ALTER ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(
                sql.Identifier(roles.of(purpose))
            )
        )
    for purpose, password in sorted((passwords or {}).items()):
        out.append(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(roles.of(purpose)), sql.Literal(scram_verifier(password))
            )
        )
    for purpose, privileges in DATABASE_GRANTS.items():
        out.append(_grant_on_database(privileges, roles.of(purpose)))
    owner = sql.Identifier(roles.owner)
    for kind, schema in (("marts", marts_schema), ("audit", audit_schema)):
        ident = sql.Identifier(schema)
        out.append(sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(ident, owner))
        out.append(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(ident, owner))
        out.append(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(ident))
        out.append(_own_tables(schema, roles.owner))
        if kind == "audit":  # its tables, made by the owner: services with only the audit DSN find them
            out.append(sql.SQL("SET ROLE {}").format(owner))
            out.append(tables_ddl(schema))
            out.append(sql.Composed([sql.SQL("RESET ROLE")]))
        for purpose, privileges in TABLE_GRANTS[kind].items():
            grantee = sql.Identifier(roles.of(purpose))
            out.append(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(ident, grantee))
            out.append(sql.SQL("REVOKE CREATE ON SCHEMA {} FROM {}").format(ident, grantee))
            privs = sql.SQL(", ").join(map(sql.SQL, privileges))
            # from scratch: what an earlier version granted and this one does not is taken back
            out.append(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(ident, grantee))
            out.append(
                sql.SQL(
                    "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} REVOKE ALL ON TABLES FROM {}"
                ).format(owner, ident, grantee)
            )
            out.append(sql.SQL("GRANT {} ON ALL TABLES IN SCHEMA {} TO {}").format(privs, ident, grantee))
            out.append(
                sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT {} ON TABLES TO {}").format(
                    owner, ident, privs, grantee
                )
            )
    return out


def _grant_on_database(privileges: tuple[str, ...], role: str) -> sql.Composed:
    """GRANT ``privileges`` ON DATABASE <the current one> (a DO block: GRANT takes no expression)."""
    body = sql.SQL(
        "BEGIN EXECUTE format('GRANT {} ON DATABASE %I TO %I', current_database(), {}); END"
    ).format(sql.SQL(", ").join(map(sql.SQL, privileges)), sql.Literal(role))
    return sql.SQL("DO {}").format(sql.Literal(body.as_string()))


def _own_tables(schema: str, owner: str) -> sql.Composed:
    """Hand the tables already in ``schema`` (created before the roles, by an admin) to the owner role, so it
    can alter them (the sink widens a column in place) and its default privileges apply from now on."""
    body = sql.SQL(
        "DECLARE t record; BEGIN FOR t IN SELECT c.relname FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = {schema} "
        "AND c.relkind IN ('r', 'p') AND pg_get_userbyid(c.relowner) <> {owner} LOOP "
        "EXECUTE format('ALTER TABLE %I.%I OWNER TO %I', {schema}, t.relname, {owner}); END LOOP; END"
    ).format(schema=sql.Literal(schema), owner=sql.Literal(owner))
    return sql.SQL("DO {}").format(sql.Literal(body.as_string()))


def render_sql(roles: RoleNames, marts_schema: str, audit_schema: str) -> str:
    """The statements as a psql script (no passwords: set them with ``ALTER ROLE ... PASSWORD``)."""
    header = (
        "-- cdcwh PostgreSQL roles, generated by `cdcwh postgres init-roles --print-sql`: do not edit.\n"
        "-- Run as a superuser (a CREATEROLE role cannot set the role attributes) in the warehouse\n"
        "-- database: psql -v ON_ERROR_STOP=1 -d cdcwh -f deploy/postgres/roles.sql (re-running is safe).\n"
        "-- Passwords: ALTER ROLE cdcwh_sink PASSWORD '...' (or `cdcwh postgres init-roles`, from the env).\n"
    )
    body = "".join(
        statement.as_string().rstrip().rstrip(";") + ";\n"
        for statement in role_statements(roles, marts_schema, audit_schema)
    )
    return header + body
