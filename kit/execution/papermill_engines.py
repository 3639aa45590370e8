"""kit's engines on papermill: `papermill` (a fresh kernel per step) and `warm` (a kernel
kept per worker thread, put back to its baseline before each step, see `kit.kernel.warm`).

Both keep papermill's parameterization and its executed output notebook. Kernels
start through a papermill engine of kit's own (registered with papermill's engine
registry as ``kit``): on the IPC transport in a private folder, which removes the port
races of concurrent kernel starts (papermill #511), with the step's environment, and
shut down immediately, which removes graceful shutdown's stalls (FIELD-NOTES). When a
step ends, every process its kernel started is killed. A `Watchdog` enforces a step's
timeout by signalling the kernel's process; `cancel_running` kills the kernels of the
steps being executed (both engines register them with `running_step`).

A kernel exits by itself within a second of kit's process being killed (ipykernel
polls its parent, ``JPY_PARENT_PID``); the processes it started do not.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from kit.base.display import strip_ansi
from kit.execution.engines import (
    CANCELLED,
    Engine,
    NotebookOutcome,
    RunningStep,
    failing_cell,
    kernel_environment,
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
    """Teach papermill an engine that starts kernels our way (env, IPC, immediate shutdown)."""
    global _papermill_registered
    if _papermill_registered:
        return
    from queue import Empty

    from nbclient.util import ensure_async, run_sync
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines
    from traitlets import Any, Dict, Unicode

    class StepClient(PapermillNotebookClient):
        kernel_env = Dict(default_value=None, allow_none=True).tag(config=True)
        ipc_dir = Unicode("").tag(config=True)
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

        def create_kernel_manager(self):
            km = super().create_kernel_manager()
            if self.ipc_dir:
                km.transport = "ipc"
                km.ip = os.path.join(self.ipc_dir, "k")
            return km

        async def async_start_new_kernel(self, **kwargs):
            if self.kernel_env is not None:
                kwargs.setdefault("env", self.kernel_env)
            await super().async_start_new_kernel(**kwargs)
            self.step.kernel_started(_kernel_pid(self.km))

        # nbclient binds its sync wrappers to the base class's coroutine: rebind ours.
        start_new_kernel = run_sync(async_start_new_kernel)

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


def _cell_timings(nb: Any) -> list[dict[str, Any]]:
    cells = []
    for index, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("papermill", {})
        if cell.get("cell_type") == "code" and meta.get("start_time"):
            cells.append(
                {
                    "index": index,
                    "start_time": meta.get("start_time"),
                    "end_time": meta.get("end_time"),
                    "status": meta.get("status"),
                    "tags": list(cell.get("metadata", {}).get("tags", [])),
                }
            )
    return cells


class Watchdog:
    """Enforces a step's timeout: interrupt the kernel (SIGINT), then kill it and what it started.

    Signals go straight to the kernel's process, so the watchdog needs nothing from
    the event loop of the thread that is executing the notebook.
    """

    def __init__(self, timeout: float | None, step: RunningStep, grace: float = 5.0):
        self.timeout, self.step, self.grace = timeout, step, grace
        self.fired = False
        self.killed = False  # the kernel went on after the interrupt
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Watchdog:
        if self.timeout:
            self._thread = threading.Thread(target=self._watch, name="kit-watchdog", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()

    def _watch(self) -> None:
        if self._done.wait(self.timeout):
            return
        self.fired = True
        while self.step.kernel_pid is None:  # the kernel is still starting
            if self._done.wait(0.1):
                return
        try:
            os.kill(self.step.kernel_pid, signal.SIGINT)
        except ProcessLookupError:
            return
        if self._done.wait(self.grace):
            return
        self.killed = True
        kill_process_tree(self.step.kernel_pid)

    def message(self) -> str:
        what = "did not stop when interrupted and was killed" if self.killed else "was interrupted"
        return f"the step ran past its timeout of {self.timeout:g}s; its kernel {what}"


def _outcome(task: StepTask, execute: Callable[[RunningStep, Watchdog], None]) -> NotebookOutcome:
    """Run `execute` registered and under the watchdog; say what happened: the error, its cell, the timings."""
    import nbformat
    from papermill.exceptions import PapermillExecutionError

    outcome = NotebookOutcome()
    with running_step() as step, Watchdog(task.timeout, step) as watchdog:
        try:
            execute(step, watchdog)
        except PapermillExecutionError as exc:
            outcome.error_type = exc.ename
            outcome.error_message = strip_ansi(str(exc.evalue))
            outcome.error_cell = exc.cell_index
            outcome.error_source = exc.source
            outcome.traceback = strip_ansi("\n".join(exc.traceback))
        except Exception as exc:  # the kernel died, could not start, or the notebook could not be written
            outcome.error_type = type(exc).__name__
            outcome.error_message = strip_ansi(str(exc)) or type(exc).__name__
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
        outcome.cells = _cell_timings(executed)
        if outcome.error_cell is not None:
            outcome.error_cell = failing_cell(executed, outcome.error_cell, nbformat.read(task.notebook, as_version=4))
    return outcome


def run_papermill(task: StepTask) -> NotebookOutcome:
    """A fresh kernel per step through papermill: exact Jupyter semantics."""
    _register_with_papermill()
    ipc_dir = tempfile.mkdtemp(prefix="kit-k-")
    try:
        return _outcome(task, lambda step, watchdog: _execute_with_retried_start(task, ipc_dir, step, watchdog))
    finally:
        shutil.rmtree(ipc_dir, ignore_errors=True)


def _execute_with_retried_start(task: StepTask, ipc_dir: str, step: RunningStep, watchdog: Watchdog) -> None:
    import papermill

    for attempt in range(3):  # a kernel that fails to start is started again (start races)
        try:
            papermill.execute_notebook(
                task.notebook,
                task.output_notebook,
                parameters=task.parameters,
                engine_name="kit",
                kernel_name=task.kernel_name,
                progress_bar=False,
                log_output=False,
                start_timeout=60,
                kernel_env=kernel_environment(task),
                ipc_dir=ipc_dir,
                resources={"metadata": {"path": task.workdir}},
                shutdown_kernel="immediate",
                step=step,
            )
            return
        except RuntimeError as exc:
            retry = "kernel" in str(exc).lower() and attempt < 2 and not (watchdog.fired or step.cancelled)
            if not retry or _cells_started(task.output_notebook):  # a cell that ran must never run twice
                raise


def _cells_started(output_notebook: str) -> bool:
    """Whether papermill began executing any cell of this attempt (it marks each with a start time)."""
    import json

    try:
        with open(output_notebook) as fh:
            cells = json.load(fh).get("cells", [])
    except (OSError, ValueError):
        return False
    return any(cell.get("metadata", {}).get("papermill", {}).get("start_time") for cell in cells)


class WarmKernel:
    """A kernel kept alive in one worker thread and reused, step after step."""

    def __init__(self, kernel_name: str):
        from jupyter_client import AsyncKernelManager
        from nbclient.util import run_sync

        self.ipc_dir = tempfile.mkdtemp(prefix="kit-w-")
        self.km = AsyncKernelManager(kernel_name=kernel_name, transport="ipc", ip=os.path.join(self.ipc_dir, "k"))
        env = {k: v for k, v in os.environ.items() if k not in ("KIT_HOME", SPOOL_ENV)}
        # History in memory, as nbclient starts papermill's kernels: the execution count restarts at
        # each step, and the history file would refuse the same (session, line) with "ERROR!" in a cell.
        run_sync(self.km.start_kernel)(env=env, extra_arguments=["--HistoryManager.hist_file=:memory:"])
        self.kc = self.km.client()
        self.kc.start_channels()
        run_sync(self.kc.wait_for_ready)(timeout=60)
        _WARM_KERNELS.add(self)

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
    import json as _json

    import papermill

    _register_with_papermill()
    env = {**task.env, SPOOL_ENV: task.spool, OBJECTS_ENV: task.objects, "KIT_STEP": task.step_id}
    preamble = f"__import__('kit.kernel.warm').kernel.warm.prepare({task.workdir!r}, {_json.dumps(env)})"

    def execute_on_warm_kernel(step: RunningStep) -> None:
        kernel = _warm_kernel(task.kernel_name)
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
