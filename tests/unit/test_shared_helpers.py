"""The helpers every service shares: the freshness sampler and the clean stop on a signal."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import pyarrow as pa
import pytest
from prometheus_client import REGISTRY

from cdcwh.metrics import FRESHNESS_SAMPLE, observe_freshness
from cdcwh.stopping import stop_on_signals


def observed(stage: str) -> tuple[float, float]:
    count = REGISTRY.get_sample_value("cdcwh_freshness_seconds_count", {"stage": stage}) or 0.0
    total = REGISTRY.get_sample_value("cdcwh_freshness_seconds_sum", {"stage": stage}) or 0.0
    return count, total


def test_freshness_is_now_minus_the_source_commit_for_a_sample_of_the_rows() -> None:
    stage = "unit-test"
    now = 1_700_000_100.0
    # 10 s old, any unit, nulls passed over
    ms = pa.array([1_700_000_090_000, None], pa.timestamp("ms", tz="UTC"))
    before = observed(stage)
    observe_freshness(stage, ms, now)
    count, total = observed(stage)
    assert (count - before[0], total - before[1]) == (1.0, 10.0)

    many = pa.chunked_array([pa.array([1_700_000_099_000_000] * (FRESHNESS_SAMPLE * 4), pa.timestamp("us"))])
    observe_freshness(stage, many, now)
    after = observed(stage)
    assert after[0] - count == FRESHNESS_SAMPLE  # evenly spaced, not every row
    assert after[1] - total == pytest.approx(FRESHNESS_SAMPLE * 1.0)


@pytest.fixture
def _handlers_restored() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.usefixtures("_handlers_restored")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_set_the_stop_event(signum: signal.Signals) -> None:
    stopping = threading.Event()
    stop_on_signals(stopping)
    signal.raise_signal(signum)
    assert stopping.is_set()


@pytest.mark.usefixtures("_handlers_restored")
def test_a_second_ctrl_c_interrupts_at_once() -> None:
    stopping = threading.Event()
    stop_on_signals(stopping)
    signal.raise_signal(signal.SIGINT)  # the first Ctrl-C asks for a clean stop
    assert stopping.is_set()
    with pytest.raises(KeyboardInterrupt):  # the second does not wait for it
        signal.raise_signal(signal.SIGINT)
