"""``assess``: the exit code of a status (0 healthy, 1 lagging or stale, 2 a part unreachable)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cdcwh.overview.status import (
    Batch,
    GoldBehind,
    Mart,
    Part,
    SinkLag,
    SourceLag,
    Status,
    Thresholds,
    assess,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TOPIC = "shop.public.orders"


def status(end: int, ingested: int, in_silver: int, *, landed_ago: float, batch_ago: float) -> Status:
    return Status(
        checked_at=NOW,
        parts=[Part(name, True) for name in ("kafka", "bronze", "warehouse", "postgres")],
        source=[SourceLag(TOPIC, 0, end, ingested, ingested, ingested, in_silver)],
        last_landed={TOPIC: NOW - timedelta(seconds=landed_ago)},
        batches=[Batch(1, NOW, NOW, "ok", 1, 1, None)],
        last_ok_batch_ended=NOW - timedelta(seconds=batch_ago),
    )


def test_a_quiet_pipeline_is_healthy_however_old_its_last_work() -> None:
    health = assess(status(100, 100, 100, landed_ago=86_400, batch_ago=86_400), Thresholds(0, 1), NOW)
    assert (health.code, health.state, health.problems) == (0, "healthy", [])


def test_lag_beyond_the_threshold() -> None:
    quiet = status(150, 100, 100, landed_ago=1, batch_ago=1)
    assert assess(quiet, Thresholds(max_lag=50, max_staleness_s=60), NOW).code == 0
    health = assess(quiet, Thresholds(max_lag=49, max_staleness_s=60), NOW)
    assert health.code == 1 and health.state == "lagging"
    assert any("50 records behind silver" in p for p in health.problems)


def test_work_waiting_without_progress_is_stale() -> None:
    not_ingested = status(150, 100, 100, landed_ago=120, batch_ago=1)
    health = assess(not_ingested, Thresholds(max_lag=1000, max_staleness_s=60), NOW)
    assert health.code == 1 and any("not ingested" in p for p in health.problems)
    not_transformed = status(150, 150, 100, landed_ago=1, batch_ago=120)
    health = assess(not_transformed, Thresholds(max_lag=1000, max_staleness_s=60), NOW)
    assert health.code == 1 and any("not in silver" in p for p in health.problems)
    never = status(150, 150, 100, landed_ago=1, batch_ago=1)
    never.last_ok_batch_ended = None
    assert assess(never, Thresholds(max_lag=1000, max_staleness_s=60), NOW).code == 1


def test_the_sink_and_failing_gold_models() -> None:
    waiting = status(100, 100, 100, landed_ago=1, batch_ago=1)
    waiting.sink = [SinkLag("cdcwh.gold.orders", 0, 10, 4)]
    waiting.marts = [Mart("orders", 3, NOW - timedelta(seconds=120))]
    health = assess(waiting, Thresholds(max_lag=1000, max_staleness_s=60), NOW)
    assert health.code == 1 and any("6 gold changes waiting" in p for p in health.problems)
    failing = status(100, 100, 100, landed_ago=1, batch_ago=1)
    failing.gold_behind = [GoldBehind("orders", 7, "Binder Error")]
    health = assess(failing, Thresholds(), NOW)
    assert health.code == 1 and health.problems == ["gold.orders: behind since batch 7 (Binder Error)"]


def test_an_unreachable_part_wins() -> None:
    down = status(150, 100, 100, landed_ago=120, batch_ago=120)
    down.parts[0] = Part("kafka", False, "no Kafka broker")
    health = assess(down, Thresholds(max_lag=0, max_staleness_s=0), NOW)
    assert (health.code, health.state, health.problems) == (
        2,
        "unreachable",
        ["kafka unreachable: no Kafka broker"],
    )


def test_a_partition_the_broker_has_no_end_for() -> None:
    lost = status(100, 100, 100, landed_ago=1, batch_ago=1)
    lost.source = [SourceLag(TOPIC, 0, None, None, 100, 100, 100)]
    health = assess(lost, Thresholds(), NOW)
    assert health.code == 1 and health.problems == [
        f"{TOPIC}/0: no end offset from the broker (the partition is gone or did not answer)"
    ]
