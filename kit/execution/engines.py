"""Engines: how a step's notebook is executed (DESIGN section 13), found by name.

An engine takes a `StepTask`, executes its notebook (keeping papermill's
parameterization and its executed output notebook) and reports what went wrong, if
anything, as a `NotebookOutcome`; collecting outputs is not its business. Each
states the isolation it gives, recorded with every run.

Engines are plugins of the entry point group ``kit.engines`` (`kit.base.plugins`);
kit's own (`fork` in `kit.execution.fork_engine`; `papermill`, `warm` in
`kit.execution.papermill_engines`) are declared the same way. The default engine of
each command is in `DEFAULT_ENGINES`; ``KIT_ENGINE`` overrides it for every command,
``--engine`` for one.

Engines register the step they are executing and its process (`running_step`), so that
`cancel_running` can stop them all at once when the coordinator is interrupted; a
`Watchdog` enforces a step's timeout on that process.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psutil

from kit.base.display import strip_ansi
from kit.base.plugins import Registry, UnknownPlugin
from kit.errors import InvalidInput
from kit.execution.task import StepTask
from kit.kernel.api import OBJECTS_ENV, SPOOL_ENV

ENTRY_POINT_GROUP = "kit.engines"
ENGINE_ENV = "KIT_ENGINE"

#: The engine each command uses unless KIT_ENGINE or --engine says otherwise: a fresh process per step
#: at a fork's cost (`papermill` for a real kernel's exact semantics, `warm` for widgets on a kept kernel).
DEFAULT_ENGINES = {"run": "fork", "test": "fork", "replay": "fork", "pytest": "fork"}

#: The error_type of a step stopped by `cancel_running`.
CANCELLED = "Cancelled"

#: The exit code of a forked step process that could not execute the step at all (its crash report
#: says why): set by `fork_child`, read by `fork_engine`.
EXIT_CANNOT_RUN = 70

# Cells papermill adds to the notebook it executes and saves (papermill.parameterize, papermill.execute).
INJECTED_TAG = "injected-parameters"
ERROR_MARKER_TAG = "papermill-error-cell-tag"


@dataclass
class NotebookOutcome:
    """What executing a notebook produced besides its spool: an error, and cell timings."""

    error_type: str | None = None
    error_message: str | None = None
    error_cell: int | None = None
    error_source: str | None = None
    traceback: str | None = None
    cells: list[dict[str, Any]] = field(default_factory=list)  # papermill's per-cell timing metadata

    @property
    def ok(self) -> bool:
        return self.error_type is None


@dataclass(frozen=True)
class Engine:
    """A named way to execute a step, and the isolation it gives (recorded in `runs.isolation`)."""

    name: str
    isolation: str
    execute: Callable[[StepTask], NotebookOutcome]


def _engine(obj: Any, name: str) -> Engine:
    if not isinstance(obj, Engine):
        raise TypeError(f"{obj!r} is not a kit.execution.engines.Engine")
    return obj


ENGINES = Registry(ENTRY_POINT_GROUP, "engine", _engine)


def get_engine(name: str) -> Engine:
    try:
        return ENGINES.get(name)
    except UnknownPlugin as exc:
        if exc.load_error:
            raise InvalidInput(exc.message) from None
        raise InvalidInput(f"unknown engine {name!r}; known engines: {', '.join(exc.known)}") from None


def default_engine(command: str) -> str:
    """The engine `command` (run, test, replay, pytest) uses when --engine is not given."""
    return os.environ.get(ENGINE_ENV) or DEFAULT_ENGINES[command]


def kernel_environment(task: StepTask) -> dict[str, str]:
    """The environment a step's kernel sees: the coordinator's, plus the run's and where to spool."""
    env = dict(os.environ)
    env.update(task.env)
    env[SPOOL_ENV] = task.spool
    env[OBJECTS_ENV] = task.objects
    env["KIT_STEP"] = task.step_id
    env.pop("KIT_HOME", None)
    return env


def describe_execution_error(outcome: NotebookOutcome, exc: BaseException) -> None:
    """Fill `outcome` from what papermill raised: a cell's error (`PapermillExecutionError`) or another failure.

    `error_cell` is still papermill's count; `failing_cell` turns it into the user's.
    """
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        outcome.error_type = exc.ename
        outcome.error_message = strip_ansi(str(exc.evalue))
        outcome.error_cell = exc.cell_index
        outcome.error_source = exc.source
        outcome.traceback = strip_ansi("\n".join(exc.traceback))
    else:  # the kernel died, could not start, or the notebook could not be written
        outcome.error_type = type(exc).__name__
        outcome.error_message = strip_ansi(str(exc)) or type(exc).__name__


def cell_timings(nb: Any) -> list[dict[str, Any]]:
    """Each executed code cell's index, start, end, status and tags, from papermill's metadata in `nb`."""
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


