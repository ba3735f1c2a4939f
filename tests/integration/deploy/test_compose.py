"""docker-compose.yml (no Docker engine here): every reference resolves, every CDCWH_* variable is a real
setting, and the Prometheus, Grafana, Debezium and source-database files agree with it."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import tomllib
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
    "cdcwh-serve": ("serve", 5),
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
    """The host side of each ``[address:]host:container`` mapping."""
    return [int(str(p).rsplit(":", 1)[0].rsplit(":", 1)[-1]) for p in service.get("ports", [])]


# The PostgreSQL DSNs each cdcwh service needs (docs/security.md): none gets postgres.dsn, the superuser.
SERVICE_DSNS = {
    "cdcwh-ingest": {"audit"},
    "cdcwh-transform": {"audit", "owner"},
    "cdcwh-sink": {"sink", "owner", "audit"},
    "cdcwh-serve": {"reader", "audit"},
}


def test_the_production_topology(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for needed in (
        "kafka",
        "connect",
        "source-postgres",
        "warehouse-postgres",
        "prometheus",
        "grafana",
        *CDCWH_SERVICES,
    ):
        assert needed in services, needed
    assert not any("zookeeper" in name for name in services)
    # cdcwh reads JSON topics: a schema registry would run unused (it comes back with Avro)
    assert not any("registry" in name for name in services)
    assert not any("SCHEMA_REGISTRY" in var for name in CDCWH_SERVICES for var in env_of(services[name]))
    kafka = env_of(services["kafka"])
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}  # KRaft
    assert len(base64.urlsafe_b64decode(kafka["CLUSTER_ID"] + "==")) == 16
    repository, tag = services["connect"]["image"].rsplit(":", 1)
    assert repository.endswith("debezium/connect")
    assert tag.split(".")[0] == "3", f"Debezium 3.x expected, found {tag}"
    for name, (command, _) in CDCWH_SERVICES.items():
        assert services[name]["build"] == "."
        assert services[name]["command"] == [command]


PINNED_TAG = re.compile(r"^v?\d+\.\d+")


def test_every_image_is_pinned_to_a_version(compose: dict[str, Any]) -> None:
    """No floating tags (``latest``, ``16``, ``2.7``): a rebuild or a pull next month runs the same
    software. Postgres may stop at major.minor: its minor releases are the patch releases."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, service in compose["services"].items():
        image = service["image"]
        assert ":" in image and "@" not in image, f"{name}: {image} has no tag"
        tag = image.rsplit(":", 1)[1]
        assert PINNED_TAG.match(tag) and tag.count(".") >= 1, f"{name}: {image} is not pinned to a version"
        if tag.split("-")[0].count(".") < 2:
            assert image.startswith("postgres:"), f"{name}: {image} is not pinned to a patch release"
    for name in CDCWH_SERVICES:
        assert compose["services"][name]["image"] == f"cdcwh:{version}", name
    for base in re.findall(r"^ARG \w+_IMAGE=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M):
        tag = base.rsplit(":", 1)[1]
        assert re.match(r"^\d+\.\d+\.\d+-", tag), f"Dockerfile base {base} is not pinned to a patch release"


ONE_SHOT = {"connect-init"}  # registers the connector and exits: nothing to check once it is done


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", f"{name} is a one-shot job: it must not be restarted"
            continue
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
    for name, (_, offset) in CDCWH_SERVICES.items():
        port = int(env_of(services[name])["CDCWH_METRICS__PORT"]) + offset
        probe = " ".join(services[name]["healthcheck"]["test"])
        if name == "cdcwh-serve":  # ready once it listens to the announcements, not merely up
            assert "http://127.0.0.1:8400/healthz" in probe, probe
        else:
            assert f"http://127.0.0.1:{port}/metrics" in probe, name
    # whoever waits for a service with a healthcheck waits for it to be healthy, not merely started
    for name, service in services.items():
        depends = service.get("depends_on", {})
        if isinstance(depends, dict):
            for dep, condition in depends.items():
                if dep not in ONE_SHOT and dep not in CDCWH_SERVICES:
                    assert condition["condition"] == "service_healthy", (name, dep)


def test_the_cdcwh_healthcheck_command_tells_up_from_down(compose: dict[str, Any]) -> None:
    """The healthcheck's own command, run with this interpreter (the image's python has the same stdlib):
    exit 0 while a /metrics endpoint answers, non-zero when nothing listens."""
    from prometheus_client import start_http_server

    test = compose["services"]["cdcwh-sink"]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python", test
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = int(sock.getsockname()[1])
    command = [sys.executable, *[arg.replace(":9402/", f":{free}/") for arg in test[2:]]]
    down = subprocess.run(command, capture_output=True, timeout=30)
    assert down.returncode != 0
    server, thread = start_http_server(free, addr="127.0.0.1")
    try:
        up = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert up.returncode == 0, up.stderr
    finally:
        server.shutdown()
        thread.join(timeout=5)


# The variables the Debezium connect image's docker-entrypoint.sh reads by name (connect-base/3.x in
# github.com/debezium/container-images); every other worker property goes in as CONNECT_<PROPERTY>.
CONNECT_ENTRYPOINT_VARIABLES = {
    "BOOTSTRAP_SERVERS",
    "GROUP_ID",
    "CONFIG_STORAGE_TOPIC",
    "OFFSET_STORAGE_TOPIC",
    "STATUS_STORAGE_TOPIC",
    "KEY_CONVERTER",
    "VALUE_CONVERTER",
    "HOST_NAME",
    "REST_PORT",
    "REST_HOST_NAME",
    "ADVERTISED_PORT",
    "ADVERTISED_HOST_NAME",
    "OFFSET_FLUSH_INTERVAL_MS",
    "OFFSET_FLUSH_TIMEOUT_MS",
    "SHUTDOWN_TIMEOUT",
    "HEAP_OPTS",
    "LOG_LEVEL",
}
# Kafka Connect worker properties this topology sets through CONNECT_* variables.
CONNECT_WORKER_PROPERTIES = {
    "config.storage.replication.factor",
    "offset.storage.replication.factor",
    "status.storage.replication.factor",
}


def test_connect_is_configured_through_variables_its_entrypoint_reads(compose: dict[str, Any]) -> None:
    env = env_of(compose["services"]["connect"])
    properties = {}
    for var, value in env.items():
        if var.startswith("CONNECT_"):
            prop = var.removeprefix("CONNECT_").lower().replace("_", ".")
            assert prop in CONNECT_WORKER_PROPERTIES, f"{var} sets {prop}, not expected here"
            properties[prop] = value
        else:
            assert var in CONNECT_ENTRYPOINT_VARIABLES, f"{var} is not read by the connect image's entrypoint"
    # one broker: Connect's internal topics (and Kafka's own) cannot be replicated more than once
    assert properties == dict.fromkeys(CONNECT_WORKER_PROPERTIES, "1")
    kafka = env_of(compose["services"]["kafka"])
    assert kafka["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    connector = json.loads(CONNECTOR.read_text())["config"]
    assert connector["topic.creation.default.replication.factor"] == "1"


def test_no_file_cites_a_document_outside_the_repository() -> None:
    """DESIGN.md was a planning document that never entered the repository: nothing shipped may cite it."""
    shipped = [COMPOSE_FILE, ROOT / "Dockerfile", ROOT / "README.md"]
    for folder in ("deploy", "sql", "docs", "schemas"):
        shipped += [p for p in (ROOT / folder).rglob("*") if p.is_file()]
    for path in shipped:
        text = path.read_text(errors="replace")
        assert not re.search(r"DESIGN(\.md| section)", text), f"{path.relative_to(ROOT)} cites DESIGN.md"


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
    final_stage = (ROOT / "Dockerfile").read_text().rsplit("\nFROM ", 1)[1]
    assert "\nWORKDIR /app\n" in final_stage
    copied = set(re.findall(r"^COPY \S+ \./(\S+)$", final_stage, re.M))
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
        assert settings.postgres.dsn is None, f"{name} gets the superuser DSN (postgres.dsn)"
        purposes = ("owner", "sink", "audit", "reader")
        configured = {p for p in purposes if getattr(settings.postgres, f"{p}_dsn")}
        assert configured == SERVICE_DSNS[name], name
        for purpose in configured:
            dsn = settings.postgres.dsn_for(purpose)  # type: ignore[arg-type]
            assert dsn is not None and urlsplit(dsn.get_secret_value()).username == f"cdcwh_{purpose}"
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
    jobs = [j for j in config["scrape_configs"] if j["job_name"] in ("cdcwh", "cdcwh-api")]
    targets = {t for job in jobs for static in job["static_configs"] for t in static["targets"]}
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
    dsn = urlsplit(env_of(compose["services"]["cdcwh-sink"])["CDCWH_POSTGRES__SINK_DSN"])
    assert (dsn.hostname, dsn.path.lstrip("/")) == (host, pg_env["POSTGRES_DB"])


def test_the_api_is_on_localhost_and_its_secret_has_no_default(compose: dict[str, Any]) -> None:
    """The published API: bound to 127.0.0.1 (a proxy publishes it), and compose refuses to start without a
    JWT secret (``${VAR:?message}``) instead of signing with a key anyone can read here."""
    serve = compose["services"]["cdcwh-serve"]
    assert "127.0.0.1:8400:8400" in serve["ports"]
    secret = env_of(serve)["CDCWH_SERVE__JWT_SECRET"]
    assert re.fullmatch(r"\$\{CDCWH_SERVE__JWT_SECRET:\?[^}]+\}", secret), secret
    for name in CDCWH_SERVICES:
        env = env_of(compose["services"][name])
        assert "CDCWH_POSTGRES__DSN" not in env, f"{name} gets the superuser DSN"
    serve_env = env_of(serve)
    assert "CDCWH_POSTGRES__OWNER_DSN" not in serve_env and "CDCWH_POSTGRES__SINK_DSN" not in serve_env


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
