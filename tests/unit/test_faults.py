"""Fault points: silent unless armed, armed by the variables the crash tests set or directly in a test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cdcwh import faults
from cdcwh.errors import ConfigError


@pytest.fixture(autouse=True)
def _disarmed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (faults.PAUSE_AFTER_LAND_ENV, faults.POINT_ENV, faults.PAUSE_ENV):
        monkeypatch.delenv(name, raising=False)
    faults.reset()
    yield
    faults.reset()


def test_an_unarmed_point_does_nothing(tmp_path: Path) -> None:
    faults.hit(faults.BEFORE_COMMIT, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_armed_point_leaves_its_marker_line(tmp_path: Path) -> None:
    faults.arm(faults.LANDED, 0.0)
    faults.hit(faults.LANDED, tmp_path, note="42")
    faults.hit(faults.LANDED, tmp_path, note="7")
    faults.hit(faults.BEFORE_PUBLISH, tmp_path)  # another point: not armed
    assert [p.name for p in tmp_path.iterdir()] == ["fault-landed"]
    assert (tmp_path / "fault-landed").read_text().splitlines() == ["42", "7"]


def test_the_crash_tests_variables_arm_their_points() -> None:
    env = {
        "CDCWH_FAULT_PAUSE_AFTER_LAND_S": "30",
        "CDCWH_FAULT_POINT": "before_publish",
        "CDCWH_FAULT_PAUSE_S": "1.5",
    }
    assert faults.from_environment(env) == {"landed": 30.0, "before_publish": 1.5}
    assert faults.from_environment({"CDCWH_FAULT_POINT": "before_commit"}) == {}  # no pause: unarmed


def test_the_environment_is_read_once_per_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CDCWH_FAULT_POINT", "before_commit")
    monkeypatch.setenv("CDCWH_FAULT_PAUSE_S", "0")
    assert faults.armed(faults.BEFORE_COMMIT)
    monkeypatch.delenv("CDCWH_FAULT_POINT")
    assert faults.armed(faults.BEFORE_COMMIT)  # read at the first use, not at every hit
    faults.reset()
    assert not faults.armed(faults.BEFORE_COMMIT)


def test_a_bad_pause_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="CDCWH_FAULT_PAUSE_AFTER_LAND_S"):
        faults.from_environment({"CDCWH_FAULT_PAUSE_AFTER_LAND_S": "soon"})
