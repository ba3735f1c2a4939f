"""Running ``cdcwh capture`` as a subprocess and reading what it produced, for the source tests."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.kafka_readback import read_to_end

WAIT_S = 75.0


@dataclass(frozen=True)
class Change:
    """One record as produced: topic, op (``None`` for a tombstone), key payload, row id."""

    topic: str
    op: str | None
    key: dict[str, Any] | None
    row_id: Any
    raw_key: bytes | None


def parse(message: Any) -> Change:
    key = None if message.key() is None else json.loads(message.key())["payload"]
    if message.value() is None:
        return Change(message.topic(), None, key, key["id"] if key else None, message.key())
    payload = json.loads(message.value())["payload"]
    row = payload["after"] if payload["after"] is not None else payload["before"]
    return Change(message.topic(), payload["op"], key, row["id"], message.key())


class Capture:
    """``python -m cdcwh.cli capture`` with ``env``; its output goes to ``log``."""

    def __init__(self, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.env, self.cwd, self.log = env, cwd, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cdcwh.cli", "capture"],
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int:
        """SIGTERM and the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self.process = None
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def wait_for_changes(
    bootstrap: str, prefix: str, capture: Capture, done: Callable[[list[Change]], bool]
) -> list[Change]:
    """Read every ``<prefix>.*`` topic until ``done(changes)``; fails when capture dies or time runs out."""
    deadline = time.monotonic() + WAIT_S
    changes: list[Change] = []
    while time.monotonic() < deadline:
        assert capture.alive(), f"cdcwh capture exited:\n{capture.output()}"
        changes = [parse(m) for m in read_to_end(bootstrap, prefix=f"{prefix}.", timeout_s=30)]
        if done(changes):
            return changes
        time.sleep(1.0)
    raise AssertionError(f"{len(changes)} records after {WAIT_S} s; capture said:\n{capture.output()}")
