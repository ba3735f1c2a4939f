"""SIGTERM stops ``cdcwh ingest`` cleanly whenever it arrives, also while the service resubscribes to a
changed set of topics (between two quixstreams applications). The real broker and catalog; the signal is a
real SIGTERM to this process, delivered to the main thread where the service runs."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from cdcwh.config import Settings
from cdcwh.ingest import service
from tests.support.pipeline import TABLES, bronze, env_overrides, produce_shop
from tests.support.services import ingest_until_caught_up, process_state_restored

EVENTS = 200


def test_sigterm_while_resubscribing_stops_the_service(
    pipeline_settings: Settings, kafka_bootstrap: str, unique_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = env_overrides(pipeline_settings, CDCWH_INGEST__TOPIC_REFRESH_S="0.2")
    _, changes = produce_shop(kafka_bootstrap, unique_prefix, EVENTS, seed=5)
    # the watcher resubscribes after two statistics in a row say the group is steady: sooner in this test
    monkeypatch.setattr(service, "STATS_INTERVAL_MS", 250)
    real_build = service.build_app
    builds: list[list[str]] = []

    def build(settings: Settings, topics: list[str], *args: Any, **kwargs: Any) -> Any:
        builds.append(sorted(topics))
        if len(builds) == 1:  # a new matching topic: the running application is stopped to resubscribe
            late = f"{unique_prefix}.public.late"
            admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
            admin.create_topics([NewTopic(late, 1)])[late].result(30)
        else:  # the service is between two applications: the old one has stopped, the new is not running
            os.kill(os.getpid(), signal.SIGTERM)
        return real_build(settings, topics, *args, **kwargs)

    monkeypatch.setattr(service, "build_app", build)
    with process_state_restored():
        assert service.run_ingest(settings) == 0  # returns: the signal was not lost with the old application

    assert len(builds) == 2, builds  # it stopped instead of running the new application
    assert f"{unique_prefix}.public.late" in builds[1]
    # what the first application consumed was landed at its final checkpoint and committed: a restart lands
    # the rest, each change and a tombstone per delete once
    monkeypatch.setattr(service, "build_app", real_build)
    ingest_until_caught_up(settings)
    for table in TABLES:
        rows = bronze(settings, f"{unique_prefix}.public.{table}")
        mine = [c for c in changes if c.table == table]
        assert rows.num_rows == len(mine) + sum(c.op == "d" for c in mine), table
