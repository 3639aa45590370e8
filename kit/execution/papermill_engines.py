"""kit's engines on papermill: `papermill` (a fresh kernel per step) and `warm` (a kernel
kept per worker thread, put back to its baseline before each step, see `kit.kernel.warm`).

Both keep papermill's parameterization and its executed output notebook, through a
papermill engine of kit's own (registered with papermill's engine registry as ``kit``)
that runs a silent preamble (the step's working directory and environment) before the
cells. Kernels start on the IPC transport in a private folder, which removes the port
races of concurrent kernel starts (papermill #511), and are killed rather than shut
down, which removes graceful shutdown's stalls (FIELD-NOTES). When a step ends, every
process its kernel started is killed. A `Watchdog` enforces a step's timeout by
signalling the kernel's process; `cancel_running` kills the kernels of the steps being
executed (both engines register them with `running_step`).

A kernel exits by itself within a second of kit's process being killed (ipykernel
polls its parent, ``JPY_PARENT_PID``); the processes it started do not.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from kit.execution.engines import (
    CANCELLED,
    Engine,
    NotebookOutcome,
    RunningStep,
    Watchdog,
    cell_timings,
    describe_execution_error,
    failing_cell,
    kill_process_tree,
    running_step,
)
from kit.execution.task import StepTask
from kit.kernel.api import OBJECTS_ENV, SPOOL_ENV

#: Seconds a warm kernel has to run the preamble that prepares it for a step.
PREAMBLE_TIMEOUT = 30.0

_papermill_registered = False


class KernelNotReady(RuntimeError):
    """A warm kernel failed to prepare for a step, died doing it or took too long: it is not reused."""


def _register_with_papermill() -> None:
    """Teach papermill an engine that runs a step on a kernel kit started, after a preamble."""
    global _papermill_registered
    if _papermill_registered:
        return
    from queue import Empty

    from nbclient.util import ensure_async, run_sync
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines
    from traitlets import Any, Unicode

    class StepClient(PapermillNotebookClient):
        step = Any().tag(config=True)  # the RunningStep: told the kernel's pid, which it kills on cancel
        warm_client = Any(default_value=None, allow_none=True).tag(config=True)  # a kernel client kept alive
        preamble = Unicode("").tag(config=True)  # run silently before the cells

        def __init__(self, nb_man, km=None, **kw):
            super().__init__(nb_man, km=km, **kw)
            if self.warm_client is not None:
                self.kc = self.warm_client

        def papermill_execute_cells(self):
            try:
                if self.preamble:
                    run_sync(self.async_run_preamble)()
                super().papermill_execute_cells()
            finally:  # nothing the step started outlives it, whatever the engine
                if self.step.kernel_pid:
                    kill_process_tree(self.step.kernel_pid, keep_root=True)

        async def async_run_preamble(self):
            """Run the preamble silently: a kernel that fails it, dies or hangs in it is not fit for the step."""
            msg_id = self.kc.execute(self.preamble, silent=True, store_history=False, allow_stdin=False)
            deadline = time.monotonic() + PREAMBLE_TIMEOUT
            while True:
                try:
                    reply = await ensure_async(self.kc.shell_channel.get_msg(timeout=1))
                except Empty:
                    if not await ensure_async(self.kc.is_alive()):
                        raise KernelNotReady("the kernel died while preparing for the step") from None
                    if time.monotonic() > deadline:
                        raise KernelNotReady(
                            f"the kernel did not prepare for the step in {PREAMBLE_TIMEOUT:g}s"
                        ) from None
                    continue
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
            content = reply["content"]
            if content.get("status") != "ok":
                raise KernelNotReady(f"kernel preparation failed: {content.get('ename')}: {content.get('evalue')}")

    class KitEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(
            cls,
            nb_man,
            kernel_name,
            log_output=False,
            stdout_file=None,
            stderr_file=None,
            start_timeout=60,
            execution_timeout=None,
            **kwargs,
        ):
            kwargs.pop("input_path", None)
            return StepClient(
                nb_man,
                kernel_name=kernel_name,
                timeout=execution_timeout,
                startup_timeout=start_timeout,
                log_output=log_output,
                stdout_file=stdout_file,
                stderr_file=stderr_file,
                **kwargs,
            ).execute()

    papermill_engines.register("kit", KitEngine)
    _papermill_registered = True


def _kernel_pid(km: Any) -> int | None:
    """The pid of the process a jupyter_client kernel manager started."""
    process = getattr(getattr(km, "provisioner", None), "process", None)
    return getattr(process, "pid", None)


def _outcome(task: StepTask, execute: Callable[[RunningStep, Watchdog], None]) -> NotebookOutcome:
    """Run `execute` registered and under the watchdog; say what happened: the error, its cell, the timings."""
    import nbformat

    outcome = NotebookOutcome()
    with running_step(task.run_id) as step, Watchdog(task.timeout, step) as watchdog:
        try:
            execute(step, watchdog)
        except Exception as exc:  # a cell's error, or the kernel died, could not start, the notebook unwritable
            describe_execution_error(outcome, exc)
    if step.cancelled:
        outcome.error_type = CANCELLED
        outcome.error_message = "the step was cancelled: its kernel and the processes it started were killed"
    elif watchdog.fired:
        outcome.error_type = "Timeout"
        outcome.error_message = watchdog.message()
    if os.path.exists(task.output_notebook):
        try:
            executed = nbformat.read(task.output_notebook, as_version=4)
        except (OSError, ValueError) as exc:  # cut short (a full disk): no record, and said so
            os.unlink(task.output_notebook)
            if outcome.ok:
                outcome.error_type = type(exc).__name__
                outcome.error_message = f"the executed notebook could not be written whole: {exc}"
            return outcome
        outcome.cells = cell_timings(executed)
        if outcome.error_cell is not None:
            outcome.error_cell = failing_cell(executed, outcome.error_cell, nbformat.read(task.notebook, as_version=4))
    return outcome


def _execute_on(task: StepTask, kernel: WarmKernel, step: RunningStep, preamble: str) -> None:
    """Papermill executes the task's notebook on a kernel already started (kit's papermill engine)."""
    import papermill

    step.kernel_started(kernel.pid())
    papermill.execute_notebook(
        task.notebook,
        task.output_notebook,
        parameters=task.parameters,
        engine_name="kit",
        kernel_name=task.kernel_name,
        progress_bar=False,
        log_output=False,
        km=kernel.km,
        warm_client=kernel.kc,
        preamble=preamble,
        step=step,
    )


def run_papermill(task: StepTask) -> NotebookOutcome:
    """A fresh kernel per step through papermill: exact Jupyter semantics.

    The kernel was started ahead of need, while this worker's previous step ran (one
    spare kernel per worker thread, `_spare_kernel`), and is killed when the step ends:
    the step pays for neither the start nor the shutdown. Its working directory and
    environment are set by a silent preamble, before the step's cells.
    """

    _register_with_papermill()
    env = {**task.env, SPOOL_ENV: task.spool, OBJECTS_ENV: task.objects, "KIT_STEP": task.step_id}
    preamble = f"__import__('os').environ.update({json.dumps(env)}); __import__('os').chdir({task.workdir!r})"
    used: list[WarmKernel] = []

    def execute_on(kernel: WarmKernel, step: RunningStep) -> None:
        used.append(kernel)
        _execute_on(task, kernel, step, preamble)

    def execute(step: RunningStep, watchdog: Watchdog) -> None:
        try:
            execute_on(_spare_kernel(task.kernel_name), step)
        except KernelNotReady:  # the spare died waiting, or broke: a fresh one
            if step.cancelled or watchdog.fired:
                raise
            execute_on(_start_kernel(task.kernel_name), step)

    try:
        return _outcome(task, execute)
    finally:
        for kernel in used:
            kernel.kill()


_spares = threading.local()


def _spare_kernel(kernel_name: str) -> WarmKernel:
    """This worker's spare kernel (waiting for it if it is still starting), and the next one started."""
    spare = getattr(_spares, "next", None)
    _spares.next = None
    kernel = spare.result() if spare is not None else None
    if kernel is not None and (kernel.kernel_name != kernel_name or not kernel.alive()):
        kernel.kill()
        kernel = None
    if kernel is None:
        kernel = _start_kernel(kernel_name)
    _spares.next = _start_in_background(kernel_name)
    return kernel


