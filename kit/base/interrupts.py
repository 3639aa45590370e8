"""Ctrl-C, SIGTERM and SIGHUP held while a cancellation cleans up.

The first Ctrl-C (or SIGTERM or SIGHUP, which kit's CLI turns into one) cancels: the running steps
are stopped and their runs ended `cancelled`, resumable. A second one during that cleanup
would cut it short, leaving runs `running` and worker threads alive while the interpreter
exits. So the cleanup runs with these signals held: a second one only says to wait.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: What stops a command (the CLI turns SIGTERM and SIGHUP into Ctrl-C).
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

WAIT_MESSAGE = b"kit: still cancelling: the runs in progress are being ended as cancelled, a moment\n"


@contextmanager
def held() -> Iterator[None]:
    """Hold `SIGNALS` for the block (in the main thread; elsewhere signals cannot interrupt). One that was
    ignored (SIGHUP under nohup) stays ignored."""
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

    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(sig, wait_please)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
