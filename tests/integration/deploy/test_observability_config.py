"""Prometheus config, alert rules and Grafana dashboards: valid for promtool, and every cdcwh metric they
name is one the code exports (and every exported metric is on a panel)."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
import yaml
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from cdcwh import metrics
from cdcwh.sink.postgres import PostgresMartSink
from tests.integration.deploy.conftest import (
    ALERT_RULES,
    DASHBOARDS,
    DEPLOY,
    PROMETHEUS_CONFIG,
    ROOT,
)

METRIC_NAME = re.compile(r"\bcdcwh_[a-z_]+")
GRAFANA_RANGES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "cdcwh.yml"
ALERT_TESTS = ALERT_RULES.with_name("alerts_test.yml")


def exported_names() -> dict[str, str]:
    """Sample names scraped from cdcwh, mapped to the metric they belong to."""
    names: dict[str, str] = {}
    for obj in vars(metrics).values():
        if not isinstance(obj, MetricWrapperBase):
            continue
        base = obj._name
        if isinstance(obj, Counter):
            names[f"{base}_total"] = f"{base}_total"
        elif isinstance(obj, Histogram):
            for suffix in ("_bucket", "_sum", "_count"):
                names[base + suffix] = base
        elif isinstance(obj, Gauge):
            names[base] = base
        else:
            raise AssertionError(f"unexpected metric type {type(obj)}")
    return names


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def dashboard_promql() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for dashboard in dashboards().values()
        for panel in panels(dashboard)
        for target in panel["targets"]
        if "expr" in target
    ]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERT_RULES.read_text())["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_config_and_the_rules(promtool: str) -> None:
    config = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True
    )
    assert config.returncode == 0, config.stdout + config.stderr
    assert "1 rule files found" in config.stdout + config.stderr
    rules = subprocess.run([promtool, "check", "rules", str(ALERT_RULES)], capture_output=True, text=True)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in rules.stdout


def test_promtool_rejects_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    """The check above is not vacuous: promtool does fail on bad PromQL."""
    broken = tmp_path / "broken.yml"
    broken.write_text(ALERT_RULES.read_text().replace('up{job="cdcwh"} == 0', 'up{job="cdcwh" == 0', 1))
    result = subprocess.run([promtool, "check", "rules", str(broken)], capture_output=True, text=True)
    assert result.returncode != 0


def test_alerts_fire_as_their_unit_tests_expect(promtool: str) -> None:
    """promtool's unit tests of alerts.yml (alerts_test.yml): when each alert fires, with which labels and
    annotations, and when it clears, including the first increment of a counter series that did not exist
    before and a service that never succeeded."""
    result = subprocess.run([promtool, "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    firing = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")  # a case that expects the alert to fire, not only silence
    }
    assert firing == {rule["alert"] for rule in alert_rules()}, "alerts without a firing unit test"


def test_every_dashboard_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    """Each panel's PromQL, with Grafana's range variables filled in, as recording rules for promtool."""
    rules = []
    for i, (_, expr) in enumerate(dashboard_promql()):
        for variable, value in GRAFANA_RANGES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_panels_and_alerts_name_only_exported_metrics() -> None:
    exported = exported_names()
    # exported_names() walks cdcwh.metrics; it must see every cdcwh_ metric the process registers.
    registered = {family.name for family in REGISTRY.collect() if family.name.startswith("cdcwh_")}
    assert registered, "cdcwh.metrics registered no cdcwh_ metric"
    defined = {obj._name for obj in vars(metrics).values() if isinstance(obj, MetricWrapperBase)}
    assert defined == registered, "a cdcwh_ metric is registered outside cdcwh.metrics, or not at all"
    used: dict[str, set[str]] = {}
    for title, expr in dashboard_promql():
        for name in METRIC_NAME.findall(expr):
            assert name in exported, f"panel {title!r} uses {name}, which cdcwh does not export"
            used.setdefault(exported[name], set()).add(title)
    for rule in alert_rules():
        for name in METRIC_NAME.findall(rule["expr"]):
            assert name in exported, f"alert {rule['alert']} uses {name}, which cdcwh does not export"
            used.setdefault(exported[name], set()).add(rule["alert"])
    unused = set(exported.values()) - set(used)
    assert not unused, f"metrics on no panel and in no alert: {sorted(unused)}"


def test_the_cross_check_catches_a_wrong_name() -> None:
    exported = exported_names()
    assert "cdcwh_events_landed_total" in exported
    assert "cdcwh_events_landed" not in exported  # a counter without _total
    assert "cdcwh_freshness_seconds" not in exported  # a histogram without a suffix
    assert "cdcwh_consumer_lag_total" not in exported


def test_dashboards_are_well_formed_and_use_provisioned_datasources() -> None:
    uids = {ds["uid"]: ds["type"] for ds in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    seen_uids = set()
    for name, dashboard in dashboards().items():
        assert dashboard["uid"] not in seen_uids, name
        seen_uids.add(dashboard["uid"])
        assert panels(dashboard), name
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), name
        cells: set[tuple[int, int]] = set()
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, (name, panel["title"])
            mine = {
                (x, y)
                for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not cells & mine, f"{name}: panel {panel['title']!r} overlaps another"
            cells |= mine
        for panel in panels(dashboard):
            assert panel["targets"], (name, panel["title"])
            for target in panel["targets"]:
                uid = target["datasource"]["uid"]
                assert uid in uids, (name, panel["title"], uid)
                assert ("expr" in target) == (uids[uid] == "prometheus"), (name, panel["title"])
    pipeline = dashboards()["pipeline-health.json"]
    titles = " | ".join(p["title"] for p in panels(pipeline)).lower()
    for needed in (
        "by stage",
        "lag per partition",
        "freshness p50 / p99",
        "by reason",
        "duration",
        "errors",
        "last success",
    ):
        assert needed in titles, needed


def sql_queries() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["rawSql"])
        for dashboard in dashboards().values()
        for panel in panels(dashboard)
        for target in panel["targets"]
        if "rawSql" in target
    ]


def test_marts_dashboard_queries_run_on_the_marts_schema(postgres_dsn: str) -> None:
    """Every SQL panel runs against the mart tables the sink creates, with rows in them (rolled back
    afterwards)."""
    queries = sql_queries()
    titles = " | ".join(title for title, _ in queries).lower()
    for needed in ("daily revenue", "orders by status", "top customers"):
        assert needed in titles
    time_filter = re.compile(r"\$__timeFilter\((\w+)\)")
    sink = PostgresMartSink(postgres_dsn, "marts", ROOT / "sql")
    sink.connect()
    sink.close()
    with psycopg.connect(postgres_dsn) as conn:
        with conn.transaction(force_rollback=True):
            conn.execute(
                "INSERT INTO marts.daily_revenue VALUES ('2026-02-01', 2, 7, 228.86, 1, now())"
                " ON CONFLICT DO NOTHING"
            )
            conn.execute(
                "INSERT INTO marts.orders VALUES (900000001, 1, '2026-02-01', 'completed', 95.86, 10, 0, 0,"
                " 105.86, 1, now()) ON CONFLICT DO NOTHING"
            )
            conn.execute(
                "INSERT INTO marts.customers VALUES (900000001, 'Ada', 'Lovelace', 'ada@example.com',"
                " 'consumer', '2026-02-01', '2026-02-01', 1, 105.86, 1, now()) ON CONFLICT DO NOTHING"
            )
            for title, query in queries:
                runnable = time_filter.sub(r"\1 BETWEEN '2000-01-01' AND '2100-01-01'", query)
                assert "$" not in runnable, (title, runnable)
                rows = conn.execute(runnable).fetchall()  # type: ignore[arg-type]
                assert rows, f"panel {title!r} returned nothing"


def test_docs_explain_every_alert_and_list_every_metric() -> None:
    """Each alert has its runbook section in docs/operations.md, which its runbook_url names, and a row in
    docs/observability.md; links into operations.md resolve."""
    observability = (ROOT / "docs" / "observability.md").read_text()
    operations = (ROOT / "docs" / "operations.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
        for heading in re.findall(r"^#{2,3} (.+)$", operations, re.M)
    }
    for rule in alert_rules():
        assert f"### {rule['alert']}" in operations, rule["alert"]
        assert f"`{rule['alert']}`" in observability, rule["alert"]
        assert "runbook" not in rule["annotations"], f"{rule['alert']}: the annotation is runbook_url"
        url = rule["annotations"]["runbook_url"]
        assert url == f"docs/operations.md#{rule['alert'].lower()}", url
        assert url.split("#")[1] in anchors, url
    for document in (observability, operations):
        for link in re.findall(r"\((?:operations\.md)?#([a-z0-9-]+)\)", document):
            assert link in anchors, link
    reference = (ROOT / "docs" / "metrics.md").read_text()
    for name in set(exported_names().values()):
        row = next((line for line in reference.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None and row.count("|") == 6, (
            f"{name}: no row with a used-by column in docs/metrics.md"
        )


def test_the_marts_dashboard_opens_on_the_demo_orders() -> None:
    """The shop-marts dashboard's default range holds every order the demo and the compose topology create:
    the simulator's (snapshot and streaming, any seed) and sql/source/shop.sql's, and runs up to now."""
    from cdcwh.generate import ShopGenerator

    time_range = dashboards()["shop-marts.json"]["time"]
    assert time_range["to"] == "now"
    opens = datetime.fromisoformat(time_range["from"].replace("Z", "+00:00")).date()
    dates: list[date] = []
    for seed in (1, 2, 3):
        changes = ShopGenerator(seed).changes(3000)
        dates += [c.after["order_date"] for c in changes if c.table == "orders" and c.after is not None]
    shop_sql = (ROOT / "sql" / "source" / "shop.sql").read_text()
    orders = shop_sql[shop_sql.index("INSERT INTO public.orders") :].split(";")[0]
    dates += [date.fromisoformat(d) for d in re.findall(r"'(\d{4}-\d{2}-\d{2})'", orders)]
    assert len(dates) > 100
    assert min(dates) >= opens, f"orders from {min(dates)} are before the dashboard's range ({opens})"
    assert max(dates) <= datetime.now(UTC).date()
