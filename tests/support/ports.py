"""Free TCP ports for services a test starts on fixed ports (the metrics endpoints are ``base + i``).

A port the kernel hands out for ``bind(0)`` comes from the ephemeral range, where every outgoing connection of
every process (Kafka and PostgreSQL clients, other test workers) also takes its local port: a base picked
that way was once taken by a client socket before the supervisor bound ``base + 3``. Ports are therefore
picked below the ephemeral range, where only an explicit ``bind`` can take one, from a slice of the range that
is this xdist worker's own, and each one is checked by binding it.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

LOW = 10_000  # above the well-known and registered ports most daemons bind
SLICE = 4_000  # ports per xdist worker (gw0 .. gw4 fit below the default ephemeral range's 32768)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base_port(ports: int = 5) -> int:
    """A base port such that ``base .. base + ports - 1`` are all free and outside the ephemeral range."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) if worker.isdigit() else 0
    high = _ephemeral_low() - ports
    slices = max((high - LOW) // SLICE, 0)
    if slices:
        start = LOW + (index % slices) * SLICE
        stop = start + SLICE
    else:  # an unusual ephemeral range: any unprivileged port, checked by binding
        start, stop = LOW, 65_000
    rng = random.Random()  # noqa: S311 - not for security
    for _ in range(200):
        base = rng.randrange(start, stop)
        if all(_bindable(base + i) for i in range(ports)):
            return base
    raise RuntimeError(f"no {ports} free consecutive ports in {start}..{stop}")
