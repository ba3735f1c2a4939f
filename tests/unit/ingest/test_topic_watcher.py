"""The topic watcher resubscribes only once the consumer has finished joining its group, as shown by
statistics that arrived after the change was seen (a member closed mid-join can wedge the embedded broker's
group). No broker here: the cluster's topic list is a stub; the tracker is the real one, fed statistics in
librdkafka's JSON shape (only the ``cgrp`` fields it reads)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from cdcwh.config import Settings
from cdcwh.ingest import service
from cdcwh.kafka.catchup import CatchUpTracker


def stats(join_state: str) -> str:
    return json.dumps({"cgrp": {"state": "up", "join_state": join_state, "assignment_size": 1}, "topics": {}})


def seen_by(watcher: service.TopicWatcher, tracker: CatchUpTracker, timeout: float = 5.0) -> None:
    """Wait until the watcher has seen the change (it reads the tracker's count of statistics then)."""
    deadline = time.monotonic() + timeout
    while not watcher.noticed.is_set():
        assert time.monotonic() < deadline, "the watcher did not see the topic change"
        time.sleep(0.01)


def test_a_topic_change_waits_for_a_fresh_join(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path, ingest={"topic_refresh_s": 0.05})
    monkeypatch.setattr(service, "matching_topics", lambda _: {"shop.public.a": 3, "shop.public.b": 3})
    tracker = CatchUpTracker("g", expected_partitions=1)
    tracker.on_stats(stats("steady"))  # from before a broker restart: stale by the time the change is seen
    stopped = threading.Event()
    watcher = service.TopicWatcher(settings, ["shop.public.a"], stopped.set, tracker)
    watcher.start()
    try:
        seen_by(watcher, tracker)
        assert not stopped.wait(0.5), "resubscribed on statistics older than the change"
        tracker.on_stats(stats("wait-join"))  # the member is joining again
        tracker.on_stats(stats("steady"))
        assert not stopped.wait(0.5), "resubscribed on one 'steady' right after a join"
        tracker.on_stats(stats("steady"))
        assert stopped.wait(5.0), "did not resubscribe once joined"
        assert watcher.changed
    finally:
        watcher.stop()
        watcher.join(5)


def test_no_change_no_resubscribe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path, ingest={"topic_refresh_s": 0.05})
    monkeypatch.setattr(service, "matching_topics", lambda _: {"shop.public.a": 3})
    tracker = CatchUpTracker("g", expected_partitions=1)
    tracker.on_stats(stats("steady"))
    stopped = threading.Event()
    watcher = service.TopicWatcher(settings, ["shop.public.a"], stopped.set, tracker)
    watcher.start()
    try:
        assert not stopped.wait(0.5)
        assert not watcher.changed
    finally:
        watcher.stop()
        watcher.join(5)
