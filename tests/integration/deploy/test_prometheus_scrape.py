"""A real Prometheus (Debian's package) scrapes a running ``cdcwh run`` with the project's scrape config and
alert rules: every service's target is up, the cdcwh series are there, and they move under generated load."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_cli import free_base_port
from tests.integration.deploy.conftest import ALERT_RULES, PROMETHEUS_CONFIG

OFFSETS = {"ingest": 0, "transform": 1, "sink": 2}
COMPOSE_BASE_PORT = 9400


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def local_config(base_port: int, prometheus_port: int) -> dict[str, Any]:
    """The project's prometheus.yml with its targets moved to 127.0.0.1 and every interval at 1 s."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(ALERT_RULES)]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["prometheus"]["static_configs"] = [{"targets": [f"127.0.0.1:{prometheus_port}"]}]
    cdcwh_job = jobs["cdcwh"]
    cdcwh_job["scrape_interval"] = "1s"
    for static in cdcwh_job["static_configs"]:
        component = static["labels"]["component"]
        (target,) = static["targets"]
        assert int(target.rsplit(":", 1)[1]) == COMPOSE_BASE_PORT + OFFSETS[component], target
        static["targets"] = [f"127.0.0.1:{base_port + OFFSETS[component]}"]
    assert sorted(s["labels"]["component"] for s in cdcwh_job["static_configs"]) == sorted(OFFSETS)
    return config


def stop(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[tuple[dict[str, str], int, subprocess.Popen[bytes]]]:
    """``cdcwh run`` (embedded broker and Postgres) with metrics on a free base port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDCWH_")}
    env["CDCWH_DATA_DIR"] = str(tmp_path / "data")
    base = free_base_port()
    env["CDCWH_METRICS__PORT"] = str(base)
    env["CDCWH_INGEST__TOPIC_REFRESH_S"] = "1"  # the generator creates the topics after ingest started
    with (tmp_path / "run.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cdcwh.cli", "run"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield env, base, proc
    finally:
        stop(proc)


@pytest.fixture
def prometheus_api(
    tmp_path: Path, prometheus_server: str, pipeline: tuple[dict[str, str], int, subprocess.Popen[bytes]]
) -> Iterator[Callable[[str], Any]]:
    """Prometheus on 127.0.0.1 scraping the pipeline; yields ``api(path)`` returning the JSON ``data``."""
    _, base, _ = pipeline
    port = free_port()
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(local_config(base, port)))
    with (tmp_path / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                prometheus_server,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def api(path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/{path}", timeout=5) as response:  # noqa: S310
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    try:
        yield api
    finally:
        assert stop(proc) == 0, (tmp_path / "prometheus.log").read_text()[-3000:]


def query(api: Callable[[str], Any], promql: str) -> list[dict[str, Any]]:
    return list(api("query?" + urllib.parse.urlencode({"query": promql}))["result"])


def scalar(api: Callable[[str], Any], promql: str) -> float | None:
    result = query(api, promql)
    return float(result[0]["value"][1]) if result else None


def wait_for(what: str, check: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except OSError:
            pass  # Prometheus not listening yet
        assert proc.poll() is None, f"cdcwh run exited with {proc.returncode} while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_prometheus_scrapes_moving_cdcwh_series(
    prometheus_api: Callable[[str], Any], pipeline: tuple[dict[str, str], int, subprocess.Popen[bytes]]
) -> None:
    env, _, run = pipeline
    api = prometheus_api

    def all_up() -> bool:
        up = query(api, 'up{job="cdcwh"}')
        return len(up) == 3 and all(s["value"][1] == "1" for s in up)

    wait_for("the three cdcwh targets to be up", all_up, run, timeout=60)
    components = {s["metric"]["component"] for s in query(api, 'up{job="cdcwh"}')}
    assert components == set(OFFSETS)

    generate = subprocess.Popen(
        [sys.executable, "-m", "cdcwh.cli", "generate", "--events", "2000", "--rate", "500"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        landed: list[float] = []

        def landed_grows() -> bool:
            value = scalar(api, "sum(cdcwh_events_landed_total)")
            if value is not None and value > (landed[-1] if landed else 0):
                landed.append(value)
                return True
            return False

        wait_for("cdcwh_events_landed_total to appear", landed_grows, run, timeout=45)
        _, err = generate.communicate(timeout=60)
        assert generate.returncode == 0, err.decode()[-2000:]
    finally:
        stop(generate)
    # the consumer group joins within the first load, so ingest may land it in one checkpoint: load again
    more = subprocess.run(
        [sys.executable, "-m", "cdcwh.cli", "generate", "--events", "300", "--seed", "2"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert more.returncode == 0, more.stderr.decode()[-2000:]
    wait_for("cdcwh_events_landed_total to increase", landed_grows, run, timeout=30)
    assert landed[-1] > landed[0] > 0

    def downstream_moves() -> bool:
        sink = scalar(api, "sum(cdcwh_sink_rows_total)")
        transform = scalar(api, 'sum(cdcwh_transform_rows_total{direction="out"})')
        return bool(sink and transform)

    wait_for("transform and sink rows", downstream_moves, run, timeout=45)

    consumed = scalar(api, "sum(cdcwh_events_consumed_total)")
    assert consumed is not None and consumed >= landed[0]
    stages = {s["metric"]["stage"] for s in query(api, "cdcwh_freshness_seconds_count")}
    assert {"bronze", "gold", "postgres"} <= stages
    services = {s["metric"]["service"] for s in query(api, "cdcwh_last_success_timestamp_seconds")}
    assert {"ingest", "transform", "sink"} <= services
    groups = {s["metric"]["group"] for s in query(api, "cdcwh_consumer_lag")}
    assert "cdcwh-ingest" in groups
    # the stall alerts fall back on each service's process start time before its first success
    started = {s["metric"]["component"] for s in query(api, 'process_start_time_seconds{job="cdcwh"}')}
    assert started == set(OFFSETS)
    # the alert rules are loaded and evaluate without errors against the live series
    rules = [r for group in api("rules")["groups"] for r in group["rules"]]
    expected = {
        rule["alert"]
        for group in yaml.safe_load(ALERT_RULES.read_text())["groups"]
        for rule in group["rules"]
    }
    assert {r["name"] for r in rules} == expected
    assert all(r["health"] in ("ok", "unknown") for r in rules), [
        (r["name"], r.get("lastError")) for r in rules
    ]
