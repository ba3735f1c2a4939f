"""Clean stops on SIGTERM and SIGINT, one way for every long-running cdcwh process.

A service loop checks a ``threading.Event`` between units of work (a batch, a poll); ``stop_on_signals`` makes
SIGTERM (a supervisor, ``docker stop``) and SIGINT (Ctrl-C) set it, so the unit in progress finishes and
commits instead of being cut off. Signal handlers can only be installed from the main thread.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_on_signals(stopping: threading.Event, message: str = "stopping after the current batch") -> None:
    """Set ``stopping`` (and log ``message``) on SIGTERM or SIGINT; a second SIGINT raises KeyboardInterrupt
    where the process is, as Python's default does. Outside the main thread (a service run in a thread, as
    the tests do) there are no handlers to install: whoever runs it sets ``stopping``."""
    if threading.current_thread() is not threading.main_thread():
        log.debug("not in the main thread: no signal handlers; stopping is set by the caller")
        return

    def _stop(signum: int, frame: FrameType | None) -> None:
        log.info(message)
        stopping.set()
        if signum == signal.SIGINT:  # a second Ctrl-C interrupts at once (a stuck retry, say)
            signal.signal(signal.SIGINT, signal.default_int_handler)

    for signum in SIGNALS:
        signal.signal(signum, _stop)
