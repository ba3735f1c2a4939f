"""``cdcwh postgres init-roles``: what each role may and may not do, proven by PostgreSQL refusing the
statements (not by reading the grants back). Real PostgreSQL (the session's), unique role names per test."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import astuple
from datetime import UTC, datetime
from urllib.parse import urlsplit

import psycopg
import pytest
import yaml
from psycopg import sql

from cdcwh.audit.api_access import ensure_table
from cdcwh.audit.schema import TABLES
from cdcwh.audit.writer import PostgresAuditWriter
from cdcwh.cli import main
from cdcwh.config import PROJECT_ROOT
from cdcwh.pgprivileges import Need, missing_privileges
from cdcwh.pgroles import RoleNames, render_sql
from tests.integration.postgres.conftest import Roles


def run(dsn: str, query: sql.Composable | str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def refused(dsn: str, query: sql.Composable | str) -> bool:
    """True when PostgreSQL refuses the statement for a lack of privilege (or ownership)."""
    try:
        run(dsn, query)
    except psycopg.errors.InsufficientPrivilege:
        return True
    return False


def owner_creates(roles: Roles, schema: str, table: str) -> sql.Identifier:
    """A table the owner role creates after init-roles (default privileges must reach it)."""
    ident = sql.Identifier(schema, table)
    run(roles.dsn("owner"), sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v text)").format(ident))
    run(roles.dsn("owner"), sql.SQL("INSERT INTO {} VALUES (1, 'a')").format(ident))
    return ident


def test_deploy_roles_sql_is_the_commands_sql() -> None:
    shipped = (PROJECT_ROOT / "deploy" / "postgres" / "roles.sql").read_text()
    assert shipped == render_sql(RoleNames.with_prefix("cdcwh_"), "marts", "audit")
    for role in ("cdcwh_owner", "cdcwh_sink", "cdcwh_audit", "cdcwh_reader"):
        assert f'"{role}"' in shipped


def test_the_reader_reads_the_marts_and_cannot_write_or_create(pg_roles: Roles) -> None:
    mart = owner_creates(pg_roles, pg_roles.marts, "orders")
    reader = pg_roles.dsn("reader")
    assert run(reader, sql.SQL("SELECT id, v FROM {}").format(mart)) == [(1, "a")]
    statements: list[sql.Composable] = [
        sql.SQL("INSERT INTO {} VALUES (2, 'b')").format(mart),
        sql.SQL("UPDATE {} SET v = 'x'").format(mart),
        sql.SQL("DELETE FROM {}").format(mart),
        sql.SQL("TRUNCATE {}").format(mart),
        sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier(pg_roles.marts, "mine")),
        sql.SQL("DROP TABLE {}").format(mart),
    ]
    assert [s.as_string() for s in statements if not refused(reader, s)] == []
    assert run(pg_roles.admin_dsn, sql.SQL("SELECT id, v FROM {}").format(mart)) == [(1, "a")]


def test_the_sink_writes_the_marts_and_cannot_drop_alter_or_create(pg_roles: Roles) -> None:
    mart = owner_creates(pg_roles, pg_roles.marts, "orders")
    sink = pg_roles.dsn("sink")
    run(sink, sql.SQL("INSERT INTO {} VALUES (2, 'b')").format(mart))
    run(sink, sql.SQL("UPDATE {} SET v = 'c' WHERE id = 2").format(mart))
    run(sink, sql.SQL("DELETE FROM {} WHERE id = 1").format(mart))
    assert run(sink, sql.SQL("SELECT id, v FROM {}").format(mart)) == [(2, "c")]
    statements: list[sql.Composable] = [
        sql.SQL("DROP TABLE {}").format(mart),
        sql.SQL("ALTER TABLE {} ADD COLUMN w int").format(mart),
        sql.SQL("ALTER TABLE {} ALTER COLUMN v TYPE varchar(3)").format(mart),
        sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier(pg_roles.marts, "mine")),
        sql.SQL("CREATE VIEW {} AS SELECT 1 AS one").format(sql.Identifier(pg_roles.marts, "mine_v")),
        sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(pg_roles.marts)),
        sql.SQL("INSERT INTO {} VALUES (1)").format(sql.Identifier(pg_roles.audit, "events")),
    ]
    owner_creates(pg_roles, pg_roles.audit, "events")
    assert [s.as_string() for s in statements if not refused(sink, s)] == []
    assert run(pg_roles.admin_dsn, sql.SQL("SELECT id, v FROM {}").format(mart)) == [(2, "c")]


def test_the_audit_role_only_inserts_into_audit(pg_roles: Roles) -> None:
    events = owner_creates(pg_roles, pg_roles.audit, "events")
    mart = owner_creates(pg_roles, pg_roles.marts, "orders")
    audit = pg_roles.dsn("audit")
    run(audit, sql.SQL("INSERT INTO {} VALUES (2, 'login')").format(events))
    # the writers' idempotent insert: INSERT alone is enough, a duplicate key is skipped, not an error
    for _ in range(2):
        run(audit, sql.SQL("INSERT INTO {} VALUES (3, 'again') ON CONFLICT DO NOTHING").format(events))
    assert run(pg_roles.admin_dsn, sql.SQL("SELECT id FROM {} ORDER BY id").format(events)) == [
        (1,),
        (2,),
        (3,),
    ]
    statements: list[sql.Composable] = [
        sql.SQL("SELECT id FROM {}").format(events),
        sql.SQL("UPDATE {} SET v = 'forged'").format(events),
        sql.SQL("DELETE FROM {}").format(events),
        sql.SQL("TRUNCATE {}").format(events),
        sql.SQL("DROP TABLE {}").format(events),
        sql.SQL("SELECT * FROM {}").format(mart),
        sql.SQL("INSERT INTO {} VALUES (3, 'x')").format(mart),
        sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier(pg_roles.audit, "mine")),
    ]
    assert [s.as_string() for s in statements if not refused(audit, s)] == []


def test_init_roles_grants_the_database_privileges_instead_of_relying_on_public(
    roles_unmade: Roles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a database where PUBLIC has neither CONNECT nor TEMPORARY (a throwaway one: the other tests keep
    the defaults), every role still connects and the sink creates its temporary staging tables."""
    db = f"d_{roles_unmade.prefix.rstrip('_')}"
    with psycopg.connect(roles_unmade.admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
        admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(db)))
    on_db = Roles(
        psycopg.conninfo.make_conninfo(roles_unmade.admin_dsn, dbname=db), *astuple(roles_unmade)[1:]
    )
    try:
        public = "SELECT has_database_privilege('public', current_database(), %s)"
        assert run(on_db.admin_dsn, public, ("TEMPORARY",)) == [(False,)]
        assert run(on_db.admin_dsn, public, ("CONNECT",)) == [(False,)]
        for name, value in on_db.env().items():
            monkeypatch.setenv(name, value)
        assert main(on_db.init_args()) == 0
        for purpose in ("owner", "audit", "reader"):
            assert run(on_db.dsn(purpose), "SELECT current_user") == [(on_db.name(purpose),)]
            assert refused(on_db.dsn(purpose), "CREATE TEMPORARY TABLE t (id int)")
        with psycopg.connect(on_db.dsn("sink")) as conn:
            conn.execute("CREATE TEMPORARY TABLE t (id int)")
            assert conn.execute("INSERT INTO t VALUES (1) RETURNING id").fetchall() == [(1,)]
    finally:
        with psycopg.connect(roles_unmade.admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db)))


