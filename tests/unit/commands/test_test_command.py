"""``cdcwh test`` and ``cdcwh gate bypass`` refuse wrong arguments before touching the warehouse."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdcwh.cli import build_parser, main
from cdcwh.commands import test as test_command
from cdcwh.config import Settings
from cdcwh.errors import ConfigError


def test_select_of_an_unknown_model_is_a_usage_error(tmp_path: Path) -> None:
    args = build_parser().parse_args(["test", "--select", "orders", "nosuch"])
    with pytest.raises(ConfigError, match="--select: no tests for nosuch"):
        test_command.run(args, Settings(data_dir=tmp_path))


def test_bypass_of_an_unknown_model_is_a_usage_error(tmp_path: Path) -> None:
    args = build_parser().parse_args(["gate", "bypass", "silver.orders", "--reason", "x"])
    with pytest.raises(ConfigError, match="'silver.orders' is not a gold model"):
        test_command.run_bypass(args, Settings(data_dir=tmp_path))


def test_an_invalid_test_file_exits_2_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sql" / "gold").mkdir(parents=True)
    (tmp_path / "sql" / "gold" / "orders.yml").write_text("models:\n  - name: orders\n    tests: [unique]\n")
    monkeypatch.setenv("CDCWH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CDCWH_SQL_DIR", str(tmp_path / "sql"))
    assert main(["--log-format", "text", "test"]) == 2
    assert "orders.yml" in capsys.readouterr().err


def test_transform_bypass_needs_a_reason(tmp_path: Path) -> None:
    from cdcwh.commands.test import bypass_gates

    with pytest.raises(ConfigError, match="--reason must say why"):
        bypass_gates(Settings(data_dir=tmp_path), ["orders"], None)
    assert not (tmp_path / "warehouse.duckdb").exists(), "nothing stored"
