"""kit's engines on papermill: `papermill` (a fresh kernel per step) and `warm` (a kernel
kept per worker thread, its namespace reset before each step, see `kit.kernel.warm`).

Both keep papermill's parameterization and its executed output notebook. Kernels
start through a papermill engine of kit's own (registered with papermill's engine
registry as ``kit``): on the IPC transport in a private folder, which removes the port
races of concurrent kernel starts (papermill #511), with the step's environment, and
shut down immediately, which removes graceful shutdown's stalls (FIELD-NOTES). A
`Watchdog` enforces a step's timeout by signalling the kernel's process.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from kit.base.display import strip_ansi
from kit.execution.engines import Engine, NotebookOutcome, failing_cell, kernel_environment
from kit.execution.task import StepTask
from kit.kernel.api import OBJECTS_ENV, SPOOL_ENV

_papermill_registered = False


def _register_with_papermill() -> None:
    """Teach papermill an engine that starts kernels our way (env, IPC, immediate shutdown)."""
    global _papermill_registered
    if _papermill_registered:
        return
    from nbclient.util import run_sync
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines
    from traitlets import Any, Dict, Unicode

    class StepClient(PapermillNotebookClient):
        kernel_env = Dict(default_value=None, allow_none=True).tag(config=True)
        ipc_dir = Unicode("").tag(config=True)
        watchdog = Any(default_value=None, allow_none=True).tag(config=True)
        warm_client = Any(default_value=None, allow_none=True).tag(config=True)  # a kernel client kept alive
        preamble = Unicode("").tag(config=True)  # run silently before the cells

        def __init__(self, nb_man, km=None, **kw):
            super().__init__(nb_man, km=km, **kw)
            if self.warm_client is not None:
                self.kc = self.warm_client

        def papermill_execute_cells(self):
            if self.preamble:
                msg_id = self.kc.execute(self.preamble, silent=True, store_history=False, allow_stdin=False)
                reply = self.wait_for_reply(msg_id)
                content = (reply or {}).get("content", {})
                if content.get("status") != "ok":
                    raise RuntimeError(f"kernel preparation failed: {content.get('ename')}: {content.get('evalue')}")
            super().papermill_execute_cells()

        def create_kernel_manager(self):
            km = super().create_kernel_manager()
            if self.ipc_dir:
                km.transport = "ipc"
                km.ip = os.path.join(self.ipc_dir, "k")
            if self.watchdog is not None:
                self.watchdog.km = km
            return km

        async def async_start_new_kernel(self, **kwargs):
            if self.kernel_env is not None:
                kwargs.setdefault("env", self.kernel_env)
            return await super().async_start_new_kernel(**kwargs)

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
    """Enforces a step's timeout: interrupt the kernel (SIGINT), then kill it if it goes on.

    Signals go straight to the kernel's process, so the watchdog needs nothing from
    the event loop of the thread that is executing the notebook.
    """

    def __init__(self, timeout: float | None, grace: float = 5.0):
        self.timeout, self.grace = timeout, grace
        self.km = None
        self.fired = False
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Watchdog:
        if self.timeout:
            self._thread = threading.Thread(target=self._watch, name="kit-watchdog", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()

    def _pid(self) -> int | None:
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        return getattr(process, "pid", None)

    def _watch(self) -> None:
        if self._done.wait(self.timeout):
            return
        self.fired = True
        pid = self._pid()
        if pid is None:
            return
        for sig, wait in ((signal.SIGINT, self.grace), (signal.SIGKILL, 0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            if self._done.wait(wait):
                return


def _outcome(task: StepTask, watchdog: Watchdog, execute: Callable[[], None]) -> NotebookOutcome:
    """Run `execute` under the watchdog and say what happened: the error, its cell, the timings."""
    import nbformat
    from papermill.exceptions import PapermillExecutionError

    outcome = NotebookOutcome()
    try:
        with watchdog:
            execute()
    except PapermillExecutionError as exc:
        outcome.error_type = exc.ename
        outcome.error_message = strip_ansi(str(exc.evalue))
        outcome.error_cell = exc.cell_index
        outcome.error_source = exc.source
        outcome.traceback = strip_ansi("\n".join(exc.traceback))
    except Exception as exc:  # the kernel died, could not start, or the notebook could not be written
        outcome.error_type = type(exc).__name__
        outcome.error_message = strip_ansi(str(exc)) or type(exc).__name__
    if watchdog.fired:
        outcome.error_type = "Timeout"
        outcome.error_message = f"the step ran past its timeout of {task.timeout:g}s; its kernel was interrupted"
    if os.path.exists(task.output_notebook):
        executed = nbformat.read(task.output_notebook, as_version=4)
        outcome.cells = _cell_timings(executed)
        if outcome.error_cell is not None:  # papermill puts an error banner on top: index the saved file
            outcome.error_cell = failing_cell(executed, outcome.error_cell)
    return outcome


def run_papermill(task: StepTask) -> NotebookOutcome:
    """A fresh kernel per step through papermill: exact Jupyter semantics."""
    _register_with_papermill()
    ipc_dir = tempfile.mkdtemp(prefix="kit-k-")
    watchdog = Watchdog(task.timeout)
    try:
        return _outcome(task, watchdog, lambda: _execute_with_retried_start(task, ipc_dir, watchdog))
    finally:
        shutil.rmtree(ipc_dir, ignore_errors=True)


def _execute_with_retried_start(task: StepTask, ipc_dir: str, watchdog: Watchdog) -> None:
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
                watchdog=watchdog,
            )
            return
        except RuntimeError as exc:
            if "kernel" not in str(exc).lower() or attempt == 2 or watchdog.fired:
                raise


class WarmKernel:
    """A kernel kept alive in one worker thread and reused, step after step."""

    def __init__(self, kernel_name: str):
        from jupyter_client import AsyncKernelManager
        from nbclient.util import run_sync

        self.ipc_dir = tempfile.mkdtemp(prefix="kit-w-")
        self.km = AsyncKernelManager(kernel_name=kernel_name, transport="ipc", ip=os.path.join(self.ipc_dir, "k"))
        env = {k: v for k, v in os.environ.items() if k not in ("KIT_HOME", SPOOL_ENV)}
        run_sync(self.km.start_kernel)(env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        run_sync(self.kc.wait_for_ready)(timeout=60)
        _WARM_KERNELS.append(self)

    def alive(self) -> bool:
        from nbclient.util import run_sync

        return bool(run_sync(self.km.is_alive)())

    def pid(self) -> int | None:
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        return getattr(process, "pid", None)

    def kill(self) -> None:
        pid = self.pid()
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.kc.stop_channels()
        except Exception:  # noqa: BLE001 - its loop may be gone at exit
            pass
        shutil.rmtree(self.ipc_dir, ignore_errors=True)
        try:
            self.km.cleanup_connection_file()
        except Exception:  # noqa: BLE001
            pass


_WARM_KERNELS: list[WarmKernel] = []
_warm_local = threading.local()


def _kill_warm_kernels() -> None:
    for kernel in _WARM_KERNELS:
        kernel.kill()


atexit.register(_kill_warm_kernels)


def _warm_kernel(kernel_name: str) -> WarmKernel:
    kernel = getattr(_warm_local, "kernel", None)
    if kernel is not None and not kernel.alive():
        kernel.kill()
        kernel = None
    if kernel is None:
        kernel = WarmKernel(kernel_name)
        _warm_local.kernel = kernel
    return kernel


def run_warm(task: StepTask) -> NotebookOutcome:
    """Papermill's parameterization and output notebook, on a kernel reused across steps.

    The namespace is reset before each step (`kit.warm.prepare`), modules stay
    imported: tens of milliseconds a step instead of a kernel start.
    """
    import json as _json

    import papermill

    _register_with_papermill()
    env = {**task.env, SPOOL_ENV: task.spool, OBJECTS_ENV: task.objects, "KIT_STEP": task.step_id}
    preamble = f"__import__('kit.kernel.warm').kernel.warm.prepare({task.workdir!r}, {_json.dumps(env)})"
    watchdog = Watchdog(task.timeout)

    def execute() -> None:
        kernel = _warm_kernel(task.kernel_name)
        watchdog.km = kernel.km
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
            watchdog=watchdog,
        )

    outcome = _outcome(task, watchdog, execute)
    kernel = getattr(_warm_local, "kernel", None)
    if watchdog.fired and kernel is not None:  # a kernel that was interrupted or killed is not reused
        kernel.kill()
        _warm_local.kernel = None
    return outcome


PAPERMILL = Engine("papermill", "fresh kernel per step", run_papermill)
WARM = Engine("warm", "warm kernel per worker: namespace reset per step, imported modules kept", run_warm)