def test_init_roles_is_idempotent_and_hands_existing_tables_to_the_owner(
    roles_unmade: Roles, monkeypatch: pytest.MonkeyPatch
) -> None:
    roles = roles_unmade
    for name, value in roles.env().items():
        monkeypatch.setenv(name, value)
    # a mart table an admin created before there were roles (the local default's sink did that)
    run(roles.admin_dsn, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(roles.marts)))
    legacy = sql.Identifier(roles.marts, "legacy")
    run(roles.admin_dsn, sql.SQL("CREATE TABLE {} (id int PRIMARY KEY)").format(legacy))
    assert main(roles.init_args()) == 0
    assert main(roles.init_args()) == 0  # again: nothing fails, nothing changes
    owners = run(
        roles.admin_dsn,
        "SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = ANY(%s) ORDER BY 1",
        ([roles.marts, roles.audit],),
    )
    assert sorted(owners) == sorted([(roles.marts, roles.name("owner")), (roles.audit, roles.name("owner"))])
    table_owner = run(
        roles.admin_dsn, "SELECT tableowner FROM pg_tables WHERE schemaname = %s", (roles.marts,)
    )
    assert table_owner == [(roles.name("owner"),)]
    run(roles.dsn("sink"), sql.SQL("INSERT INTO {} VALUES (1)").format(legacy))
    assert run(roles.dsn("reader"), sql.SQL("SELECT id FROM {}").format(legacy)) == [(1,)]
    run(roles.dsn("owner"), sql.SQL("ALTER TABLE {} ADD COLUMN v text").format(legacy))
    flags = run(
        roles.admin_dsn,
        "SELECT rolname, rolcanlogin, rolsuper, rolcreaterole FROM pg_roles WHERE rolname LIKE %s ORDER BY 1",
        (roles.prefix + "%",),
    )
    assert flags == sorted((roles.name(p), True, False, False) for p in ("audit", "owner", "reader", "sink"))


