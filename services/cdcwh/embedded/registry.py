"""Where embedded services record themselves, so every cdcwh command with the same data dir finds them.

``<data_dir>/run/<name>.json`` holds ``{"pid", "address", "started_at"}``. A record whose process is gone is
stale: it is reported as such and replaced by the next start.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True)
class ServiceRecord:
    """One running embedded service."""

    name: str
    pid: int
    address: str
    started_at: str

    @property
    def alive(self) -> bool:
        return pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (and is not a zombie we could reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def record_path(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.json"


def read_record(run_dir: Path, name: str) -> ServiceRecord | None:
    """The recorded service, alive or stale, or None when nothing was recorded."""
    path = record_path(run_dir, name)
    try:
        data = json.loads(path.read_text())
        return ServiceRecord(**data)
    except (OSError, ValueError, TypeError):
        return None


def write_record(run_dir: Path, name: str, pid: int, address: str) -> ServiceRecord:
    run_dir.mkdir(parents=True, exist_ok=True)
    record = ServiceRecord(name=name, pid=pid, address=address, started_at=datetime.now(UTC).isoformat())
    tmp = record_path(run_dir, name).with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)))
    tmp.replace(record_path(run_dir, name))
    return record


def remove_record(run_dir: Path, name: str, pid: int) -> None:
    """Remove the record if it still names this pid (a newer start may have replaced it)."""
    current = read_record(run_dir, name)
    if current is not None and current.pid == pid:
        record_path(run_dir, name).unlink(missing_ok=True)