def _tags(cell: Any) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def failing_cell(executed: Any, cell_index: int, source: Any) -> int:
    """The index in the user's notebook `source` of the cell papermill reports as `cell_index`.

    papermill counts the cells it executed: those of `source` but its error banners,
    and the parameters cell it injects (unless `source` has one, which it replaces in
    place). It saves them, `executed`, with new banners, which it does not count.
    """
    kept = [i for i, cell in enumerate(source.cells) if ERROR_MARKER_TAG not in _tags(cell)]
    if not any(INJECTED_TAG in _tags(cell) for cell in source.cells):
        counted = [cell for cell in executed.cells if ERROR_MARKER_TAG not in _tags(cell)]
        cell_index -= sum(INJECTED_TAG in _tags(cell) for cell in counted[:cell_index])
    return kept[cell_index] if 0 <= cell_index < len(kept) else cell_index


# multiprocessing's helpers serve the interpreter that started them, not one step, and exit with it.
_INTERPRETER_HELPERS = ("from multiprocessing.resource_tracker import", "from multiprocessing.forkserver import")


def _serves_its_parent(process: psutil.Process) -> bool:
    try:
        command = " ".join(process.cmdline())
    except psutil.Error:
        return False
    return any(helper in command for helper in _INTERPRETER_HELPERS)


def kill_process_tree(pid: int, keep_root: bool = False) -> None:
    """SIGKILL process `pid` and every process descended from it.

    Descendants are found by their parent, so a process that left the kernel's session
    or process group (``start_new_session=True``) is found too; one whose parent has
    already exited, a daemon that double-forked, is not. With `keep_root` the process
    lives on, and so do multiprocessing's resource tracker and fork server (not their
    children): killed, the tracker would be relaunched and complain, in the next
    step's output, about the semaphores that a pool of the previous step left behind.
    """
    try:
        root = psutil.Process(pid)
        processes = root.children(recursive=True)
    except psutil.Error:
        return
    if keep_root:
        processes = [process for process in processes if not _serves_its_parent(process)]
    else:
        processes.insert(0, root)  # first, so that it starts nothing more
    for process in processes:
        try:
            process.kill()
        except psutil.Error:  # gone already, or never ours to kill
            pass


class StepCancelled(Exception):
    """Raised in a worker thread whose step was cancelled before its kernel was ready."""


class RunningStep:
    """A step an engine is executing, as `cancel_running` finds it: its kernel's pid once started."""

    def __init__(self, run_id: str | None = None) -> None:
        self.run_id = run_id
        self.kernel_pid: int | None = None
        self.cancelled = False

    def kernel_started(self, pid: int | None) -> None:
        """Note the kernel executing the step; if the step was cancelled meanwhile, kill it and stop."""
        with _RUNNING_LOCK:
            self.kernel_pid = pid
            cancelled = self.cancelled
        if cancelled:
            if pid:
                kill_process_tree(pid)
            raise StepCancelled("the step was cancelled before it started")


_RUNNING: set[RunningStep] = set()
_RUNNING_LOCK = threading.Lock()


@contextmanager
def running_step(run_id: str | None = None) -> Iterator[RunningStep]:
    """Register, while an engine executes it, a step (of run `run_id`) that `cancel_running` must be able
    to stop."""
    step = RunningStep(run_id)
    with _RUNNING_LOCK:
        _RUNNING.add(step)
    try:
        yield step
    finally:
        with _RUNNING_LOCK:
            _RUNNING.discard(step)


class Watchdog:
    """Enforces a step's timeout: interrupt its process (SIGINT), then kill it and what it started.

    Signals go straight to the process the step registered (`RunningStep.kernel_started`),
    so the watchdog needs nothing from the thread that is executing the notebook.
    `what` names that process in the message: a kernel, or the step's forked process.
    """

    def __init__(self, timeout: float | None, step: RunningStep, grace: float = 5.0, what: str = "kernel"):
        self.timeout, self.step, self.grace, self.what = timeout, step, grace, what
        self.fired = False
        self.killed = False  # the process went on after the interrupt
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
        while self.step.kernel_pid is None:  # the process is still starting
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
        return f"the step ran past its timeout of {self.timeout:g}s; its {self.what} {what}"


def cancel_running(run_id: str | None = None) -> None:
    """Kill now the kernel of every step this process is executing (of run `run_id` only, when given: a
    suite's other scenarios go on), and every process it started.

    For the coordinator's main thread on Ctrl-C or SIGTERM (DESIGN section 6): the worker
    threads waiting on those kernels return promptly, each step's outcome `CANCELLED`. A
    step whose kernel is still starting is stopped as soon as it has started.
    """
    with _RUNNING_LOCK:
        steps = [step for step in _RUNNING if run_id is None or step.run_id == run_id]
        for step in steps:
            step.cancelled = True
        pids = [step.kernel_pid for step in steps if step.kernel_pid]
    for pid in pids:
        kill_process_tree(pid)
