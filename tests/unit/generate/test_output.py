"""JSON-lines output, pacing, and ``produce`` against an in-memory stand-in for confluent-kafka."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError

from cdcwh.errors import ProduceError
from cdcwh.generate import KafkaRecord, ShopGenerator, encode, produce, read_jsonl, write_jsonl
from cdcwh.generate import output as output_module


def sample_records(events: int = 300) -> list[KafkaRecord]:
    return [r for c in ShopGenerator(2).changes(events) for r in encode(c)]


def test_jsonl_round_trip_and_line_format(tmp_path: Path) -> None:
    records = sample_records()
    path = tmp_path / "out.jsonl"
    assert write_jsonl(iter(records), path) == len(records)
    assert list(read_jsonl(path)) == records
    lines = path.read_bytes().splitlines()
    assert len(lines) == len(records)
    tombstones = 0
    for line, record in zip(lines, records, strict=True):
        item = json.loads(line)
        assert list(item) == ["topic", "key", "value"]
        assert item["topic"] == record.topic
        assert json.loads(item["key"])["payload"]["id"] == json.loads(record.key)["payload"]["id"]
        if item["value"] is None:
            tombstones += 1
        else:
            assert json.loads(item["value"])["payload"]["op"] in {"r", "c", "u", "d"}
    assert tombstones > 0


def test_read_jsonl_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"topic":"t","key":"{}","value":null}\n\n{"topic":"t"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:3"):
        list(read_jsonl(path))


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_pacer_holds_the_rate_without_busy_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(output_module.time, "monotonic", clock.monotonic)
    pacer = output_module.Pacer(1000.0)
    for _ in range(2000):
        pacer.take(clock.sleep)
        clock.now += 0.0001  # the work of producing one record
    assert 1.9 <= clock.now - 100.0 <= 2.1
    assert min(clock.sleeps) >= 0.001, "sleeps come in slices, never sub-millisecond spins"
    assert len(clock.sleeps) < 2000 / 4


def test_pacer_does_not_burst_after_a_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(output_module.time, "monotonic", clock.monotonic)
    pacer = output_module.Pacer(100.0)
    clock.now += 10.0  # a long stall banks at most burst_s of credit
    for _ in range(100):
        pacer.take(clock.sleep)
    assert clock.now - 110.0 >= 0.9


class FakeMessage:
    def __init__(self, topic: str, partition: int) -> None:
        self._topic, self._partition = topic, partition

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition


class FakeFuture:
    def result(self, timeout: float | None = None) -> None:
        return None


class FakeKafka:
    """Records what ``produce`` does with the confluent-kafka API; ``fail_at`` makes one delivery fail."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.config: dict[str, Any] = {}
        self.admin_config: dict[str, Any] = {}
        self.created: list[tuple[str, int]] = []
        self.produced: list[tuple[str, bytes, bytes | None]] = []
        self.pending: list[Any] = []

    def producer(self, config: dict[str, Any]) -> Any:
        self.config = config
        fake = self

        class Producer:
            def produce(self, topic: str, key: bytes, value: bytes | None, on_delivery: Any) -> None:
                fake.produced.append((topic, key, value))
                error = KafkaError(KafkaError._MSG_TIMED_OUT) if len(fake.produced) == fake.fail_at else None
                fake.pending.append((on_delivery, error, FakeMessage(topic, 0)))

            def poll(self, timeout: float = 0) -> int:
                served = len(fake.pending)
                for callback, error, message in fake.pending:
                    callback(error, message)
                fake.pending.clear()
                return served

            def flush(self, timeout: float = 0) -> int:
                self.poll()
                return 0

        return Producer()

    def admin(self, config: dict[str, Any]) -> Any:
        self.admin_config = config
        fake = self

        class Admin:
            def create_topics(self, topics: list[Any], **kwargs: Any) -> dict[str, FakeFuture]:
                fake.created.extend((t.topic, t.num_partitions) for t in topics)
                return {t.topic: FakeFuture() for t in topics}

        return Admin()


@pytest.fixture
def fake_kafka(monkeypatch: pytest.MonkeyPatch) -> FakeKafka:
    fake = FakeKafka()
    monkeypatch.setattr("confluent_kafka.Producer", fake.producer)
    monkeypatch.setattr("confluent_kafka.admin.AdminClient", fake.admin)
    return fake


def test_produce_config_topics_order_and_progress(fake_kafka: FakeKafka) -> None:
    records = sample_records()
    progress: list[int] = []
    config = {"bootstrap.servers": "broker:9092", "security.protocol": "SASL_SSL"}
    count = produce(iter(records), producer_config=config, partitions=3, on_progress=progress.append)
    assert count == len(records)
    assert fake_kafka.config["bootstrap.servers"] == "broker:9092"
    assert fake_kafka.config["security.protocol"] == "SASL_SSL"
    assert fake_kafka.config["enable.idempotence"] is True
    assert fake_kafka.config["acks"] == "all"
    assert fake_kafka.config["partitioner"] == "murmur2_random"
    assert fake_kafka.admin_config["bootstrap.servers"] == "broker:9092"
    assert sorted(fake_kafka.created) == [
        (f"shop.public.{t}", 3) for t in ("customers", "order_items", "orders", "payments", "products")
    ]
    assert fake_kafka.produced == [(r.topic, r.key, r.value) for r in records]
    assert progress[-1] == len(records)


def test_a_failed_delivery_raises_produce_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeKafka(fail_at=10)
    monkeypatch.setattr("confluent_kafka.Producer", fake.producer)
    monkeypatch.setattr("confluent_kafka.admin.AdminClient", fake.admin)
    records = sample_records()
    with pytest.raises(ProduceError, match=f"delivery to {records[9].topic} .* failed: .*timed out"):
        produce(iter(records), producer_config={"bootstrap.servers": "b"}, partitions=1)
    assert len(fake.produced) == 10, "stops at the first failure"
