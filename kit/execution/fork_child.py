"""What runs in a step's forked process (the fork engine, DESIGN section 13): its notebook's cells on
IPython, the way a Jupyter kernel runs them, in papermill's format.

The fork engine's helper (`kit.execution.fork_engine.serve`) calls `prepare_shell` and
`prepare` once: they create ipykernel's shell and import what steps use, so that every
process forked from it starts warm. Each forked process then calls `serve_one`: it waits for a step, executes it, and exits:

- it becomes the step: the working directory, the environment the coordinator computed
  (`kernel_environment`), ``''`` first on `sys.path`, SIGINT raising KeyboardInterrupt (a
  timeout's interrupt), what ipykernel sets (``MPLBACKEND`` inline, ``TERM``, ``PAGER``...),
  `input()` refused as papermill's kernels refuse it, numpy's global random state
  re-seeded (a fork copies it: steps would draw the same numbers);
- it runs `papermill.execute_notebook`, so parameterization, papermill's metadata, the
  injected-parameters cell, the error banner and the output notebook are papermill's
  own, with an engine (`ForkedEngine`) that runs each cell on ipykernel's
  `ZMQInteractiveShell` in this process. The shell's display hook and display publisher
  are ipykernel's; their messages go to papermill's nbclient client instead of a socket
  (`_Relay`), so outputs, display ids, ``clear_output``, execution counts and tracebacks
  are made by the same code as under papermill. What is written to file descriptors 1
  and 2 (a subprocess, ``!cmd``) reaches the cell's streams too, as ipykernel captures it;
- it writes its outcome (a `NotebookOutcome`) to the spool, kills what it started, and
  exits without running finalizers, as a kernel shut down immediately.

What needs a live kernel and a frontend (Jupyter comms: ipywidgets) fails, saying to
run the step with the `warm` or `papermill` engine. JavaScript outputs (``%%javascript``)
are recorded and never run, as under papermill.
"""

from __future__ import annotations

import builtins
import codecs
import copy
import ctypes
import faulthandler
import gc
import getpass
import importlib
import io
import json
import logging
import mmap
import os
import signal
import struct
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

import comm
import nbformat
import papermill
from ipykernel.compiler import XCachingCompiler
from ipykernel.ipkernel import IPythonKernel
from ipykernel.zmqshell import ZMQInteractiveShell
from IPython.core.error import StdinNotImplementedError
from jupyter_client.session import Session
from nbclient.client import timestamp
from nbclient.exceptions import CellExecutionComplete, CellExecutionError
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import Engine as PapermillEngine
from papermill.engines import papermill_engines
from traitlets.config import Config

from kit.execution.engines import (
    EXIT_CANNOT_RUN,
    NotebookOutcome,
    cell_timings,
    describe_execution_error,
    failing_cell,
    kill_process_tree,
)

#: What the helper imports before it forks, besides what this module imports (IPython, papermill) and what
#: the workflow uses (`kit.execution.fork_engine.workflow_imports`).
BASE_MODULES = (
    *("kit", "kit.kernel.api", "kit.kernel.llm", "kit.kernel.calls"),
    *("IPython.core.logger", "bdb"),  # what the shell imports when it first runs a cell
)

#: The name papermill knows `ForkedEngine` by, in the forked process.
ENGINE_NAME = "kit-forked"

#: ipykernel's default matplotlib backend (`IPKernelApp.init_gui_pylab`): figures become display outputs.
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"

#: ipykernel flushes a stream this many seconds after a write (`OutStream.flush_interval`).
FLUSH_INTERVAL = 0.2

NEEDS_KERNEL = (
    "this step opens a Jupyter comm (ipywidgets, or a library built on them such as tqdm.notebook): "
    "that needs a live Jupyter kernel and a frontend, which the fork engine does not start. "
    "Run it with `--engine warm` (a kernel kept per worker) or `--engine papermill` (a fresh kernel per step)."
)

_PR_SET_CHILD_SUBREAPER = 36


class NeedsKernel(RuntimeError):
    """Raised in a step that asks for what only a live kernel gives (a comm)."""


class _Relay(Session):
    """A session that hands each message to the client executing the cell instead of sending it."""

    receive: Any = None  # the client's message handler while a cell runs

    def send(self, stream, msg_or_type, content=None, parent=None, ident=None, buffers=None, track=False, **kw):
        msg = msg_or_type if isinstance(msg_or_type, dict) else self.msg(msg_or_type, content, parent, **kw)
        try:  # as a kernel's messages arrive: through JSON
            msg["content"] = self.unpack(self.pack(msg["content"]))
        except (TypeError, ValueError):
            pass
        if self.receive is not None:
            self.receive(msg)
        return msg


