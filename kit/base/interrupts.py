"""Ctrl-C and SIGTERM held while a cancellation cleans up.

The first Ctrl-C (or SIGTERM, which kit's CLI turns into one) cancels: the running steps
are stopped and their runs ended `cancelled`, resumable. A second one during that cleanup
would cut it short, leaving runs `running` and worker threads alive while the interpreter
exits. So the cleanup runs with both signals held: a second one only says to wait.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

WAIT_MESSAGE = b"kit: still cancelling: the runs in progress are being ended as cancelled, a moment\n"


@contextmanager
def held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM for the block (in the main thread; elsewhere signals cannot interrupt)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    said = []

    def wait_please(signum, frame) -> None:
        if not said:
            said.append(signum)
            try:
                os.write(2, WAIT_MESSAGE)
            except OSError:
                pass

    previous = {sig: signal.signal(sig, wait_please) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
