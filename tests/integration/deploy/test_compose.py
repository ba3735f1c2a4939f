"""docker-compose.yml (no Docker engine here): every reference resolves, every CDCWH_* variable is a real
setting, and the Prometheus, Grafana, Debezium and source-database files agree with it."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import yaml
from psycopg import sql
from pydantic import BaseModel

from cdcwh.config import Settings, load_settings
from tests.integration.deploy.conftest import COMPOSE_FILE, DEPLOY, PROMETHEUS_CONFIG, ROOT

CDCWH_SERVICES = {
    "cdcwh-ingest": ("ingest", 0),
    "cdcwh-transform": ("transform", 1),
    "cdcwh-sink": ("sink", 2),
}
CONNECTOR = DEPLOY / "debezium" / "shop-connector.json"
SHOP_TABLES = {
    "customers": ["id", "email", "first_name", "last_name", "segment", "country", "created_at"],
    "products": ["id", "sku", "name", "category", "price", "active", "description"],
    "orders": ["id", "customer_id", "status", "order_date", "created_at"],
    "order_items": ["id", "order_id", "product_id", "quantity", "unit_price"],
    "payments": ["id", "order_id", "method", "amount", "created_at"],
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text()))


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def host_ports(service: dict[str, Any]) -> list[int]:
    return [int(str(p).split(":")[0]) for p in service.get("ports", [])]


def test_the_topology_of_design_section_11(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for needed in (
        "kafka",
        "connect",
        "schema-registry",
        "source-postgres",
        "warehouse-postgres",
        "prometheus",
        "grafana",
        *CDCWH_SERVICES,
    ):
        assert needed in services, needed
    assert not any("zookeeper" in name for name in services)
    kafka = env_of(services["kafka"])
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}  # KRaft
    assert len(base64.urlsafe_b64decode(kafka["CLUSTER_ID"] + "==")) == 16
    assert "debezium/connect" in services["connect"]["image"]
    for name, (command, _) in CDCWH_SERVICES.items():
        assert services[name]["build"] == "."
        assert services[name]["command"] == [command]


def test_references_resolve(compose: dict[str, Any]) -> None:
    services = compose["services"]
    volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        depends = service.get("depends_on", [])
        for dep in depends if isinstance(depends, list) else depends:
            assert dep in services, f"{name} depends on unknown service {dep}"
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in volumes, f"{name} uses undeclared volume {source}"
    ports = [port for service in services.values() for port in host_ports(service)]
    assert len(ports) == len(set(ports)), f"host port published twice: {ports}"
    assert (ROOT / "Dockerfile").exists()


def test_cdcwh_variables_are_valid_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no cdcwh.toml
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY \S+ \./(\S+)$", dockerfile, re.M))
    for name, (service_name, offset) in CDCWH_SERVICES.items():
        env = env_of(compose["services"][name])
        for var in env:
            if var.startswith("CDCWH_"):
                assert_setting_exists(var)
        with monkeypatch.context() as patch:
            for var in [v for v in os.environ if v.startswith("CDCWH_")]:
                patch.delenv(var)
            for var, value in env.items():
                patch.setenv(var, value)
            settings = load_settings()
        assert settings.metrics.host == "0.0.0.0"  # noqa: S104 - reachable from the prometheus container
        assert settings.kafka.bootstrap_servers == "kafka:9092"
        assert settings.postgres.dsn is not None
        assert settings.iceberg.catalog_uri and settings.iceberg.catalog_uri.startswith("sqlite:////data/")
        assert str(settings.data_dir) == "/data"
        for path in (settings.contracts_dir, settings.sql_dir):
            assert path is not None and path.is_absolute()
            assert str(path.relative_to("/app")) in copied, f"{path} is not copied in the Dockerfile"
        port = settings.metrics.port + offset
        assert port in host_ports(compose["services"][name]), (name, port)
        assert service_name in name


def assert_setting_exists(var: str) -> None:
    """``CDCWH_SECTION__FIELD`` names a field of ``Settings`` (extra env vars would be silently ignored)."""
    parts = var.removeprefix("CDCWH_").lower().split("__")
    model: type[BaseModel] = Settings
    for i, part in enumerate(parts):
        fields = {f.alias or n: f for n, f in model.model_fields.items()} | dict(model.model_fields)
        assert part in fields, f"{var}: no setting {part!r}"
        annotation = fields[part].annotation
        if i < len(parts) - 1:
            assert isinstance(annotation, type) and issubclass(annotation, BaseModel), var
            model = annotation


def test_a_misspelled_variable_is_caught() -> None:
    with pytest.raises(AssertionError):
        assert_setting_exists("CDCWH_METRICS__PROT")
    assert_setting_exists("CDCWH_METRICS__PORT")


def test_commands_exist() -> None:
    for _, (command, _) in CDCWH_SERVICES.items():
        result = subprocess.run(
            [sys.executable, "-m", "cdcwh.cli", command, "--help"], capture_output=True, timeout=60
        )
        assert result.returncode == 0, command


def test_prometheus_targets_are_the_compose_services(compose: dict[str, Any]) -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "cdcwh"]
    targets = {t for static in job["static_configs"] for t in static["targets"]}
    expected = set()
    for name, (_, offset) in CDCWH_SERVICES.items():
        base = int(env_of(compose["services"][name])["CDCWH_METRICS__PORT"])
        expected.add(f"{name}:{base + offset}")
    assert targets == expected
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in mounts
    assert "--config.file=/etc/prometheus/prometheus.yml" in compose["services"]["prometheus"]["command"]


def test_grafana_provisioning_matches_compose(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(m.rsplit(":", 1)[0].split(":", 1) for m in grafana["volumes"] if m.startswith("."))
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/cdcwh.yml").read_text())[
        "providers"
    ]
    assert mounts["./deploy/grafana/dashboards"] == providers[0]["options"]["path"]
    datasources = {
        d["uid"]: d
        for d in yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/cdcwh.yml").read_text())[
            "datasources"
        ]
    }
    assert urlsplit(datasources["prometheus"]["url"]).hostname == "prometheus"
    warehouse = datasources["warehouse"]
    host = warehouse["url"].split(":")[0]
    pg_env = env_of(compose["services"][host])
    assert warehouse["jsonData"]["database"] == pg_env["POSTGRES_DB"]
    for ref in re.findall(r"\$\{(\w+)\}", yaml.safe_dump(warehouse)):
        assert ref in env_of(grafana), f"grafana lacks {ref}"
    dsn = urlsplit(env_of(compose["services"]["cdcwh-sink"])["CDCWH_POSTGRES__DSN"])
    assert (dsn.hostname, dsn.path.lstrip("/"), dsn.username) == (
        host,
        pg_env["POSTGRES_DB"],
        pg_env["POSTGRES_USER"],
    )


def test_debezium_connector_produces_the_shop_topics(compose: dict[str, Any]) -> None:
    connector = json.loads(CONNECTOR.read_text())
    config = connector["config"]
    source = compose["services"][config["database.hostname"]]
    source_env = env_of(source)
    assert config["database.dbname"] == source_env["POSTGRES_DB"]
    assert config["database.user"] == source_env["POSTGRES_USER"]
    assert "wal_level=logical" in source["command"]
    assert "./sql/source/shop.sql:/docker-entrypoint-initdb.d/10-shop.sql:ro" in source["volumes"]
    assert config["topic.prefix"] == "shop"
    assert config["value.converter.schemas.enable"] == "true"
    # every table of the schema, tables created later included, and truncates too (silver applies them)
    assert "table.include.list" not in config and config["schema.include.list"] == "public"
    assert config["publication.autocreate.mode"] == "all_tables"
    assert config["skipped.operations"] == "none"
    assert config["signal.data.collection"] == "public.debezium_signal"
    assert "CREATE TABLE public.debezium_signal" in (ROOT / "sql" / "source" / "shop.sql").read_text()
    pattern = re.compile(Settings().kafka.topics)
    for table in SHOP_TABLES:
        topic = f"shop.public.{table}"
        assert pattern.match(topic), topic
        assert (ROOT / "schemas" / "contracts" / f"{topic}.toml").exists(), topic
    assert "./deploy/debezium:/debezium:ro" in compose["services"]["connect-init"]["volumes"]
    assert subprocess.run(["sh", "-n", str(DEPLOY / "debezium" / "register.sh")]).returncode == 0


def test_source_schema_loads_with_keys_and_replica_identity_default(postgres_dsn: str) -> None:
    name = f"cdcwh_shop_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with psycopg.connect(psycopg.conninfo.make_conninfo(postgres_dsn, dbname=name)) as conn:
            conn.execute((ROOT / "sql" / "source" / "shop.sql").read_text())  # type: ignore[arg-type]
            for table, columns in SHOP_TABLES.items():
                got = [
                    r[0]
                    for r in conn.execute(
                        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public'"
                        " AND table_name = %s ORDER BY ordinal_position",
                        (table,),
                    ).fetchall()
                ]
                assert got == columns, table
                key = conn.execute(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
                    " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
                    (f"public.{table}",),
                ).fetchall()
                assert [r[0] for r in key] == ["id"], table
                identity = conn.execute(
                    "SELECT relreplident FROM pg_class WHERE oid = %s::regclass", (f"public.{table}",)
                ).fetchone()
                assert identity == ("d",), table
                count = conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("public", table))
                ).fetchone()
                assert count is not None and count[0] > 0, table
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