class _Stream(io.TextIOBase):
    """The step's sys.stdout or sys.stderr, as ipykernel's `OutStream`: buffered, then sent as a stream
    message when flushed (explicitly, before a display, a result or a traceback, at the end of the cell,
    and `FLUSH_INTERVAL` after a write). It also collects what was written to its file descriptor, `fd`,
    through `capture`, a descriptor of its own on the same file: the step may close `fd` (or open
    another file that takes its number) and its prints still reach the cell, as in a kernel."""

    def __init__(self, name: str, fd: int, capture: int, session: _Relay, shell: ZMQInteractiveShell):
        super().__init__()
        self.name, self._fd, self._capture, self._session, self._shell = name, fd, capture, session, shell
        self._pid = os.getpid()
        self._parts: list[str] = []
        self._since: float | None = None
        self._read_at = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._lock = threading.RLock()

    encoding = "UTF-8"
    errors = "strict"

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text)}")
        if os.getpid() != self._pid:  # a process this step forked: through the descriptor we collect
            os.write(self._capture, text.encode("utf-8", "replace"))
            return len(text)
        with self._lock:
            self._collect()
            if text:
                self._parts.append(text)
                now = time.monotonic()
                if self._since is None:
                    self._since = now
                elif now - self._since >= FLUSH_INTERVAL:
                    self.flush()
        return len(text)

    def _collect(self) -> None:
        size = os.fstat(self._capture).st_size
        if size > self._read_at:
            data = os.pread(self._capture, size - self._read_at, self._read_at)
            self._read_at += len(data)
            self._parts.append(self._decoder.decode(data))

    def flush(self) -> None:
        if os.getpid() != self._pid:
            return
        with self._lock:
            self._collect()
            text = "".join(self._parts)
            self._parts.clear()
            self._since = None
        if text:
            self._session.send(None, "stream", {"name": self.name, "text": text}, parent=self._shell.parent_header)


class _Step:
    """This process's shell and relay (made by `prepare_shell`), and what the step running in it needs."""

    shell: ZMQInteractiveShell
    session: _Relay
    failed: list[str]  # what `prepare_shell` could not import
    source: Any = None  # the user's notebook, to count cells as the user does
    marker: mmap.mmap | None = None  # shared with the helper: the cell running, if the process dies
    executed: Any = None  # the notebook papermill executes (its metadata, outputs)


_STEP = _Step()


class _Client(PapermillNotebookClient):
    """papermill's nbclient client, with the kernel's round trip replaced by the shell in this process."""

    def execute(self, **kwargs: Any) -> Any:
        self.reset_execution_trackers()
        self.papermill_execute_cells()
        self.nb.metadata["language_info"] = copy.deepcopy(IPythonKernel.language_info)
        self.set_widgets_metadata()
        return self.nb

    def execute_cell(self, cell: Any, cell_index: int, execution_count: int | None = None, store_history: bool = True):
        """nbclient's `async_execute_cell`: the same skips, timing metadata, outputs and errors."""
        if cell.cell_type != "code" or not cell.source.strip():
            return cell
        tags = cell.metadata.get("tags", [])
        if self.skip_cells_with_tag in tags:
            return cell
        if self.record_timing:
            cell["metadata"]["execution"] = {}
        self.code_cells_executed += 1
        cell.outputs = []
        self.clear_before_next_output = False
        if _STEP.marker is not None:
            _STEP.marker[:4] = struct.pack("i", failing_cell(self.nb, cell_index, _STEP.source))

        def receive(msg: dict[str, Any]) -> None:
            try:
                self.process_message(msg, cell, cell_index)
            except CellExecutionComplete:
                pass

        reply = _run_cell(cell.source, receive, store_history)
        if self.record_timing:
            cell["metadata"]["execution"]["shell.execute_reply"] = timestamp(reply)
        if execution_count:
            cell["execution_count"] = execution_count
        content = reply["content"]
        if content["status"] == "error":
            allowed = not self.force_raise_errors and (
                self.allow_errors or content.get("ename") in self.allow_error_names or "raises-exception" in tags
            )
            if not allowed:
                raise CellExecutionError.from_cell_and_msg(cell, content)
        self.nb["cells"][cell_index] = cell
        return cell