def _start_kernel(kernel_name: str) -> WarmKernel:
    """A new kernel; one that fails to start is started again, twice (the third failure is the step's)."""
    for _ in range(2):
        try:
            return WarmKernel(kernel_name)
        except RuntimeError:
            pass
    return WarmKernel(kernel_name)


def _start_in_background(kernel_name: str) -> Future:
    future: Future = Future()

    def start() -> None:
        try:
            future.set_result(WarmKernel(kernel_name))
        except Exception:  # noqa: BLE001 - the step that wants it starts one itself
            future.set_result(None)

    threading.Thread(target=start, name="kit-spare-kernel", daemon=True).start()
    return future


class WarmKernel:
    """A kernel kit started: kept in a worker thread and reused (`warm`), or a spare for one step (`papermill`)."""

    def __init__(self, kernel_name: str):
        from jupyter_client import AsyncKernelManager
        from nbclient.util import run_sync

        self.kernel_name = kernel_name
        self.ipc_dir = tempfile.mkdtemp(prefix="kit-w-")
        self.km = AsyncKernelManager(kernel_name=kernel_name, transport="ipc", ip=os.path.join(self.ipc_dir, "k"))
        env = {k: v for k, v in os.environ.items() if k not in ("KIT_HOME", SPOOL_ENV)}
        # History in memory, as nbclient starts papermill's kernels: the execution count restarts at
        # each step, and the history file would refuse the same (session, line) with "ERROR!" in a cell.
        run_sync(self.km.start_kernel)(env=env, extra_arguments=["--HistoryManager.hist_file=:memory:"])
        _WARM_KERNELS.add(self)  # from now on, killed when kit exits (a spare may still be starting then)
        try:
            self.kc = self.km.client()
            self.kc.start_channels()
            run_sync(self.kc.wait_for_ready)(timeout=60)
        except BaseException:
            self.kill()
            raise

    def alive(self) -> bool:
        from nbclient.util import run_sync

        return bool(run_sync(self.km.is_alive)())

    def pid(self) -> int | None:
        return _kernel_pid(self.km)

    def kill(self) -> None:
        """Kill the kernel and every process it started, and forget it."""
        _WARM_KERNELS.discard(self)
        pid = self.pid()
        if pid:
            kill_process_tree(pid)
        try:
            self.kc.stop_channels()
        except Exception:  # noqa: BLE001 - its loop may be gone at exit
            pass
        shutil.rmtree(self.ipc_dir, ignore_errors=True)
        try:
            self.km.cleanup_connection_file()
        except Exception:  # noqa: BLE001
            pass


