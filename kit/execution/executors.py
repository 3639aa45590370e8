"""Executors: where step tasks run. The coordinator submits tasks and reads results.

- `LocalExecutor`: a pool of worker threads in the coordinating process; each
  step's kernel is its own process, so threads only wait on kernels. Runs asking for
  the same number of workers share one pool: the scenarios `kit test` runs at once
  run at most that many steps at once in all.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from kit.execution.step import execute_step
from kit.execution.task import StepTask


class Executor(Protocol):
    def submit(self, task: StepTask) -> Future: ...

    def shutdown(self) -> None: ...


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()  # runs of parallel scenarios ask for their pool at once


class LocalExecutor:
    """Worker threads shared by every run of the process, so warm kernels (one per thread) are reused."""

    def __init__(self, workers: int):
        workers = max(1, workers)
        with _POOLS_LOCK:
            if workers not in _POOLS:
                _POOLS[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"kit-step-{workers}")
            self.pool = _POOLS[workers]

    def submit(self, task: StepTask) -> Future:
        return self.pool.submit(execute_step, task)

    def shutdown(self) -> None:
        """Nothing to do: the threads (and their kernels) serve the next run; they end with the process."""
