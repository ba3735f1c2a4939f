"""The topic watcher resubscribes only once the consumer has finished joining its group (a member closed
mid-join can leave the group waiting for it). No broker here: the cluster's topic list is a stub, the
tracker a stand-in whose join state the test sets."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cdcwh.config import Settings
from cdcwh.ingest import service
from cdcwh.kafka.catchup import CatchUpTracker


class Tracker(CatchUpTracker):
    def __init__(self) -> None:
        super().__init__("g", expected_partitions=1)
        self.done = threading.Event()

    def joined(self) -> bool:
        return self.done.is_set()


def test_a_topic_change_waits_for_the_join(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path, ingest={"topic_refresh_s": 0.05})
    monkeypatch.setattr(service, "matching_topics", lambda _: {"shop.public.a": 3, "shop.public.b": 3})
    tracker = Tracker()
    stopped = threading.Event()
    watcher = service.TopicWatcher(settings, ["shop.public.a"], stopped.set, tracker)
    watcher.start()
    try:
        assert not stopped.wait(1.0), "resubscribed while the consumer was still joining"
        tracker.done.set()
        assert stopped.wait(5.0), "did not resubscribe once joined"
        assert watcher.changed
    finally:
        watcher.stop()
        watcher.join(5)


def test_no_change_no_resubscribe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path, ingest={"topic_refresh_s": 0.05})
    monkeypatch.setattr(service, "matching_topics", lambda _: {"shop.public.a": 3})
    tracker = Tracker()
    tracker.done.set()
    stopped = threading.Event()
    watcher = service.TopicWatcher(settings, ["shop.public.a"], stopped.set, tracker)
    watcher.start()
    try:
        assert not stopped.wait(0.5)
        assert not watcher.changed
    finally:
        watcher.stop()
        watcher.join(5)