class ForkedEngine(PapermillEngine):
    """A papermill engine that executes the notebook in this process, on its IPython shell."""

    @classmethod
    def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
        _STEP.executed = nb_man.nb
        return _Client(nb_man, kernel_name=kernel_name, log=logging.getLogger("papermill")).execute()


def _run_cell(source: str, receive: Any, store_history: bool) -> dict[str, Any]:
    """Run `source` as ipykernel's `execute_request` and `do_execute` do; its messages go to `receive`."""
    shell, session = _STEP.shell, _STEP.session
    request = session.msg(
        "execute_request",
        {"code": source, "silent": False, "store_history": store_history, "user_expressions": {}, "allow_stdin": False},
    )
    shell.set_parent(request)
    session.receive = receive
    try:
        session.send(None, "status", {"execution_state": "busy"}, parent=request)
        session.send(None, "execute_input", {"code": source, "execution_count": shell.execution_count}, parent=request)
        result = shell.run_cell(source, store_history=store_history, silent=False)
        sys.stdout.flush()
        sys.stderr.flush()
        content: dict[str, Any] = {"execution_count": shell.execution_count - 1}
        if result.success and not getattr(shell, "_last_traceback_during_displayhook", False):
            content["status"] = "ok"
        else:
            err = result.error_before_exec if result.error_before_exec is not None else result.error_in_exec
            content.update(
                status="error", traceback=shell._last_traceback or [], ename=type(err).__name__, evalue=str(err)
            )
        shell.payload_manager.clear_payload()
        reply = session.msg("execute_reply", content, parent=request)
        session.send(None, "status", {"execution_state": "idle"}, parent=request)
    finally:
        session.receive = None
    return reply


def prepare_shell() -> None:
    """Warm this interpreter for forking (in the helper, once), before the workflow is known: create the
    shell, import what every step needs (`BASE_MODULES`) and run kit's own sample through it.

    The shell exists first, so that a module integrating with IPython on import (matplotlib's
    inline backend) finds it, as in a kernel.
    """
    config = Config()
    config.HistoryManager.hist_file = ":memory:"  # as nbclient starts papermill's kernels
    _STEP.shell = ZMQInteractiveShell.instance(config=config, compiler_class=XCachingCompiler)
    _STEP.session = _Relay()
    for hook in (_STEP.shell.displayhook, _STEP.shell.display_pub):
        hook.session, hook.pub_socket = _STEP.session, None
    papermill_engines.register(ENGINE_NAME, ForkedEngine)
    quiet = logging.getLogger("papermill")  # its messages are the coordinator's business, not the notebook's
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    _STEP.failed = _import_all(BASE_MODULES)
    _warm_up()


def prepare(modules: list[str]) -> list[str]:
    """Finish warming (after `prepare_shell`): import the workflow's `modules`, then freeze what is shared.

    Returns the modules that failed to import: a step importing one meets the same
    error in its own cell.
    """
    failed = _STEP.failed + _import_all(modules)
    gc.collect()
    gc.freeze()  # the collector never touches what every child shares: forks stay cheap
    return failed


def _import_all(modules: tuple[str, ...] | list[str]) -> list[str]:
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - any import error is the step's to meet
            failed.append(name)
    return failed


def _warm_up() -> None:
    """Do once here what every step would do the first time: compile nbformat's schema validators (40 ms),
    papermill's path patterns, the shell's tokenizer and cell runner. No user code: kit's own sample."""
    for minor in (4, 5):
        nbformat.validator.get_validator(version=4, version_minor=minor)
    sample = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 0"), nbformat.v4.new_code_cell("x")])
    sample.cells[0].metadata["tags"] = ["parameters"]
    sample.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "sample.ipynb")
        nbformat.write(sample, path)
        papermill.execute_notebook(path, path, parameters={"x": 1}, prepare_only=True, progress_bar=False)
    _STEP.shell.run_cell("pass", store_history=False, silent=True)
    _STEP.shell.display_formatter.format(0)  # its formatters are made on first use: here, not in every step


