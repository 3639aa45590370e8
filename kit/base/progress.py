"""Progress of long work: steps done of total, scenarios passed of total, with an ETA.

Drawn on one line of a terminal only; when the stream is not a terminal (CI, a pipe,
a test) it stays quiet, so logs hold results and no carriage returns.
"""

from __future__ import annotations

import sys
import threading
import time


class Progress:
    def __init__(self, total: int, noun: str, stream=None, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        self.total = total
        self.noun = noun
        self.done = 0
        self.passed: int | None = None
        self.started = time.monotonic()
        self.enabled = (hasattr(self.stream, "isatty") and self.stream.isatty()) if enabled is None else enabled
        self._lock = threading.Lock()

    def eta(self) -> float | None:
        """Seconds still to go, guessed from the pace so far."""
        if not self.done or self.done >= self.total:
            return None
        return (time.monotonic() - self.started) / self.done * (self.total - self.done)

    def advance(self, note: str = "", passed: bool | None = None) -> None:
        """One more done; `passed` counts it as passed (or not) when the work has verdicts."""
        with self._lock:
            self.done += 1
            if passed is not None:
                self.passed = (self.passed or 0) + int(passed)
            if not self.enabled:
                return
            line = f"  {self.done}/{self.total} {self.noun}"
            if self.passed is not None:
                line += f", {self.passed} passed"
            eta = self.eta()
            if eta is not None:
                line += f", about {eta:.0f}s to go"
            if note:
                line += f" ({note})"
            self.stream.write("\r\x1b[K" + line)
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.done:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
