"""Executors: where step tasks run. The coordinator submits tasks and reads results.

- `LocalExecutor`: a pool of worker threads in the coordinating process; each
  step's kernel is its own process, so threads only wait on kernels.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from kit.step import execute_step
from kit.task import StepTask


class Executor(Protocol):
    def submit(self, task: StepTask) -> Future: ...

    def shutdown(self) -> None: ...


class LocalExecutor:
    def __init__(self, workers: int):
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="kit-step")

    def submit(self, task: StepTask) -> Future:
        return self.pool.submit(execute_step, task)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