def test_passwords_come_from_the_environment_and_are_never_printed(
    roles_unmade: Roles, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = f"pw-{uuid.uuid4().hex}"
    for name, value in roles_unmade.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TEST_SINK_PG_PASSWORD", secret)
    assert main([*roles_unmade.init_args(), "--password-env", "sink=TEST_SINK_PG_PASSWORD"]) == 0
    stored = run(
        roles_unmade.admin_dsn,
        "SELECT rolpassword FROM pg_authid WHERE rolname = %s",
        (roles_unmade.name("sink"),),
    )
    assert str(stored[0][0]).startswith("SCRAM-SHA-256$4096:")
    assert secret not in str(stored[0][0])
    out = capsys.readouterr()
    assert secret not in out.out + out.err
    assert main([*roles_unmade.init_args(), "--password-env", "sink=TEST_UNSET_VARIABLE"]) == 2
    assert "TEST_UNSET_VARIABLE" in capsys.readouterr().err


def test_compose_runs_the_roles_script_and_gives_each_purpose_its_role() -> None:
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    warehouse = compose["services"]["warehouse-postgres"]
    init = {
        target: source
        for source, target, *_ in (mount.split(":") for mount in warehouse["volumes"])
        if target.startswith("/docker-entrypoint-initdb.d/")
    }
    assert "./deploy/postgres/roles.sql" in init.values()
    scripts = [init[target] for target in sorted(init)]  # the image runs them in file name order
    assert scripts.index("./deploy/postgres/roles.sql") < scripts.index(
        "./deploy/postgres/demo-passwords.sql"
    )
    given: dict[str, set[str]] = {}
    for name in ("cdcwh-ingest", "cdcwh-transform", "cdcwh-sink", "cdcwh-serve"):
        env = compose["services"][name]["environment"]
        assert "CDCWH_POSTGRES__DSN" not in env, name  # the superuser
        for purpose in ("owner", "sink", "audit", "reader"):
            if (value := env.get(f"CDCWH_POSTGRES__{purpose.upper()}_DSN")) is not None:
                dsn = urlsplit(value)
                assert (dsn.username, dsn.hostname) == (f"cdcwh_{purpose}", "warehouse-postgres")
                given.setdefault(purpose, set()).add(name)
    assert given["reader"] == {"cdcwh-serve"} and "cdcwh-serve" not in given["owner"] | given["sink"]


def test_the_preflight_counts_a_missing_schema_or_table_as_missing(pg_roles: Roles) -> None:
    owner_creates(pg_roles, pg_roles.marts, "orders")
    needs = [
        Need("schema", "USAGE", f"{pg_roles.marts}_gone"),
        Need("table", "SELECT", pg_roles.marts, "gone"),
        Need("table", "INSERT", pg_roles.marts, "orders"),  # the reader may not
        Need("table", "SELECT", pg_roles.marts, "orders"),
        Need("schema", "USAGE", pg_roles.marts),
        Need("database", "TEMPORARY"),
    ]
    with psycopg.connect(pg_roles.dsn("reader")) as conn:
        assert missing_privileges(conn, needs) == needs[:3]
    with psycopg.connect(pg_roles.dsn("sink")) as conn:
        assert missing_privileges(conn, needs) == needs[:2]


def test_init_roles_creates_the_audit_tables_so_the_audit_dsn_alone_is_enough(pg_roles: Roles) -> None:
    """init-roles makes every audit table (the API's ``api_access`` too) owned by the owner role; a writer
    whose only DSN is the audit role's (INSERT only) checks them, writes, and runs no DDL; the API's
    ``ensure_table`` on the audit role does nothing either."""
    expected = sorted(set(TABLES) | {"api_access"})
    owners = run(
        pg_roles.admin_dsn,
        "SELECT relname, pg_get_userbyid(relowner) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE nspname = %s AND relkind IN ('r', 'v') ORDER BY 1",
        (pg_roles.audit,),
    )
    assert owners == [(name, pg_roles.name("owner")) for name in sorted([*expected, "daily_metrics"])]
    audit = pg_roles.dsn("audit")
    writer = PostgresAuditWriter(lambda: audit, lambda: audit, pg_roles.audit)
    now = datetime.now(UTC)
    row = ("sink", "run-1", now, now, "ok", 1, 1, None)
    assert writer.write({"pipeline_runs": [row]}) == 1
    assert writer.write({"pipeline_runs": [row]}) == 0  # ON CONFLICT DO NOTHING, with INSERT only
    writer.close()
    assert refused(audit, sql.SQL("SELECT * FROM {}").format(sql.Identifier(pg_roles.audit, "pipeline_runs")))

    async def api_access_ready() -> None:
        async with await psycopg.AsyncConnection.connect(audit, autocommit=True) as conn:
            await ensure_table(conn, pg_roles.audit)

    asyncio.run(api_access_ready())
    # the owner role (no CREATE on the database) checks the existing schema without re-creating it
    owned = PostgresAuditWriter(lambda: audit, lambda: pg_roles.dsn("owner"), pg_roles.audit)
    assert owned.prune(retention_days=1) == dict.fromkeys(TABLES, 0)
    owned.close()


def test_init_roles_refuses_a_non_superuser_before_changing_anything(
    roles_unmade: Roles, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CREATEROLE role is not enough on PostgreSQL 16 (it may not set NOSUPERUSER): init-roles says so at
    start, naming the role and the setting, and creates nothing."""
    admin = roles_unmade.name("admin")
    run(roles_unmade.admin_dsn, sql.SQL("CREATE ROLE {} LOGIN CREATEROLE").format(sql.Identifier(admin)))
    try:
        for name, value in roles_unmade.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv(
            "CDCWH_POSTGRES__DSN", psycopg.conninfo.make_conninfo(roles_unmade.admin_dsn, user=admin)
        )
        assert main(roles_unmade.init_args()) == 2
        err = capsys.readouterr().err
        assert f"{admin} (postgres.dsn) is not a superuser" in err
        made = run(
            roles_unmade.admin_dsn,
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE %s",
            (f"{roles_unmade.prefix}%",),
        )
        assert made == [(1,)]  # only the admin made here
    finally:
        run(roles_unmade.admin_dsn, sql.SQL("DROP ROLE {}").format(sql.Identifier(admin)))
