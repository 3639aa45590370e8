"""Who drives a run: one process at a time (DESIGN section 6, "exactly once where it matters").

The driving process holds an exclusive lock on `.kit/runs/<run_id>/driver.lock` for as
long as it runs or resumes the run, and says who it is in `driver.json` beside it. A
second `kit resume` of the same run finds the lock taken and is refused, naming that
process. The operating system lets go of the lock when its holder dies (even by
`kill -9`), so a run left `running` by a dead coordinator can be resumed at once.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

from kit.base.clock import utcnow
from kit.errors import InvalidInput


class RunInUse(InvalidInput):
    """Another process drives the run (exit 2)."""


class RunDriver:
    def __init__(self, runs_dir: Path, run_id: str):
        self.run_id = run_id
        self.folder = Path(runs_dir) / run_id
        self.lock_path = self.folder / "driver.lock"
        self.info_path = self.folder / "driver.json"
        self._lock = None

    def acquire(self) -> RunDriver:
        """Take the run, or raise RunInUse naming the process that has it."""
        from filelock import FileLock, Timeout

        self.folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.lock_path), thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise RunInUse(f"run {self.run_id} is being driven by {self.holder()}; wait for it to end") from None
        self._lock = lock
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": utcnow(), "command": " ".join(sys.argv)}
        self.info_path.write_text(json.dumps(info))
        return self

    def holder(self) -> str:
        """The process driving the run, in words (it writes who it is just after taking the lock)."""
        import time

        deadline = time.monotonic() + 2.0
        while True:
            try:
                info = json.loads(self.info_path.read_text())
                break
            except (OSError, ValueError):
                if time.monotonic() >= deadline:
                    return "another process"
                time.sleep(0.05)
        return f"process {info.get('pid')} on {info.get('host')} (since {info.get('since')}: {info.get('command')})"

    def busy(self) -> bool:
        """Whether some process drives the run now (without taking it)."""
        from filelock import FileLock, Timeout

        if not self.lock_path.exists():
            return False
        probe = FileLock(str(self.lock_path), thread_local=False)
        try:
            probe.acquire(timeout=0)
        except Timeout:
            return True
        probe.release()
        return False

    def release(self) -> None:
        if self._lock is not None:
            self.info_path.unlink(missing_ok=True)
            self._lock.release()
            self._lock = None

    def __enter__(self) -> RunDriver:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