def serve_one(task_fd: int, done_fd: int, marker: mmap.mmap, inherited: list[int]) -> NoReturn:
    """In a process just forked from the helper: get ready, wait for a step, execute it, and exit.

    The step comes as JSON on `task_fd` (`kit.execution.fork_engine` writes it): the
    notebook, its parameters, the step's working directory and environment, where to
    write the executed notebook, the outcome and a crash report. `marker` is shared
    with the helper: the user's index of the cell running, read if this process dies.
    Once the outcome is written and what the step started killed, the process says so
    on `done_fd` (its pid) and exits. `inherited` are the helper's descriptors.
    """
    code = EXIT_CANNOT_RUN
    request: dict[str, Any] = {}
    try:
        _get_ready(inherited)
        request = json.loads(_read_all(task_fd))
        os.close(task_fd)
        _become_step(request)
        _STEP.marker = marker
        outcome = _execute(request)
        with open(request["outcome"], "w") as fh:
            json.dump(asdict(outcome), fh)
        code = 0
    except BaseException:  # noqa: BLE001 - the step could not be executed at all: the crash report says why
        import traceback

        try:
            with open(request.get("crash", os.devnull), "a") as fh:
                traceback.print_exc(file=fh)
        except OSError:
            pass
    finally:
        _kill_descendants()
        if code == 0:
            os.write(done_fd, struct.pack("i", os.getpid()))
        os._exit(code)


def _get_ready(inherited: list[int]) -> None:
    """What every step's process does first, before its step is known."""
    for fd in inherited:
        os.close(fd)
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    become_subreaper()  # what the step's processes leave behind stays ours to kill
    sys.argv = [sys.argv[0]]
    if "" not in sys.path:
        sys.path.insert(0, "")
    builtins.input = _no_input
    getpass.getpass = _no_getpass
    comm.create_comm = comm.get_comm_manager = _needs_kernel


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _become_step(request: dict[str, Any]) -> None:
    crash = open(request["crash"], "w")  # noqa: SIM115 - open for as long as the process lives
    faulthandler.enable(file=crash, all_threads=True)
    os.chdir(request["workdir"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.setdefault("MPLBACKEND", INLINE_BACKEND)
    _STEP.shell.init_environment()
    for fd, name in ((1, "stdout"), (2, "stderr")):
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), fd)
            own = os.dup(capture.fileno())  # not inherited by what the step executes
        setattr(sys, name, _Stream(name, fd, own, _STEP.session, _STEP.shell))
    if "numpy.random" in sys.modules:
        sys.modules["numpy.random"].seed()


def _execute(request: dict[str, Any]) -> NotebookOutcome:
    outcome = NotebookOutcome()
    with open(request["notebook"]) as fh:
        _STEP.source = nbformat.from_dict(json.load(fh))
    try:
        papermill.execute_notebook(
            request["notebook"],
            request["output_notebook"],
            parameters=request["parameters"],
            engine_name=ENGINE_NAME,
            kernel_name=request["kernel_name"],
            progress_bar=False,
            log_output=False,
            request_save_on_cell_execute=False,  # written once, at the end: a crash is reported by the marker
        )
    except Exception as exc:  # noqa: BLE001 - a cell's error, or the notebook could not be read or written
        describe_execution_error(outcome, exc)
        if isinstance(exc, OSError) and os.path.exists(request["output_notebook"]):
            os.unlink(request["output_notebook"])  # cut short (a full disk): no record
    executed = _STEP.executed
    if executed is not None:
        outcome.cells = cell_timings(executed)
        if outcome.error_cell is not None:
            outcome.error_cell = failing_cell(executed, outcome.error_cell, _STEP.source)
    return outcome


def become_subreaper() -> None:
    """Become the parent of the orphans of the processes below this one (Linux), so they can be found."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: orphans go to init, found by their process group
        pass


def _kill_descendants() -> None:
    """Kill every process the step started (they are ours: this process is their subreaper)."""
    pid = os.getpid()
    try:
        if not any(Path(f"/proc/{pid}/task/{t}/children").read_text().strip() for t in os.listdir(f"/proc/{pid}/task")):
            return
    except OSError:  # no /proc: ask psutil
        pass
    kill_process_tree(pid, keep_root=True)


def _no_input(prompt: str = "") -> str:
    raise StdinNotImplementedError("raw_input was called, but this frontend does not support input requests.")


def _no_getpass(prompt: str = "Password: ", stream: Any = None) -> str:
    raise StdinNotImplementedError("getpass was called, but this frontend does not support input requests.")


def _needs_kernel(*args: Any, **kwargs: Any) -> NoReturn:
    raise NeedsKernel(NEEDS_KERNEL)
