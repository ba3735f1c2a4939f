"""The record probe's consumer (the log-incarnation check) is closed when ingest ends, and opened again if
the writer is used after. Real broker and catalog."""

from __future__ import annotations

import pytest

from cdcwh.config import Settings
from cdcwh.ingest import service
from cdcwh.ingest.bronze import IcebergBronzeWriter
from cdcwh.ingest.probe import KafkaRecordProbe
from cdcwh.kafka.offsets import end_offsets
from tests.support.pipeline import produce_shop
from tests.support.services import ingest_until_caught_up


def test_ingest_closes_the_probe_it_opened(
    pipeline_settings: Settings, kafka_bootstrap: str, unique_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    produce_shop(kafka_bootstrap, unique_prefix, 50, seed=2)
    topic = f"{unique_prefix}.public.orders"
    ends = end_offsets({"bootstrap.servers": kafka_bootstrap}, [(topic, p) for p in range(3)])
    partition = next(p for (_, p), end in sorted(ends.items()) if end > 0)  # one that holds a record
    writers: list[IcebergBronzeWriter] = []
    make_writer = service.make_writer

    def kept(settings: Settings) -> IcebergBronzeWriter:
        writers.append(make_writer(settings))
        probe = writers[-1].incarnations.probe
        assert isinstance(probe, KafkaRecordProbe)
        assert probe.fetch(topic, partition, 0) is not None  # its consumer is open
        return writers[-1]

    monkeypatch.setattr(service, "make_writer", kept)
    ingest_until_caught_up(pipeline_settings)

    (writer,) = writers
    probe = writer.incarnations.probe
    assert isinstance(probe, KafkaRecordProbe)
    assert probe._consumer is None  # closed with the service (no consumer held until the next fetch)
    assert probe.fetch(topic, partition, 0) is not None  # and usable again
    probe.close()