_WARM_KERNELS: set[WarmKernel] = set()
_warm_local = threading.local()


def _kill_warm_kernels() -> None:
    for kernel in list(_WARM_KERNELS):
        kernel.kill()


atexit.register(_kill_warm_kernels)


def _drop_warm_kernel() -> None:
    """Kill this thread's warm kernel, if any: its next step gets a fresh one."""
    kernel = getattr(_warm_local, "kernel", None)
    if kernel is not None:
        kernel.kill()
        _warm_local.kernel = None


def _warm_kernel(kernel_name: str) -> WarmKernel:
    kernel = getattr(_warm_local, "kernel", None)
    if kernel is not None and not kernel.alive():
        _drop_warm_kernel()
        kernel = None
    if kernel is None:
        kernel = WarmKernel(kernel_name)
        _warm_local.kernel = kernel
    return kernel


def run_warm(task: StepTask) -> NotebookOutcome:
    """Papermill's parameterization and output notebook, on a kernel reused across steps.

    Before each step the kernel is put back to its baseline (`kit.warm.prepare`, run
    silently as a preamble); modules stay imported: a few milliseconds a step instead
    of a kernel start. A kernel that fails the preamble, or takes over
    `PREAMBLE_TIMEOUT` seconds, is killed and the step runs on a fresh one. When the
    step ends, the processes it started are killed; a kernel interrupted on a timeout
    or cancelled is not reused.
    """

    _register_with_papermill()
    env = {**task.env, SPOOL_ENV: task.spool, OBJECTS_ENV: task.objects, "KIT_STEP": task.step_id}
    preamble = f"__import__('kit.kernel.warm').kernel.warm.prepare({task.workdir!r}, {json.dumps(env)})"

    def execute_on_warm_kernel(step: RunningStep) -> None:
        _execute_on(task, _warm_kernel(task.kernel_name), step, preamble)

    def execute(step: RunningStep, watchdog: Watchdog) -> None:
        try:
            execute_on_warm_kernel(step)
        except KernelNotReady:
            _drop_warm_kernel()
            if step.cancelled or watchdog.fired:
                raise
            execute_on_warm_kernel(step)  # on a fresh kernel: if it fails there too, so does the step

    outcome = _outcome(task, execute)
    if outcome.error_type in ("Timeout", CANCELLED):  # its kernel was interrupted or killed: not reused
        _drop_warm_kernel()
    return outcome


PAPERMILL = Engine(
    "papermill", "fresh kernel per step; the processes a step started are killed when it ends", run_papermill
)
WARM = Engine(
    "warm",
    "warm kernel per worker: namespace reset per step; environment variables, builtins and the functions,"
    " classes and other callables of imported modules restored; the processes a step started killed when it"
    " ends; imported modules and their other state (caches, settings, constants) kept",
    run_warm,
)
