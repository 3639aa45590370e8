"""The fork engine (DESIGN section 13): each step in a fresh process, forked from a pre-imported helper.

A Jupyter kernel costs 0.7-1 s to start; a process forked from an interpreter that has
already imported what steps use costs a few milliseconds, and isolates a step as well:
nothing a step does (names, environment variables, builtins, monkeypatches, imported
modules, the processes it started) can be seen by the next, which is another process.

- The zygote (`serve`): a small helper started with ``python -c``, never forked from the
  coordinator, whose DuckDB and ZMQ threads make fork unsafe. It imports kit, IPython,
  papermill and the modules the workflow's notebooks and its own modules import (found
  statically, `workflow_imports`; pandas and pyarrow when it handles tables), creates the IPython shell
  (`kit.execution.fork_child.prepare_shell`, `prepare`), and then only forks: it never runs a step's code. A
  workflow importing modules the zygote lacks gets a new zygote (with both sets); the
  old one retires once its steps have ended.
- Its protocol: JSON lines. Requests on its stdin: first the modules to import, then ``fork``
  a step, ``retire``. Replies on its stdout: the pid of each forked step, then how that
  process ended and in which cell. EOF on its stdin (the coordinator is gone) makes it kill
  its steps and exit. A command that will run steps starts it before it has read its
  workflow (`prestart`): the helper imports IPython and papermill (most of its start) while
  the command reads the workflow and the ledger, and the first step sends the rest.
- The step's process (`kit.execution.fork_child.serve_one`) leads its own session, executes the
  notebook and writes its outcome to the spool. The coordinator registers its pid with
  `running_step`, so `cancel_running` and the `Watchdog` (a timeout: SIGINT, then SIGKILL
  of the process tree) reach it. When it ends, the zygote, its parent, kills its process
  group and, if it died, the processes it left behind (the zygote is their subreaper):
  nothing a step started outlives it.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from kit.base.deferred import defer_iri_grammar
from kit.base.stamps import stamps
from kit.execution.engines import (
    CANCELLED,
    EXIT_CANNOT_RUN,
    Engine,
    NotebookOutcome,
    StepCancelled,
    Watchdog,
    kernel_environment,
    kill_process_tree,
    running_step,
)
from kit.execution.task import StepTask
from kit.kernel.api import OBJECTS_ENV, SPOOL_ENV

ISOLATION = "process per step"

#: Files a step's process leaves in its spool for the coordinator: its outcome, and what it said if it died.
OUTCOME_FILE = ".fork-outcome.json"
CRASH_FILE = ".fork-crash.txt"

#: Seconds the zygote may take to fork a step (the first waits for its imports) before it counts as broken.
START_TIMEOUT = 120.0

_BOOT = "from kit.execution.fork_engine import serve; serve()"

_HINTS = {
    "SIGABRT": "os.abort(), or a failed assertion in native code",
    "SIGSEGV": "a crash in native code (a C extension)",
    "SIGBUS": "a crash in native code (a C extension)",
    "SIGFPE": "a crash in native code (a C extension)",
    "SIGILL": "a crash in native code (a C extension)",
    "SIGKILL": "killed from outside the step, perhaps for lack of memory",
}


class ZygoteFailed(RuntimeError):
    """The fork engine's helper could not fork the step (it died, or never became ready)."""


# ---- the coordinator's side ------------------------------------------------------------


class _Child:
    """One step's process, as the zygote reports it: its pid once forked, then how it ended."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.code: int | None = None  # exit code, or minus the signal that killed it
        self.cell: int | None = None  # the user's index of the cell that was running
        self.failure: str | None = None  # the zygote failed before reporting
        self.forked = threading.Event()
        self.ended = threading.Event()


class Zygote:
    """The helper process that forks steps, and the thread that reads its replies.

    Made with `modules` None (`prestart`), it imports what every step needs and waits for
    `begin` to say what the workflow imports besides."""

    def __init__(self, modules: frozenset[str] | None):
        self.modules: frozenset[str] | None = None
        self.retired = False
        self.failure: str | None = None
        # What it says on stderr, for `_death`: a file without a name, so nothing is left behind in the
        # temporary folder however the coordinator ends (a folder per helper was, after a kill -9 or a
        # plain exit, whose daemon thread never got to remove it)
        self._log = tempfile.TemporaryFile()
        env = {k: v for k, v in os.environ.items() if k not in ("KIT_HOME", SPOOL_ENV, OBJECTS_ENV)}
        env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # read when matplotlib loads
        self.process = subprocess.Popen(
            # -P: nothing from its working folder (the shared temporary folder) can shadow a module it imports
            [sys.executable, "-P", "-c", _BOOT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=tempfile.gettempdir(),  # not the project: a module there is no third party's to pre-import
            env=env,
            start_new_session=True,  # Ctrl-C is the coordinator's to handle (`cancel_running`)
        )
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._forking: dict[int, _Child] = {}
        self._running: dict[int, _Child] = {}
        threading.Thread(target=self._read, name="kit-zygote", daemon=True).start()
        if modules is not None:
            self.begin(modules)

    def begin(self, modules: frozenset[str]) -> None:
        """Say what to import besides what every step needs; it forks steps once it has."""
        with self._lock:
            self.modules = modules
            try:
                self._send({"op": "import", "modules": sorted(modules)})
            except (OSError, ValueError):  # it died already: `fork` says why
                pass

    def usable(self) -> bool:
        return not self.retired and self.failure is None and not self.process.stdin.closed

    def fork(self, request: dict[str, Any]) -> _Child:
        """Ask for a process executing `request`; `_Child.forked` is set once it runs."""
        child = _Child()
        with self._lock:
            if self.failure:
                raise ZygoteFailed(self.failure)
            request_id = next(self._ids)
            self._forking[request_id] = child
            try:
                self._send({"op": "fork", "id": request_id, "task": request})
            except (OSError, ValueError):  # its stdin is closed
                del self._forking[request_id]
                raise ZygoteFailed(self._death()) from None
        return child

    def retire(self) -> None:
        """Fork nothing more; the zygote exits once the steps it forked have ended."""
        with self._lock:
            self.retired = True
            try:
                self._send({"op": "retire"})
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        """End the zygote now, and the steps it runs (it kills them when its stdin closes). One never told
        what to import (`prestart`) has forked nothing: it is killed, not left to finish its imports."""
        try:
            self.process.stdin.close()
        except OSError:
            pass
        if self.modules is None:
            self.process.kill()

    def _send(self, message: dict[str, Any]) -> None:
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()

    def _read(self) -> None:
        for line in self.process.stdout:
            message = json.loads(line)
            with self._lock:
                if "pid" in message:
                    child = self._forking.pop(message["id"])
                    child.pid = message["pid"]
                    self._running[child.pid] = child
                    child.forked.set()
                elif "ended" in message:
                    child = self._running.pop(message["ended"])
                    child.code, child.cell = message["code"], message["cell"]
                    child.ended.set()
                elif "error" in message:
                    child = self._forking.pop(message["id"])
                    child.failure = f"the fork engine's helper could not fork the step: {message['error']}"
                    child.forked.set()
                    child.ended.set()
        self.process.wait()
        with self._lock:
            self.failure = self._death()
            for pid in self._running:  # the zygote died before them: they would run on unwatched
                kill_process_tree(pid)
                _kill_group(pid)
            for child in [*self._forking.values(), *self._running.values()]:
                child.failure = self.failure
                child.forked.set()
                child.ended.set()
            self._forking.clear()
            self._running.clear()

    def _death(self) -> str:
        code = self.process.poll()
        try:
            fd = self._log.fileno()
            size = os.fstat(fd).st_size
            tail = os.pread(fd, 64 << 10, max(0, size - (64 << 10))).decode(errors="replace")
            said = "\n".join(tail.splitlines()[-15:]).strip()
        except (OSError, ValueError):
            said = ""
        return (
            f"the fork engine's helper process (pid {self.process.pid}) exited"
            + (f" with code {code}" if code is not None else "")
            + (f":\n{said}" if said else "")
        )


_ZYGOTE: Zygote | None = None
_ZYGOTE_LOCK = threading.Lock()


def _fork_step(notebook: str, request: dict[str, Any]) -> _Child:
    """Fork `request` on the zygote for `notebook`, chosen and asked under one lock: another workflow's
    step cannot retire it in between (a retired zygote with nothing running exits, failing the fork)."""
    modules = workflow_imports(notebook)
    with _ZYGOTE_LOCK:
        return _choose(modules).fork(request)


def _choose(modules: frozenset[str]) -> Zygote:
    """With `_ZYGOTE_LOCK` held: the current zygote if it has `modules`, else a new one with both sets."""
    global _ZYGOTE
    current = _ZYGOTE
    if current is not None and current.usable():
        if current.modules is None:  # started ahead (`prestart`): this workflow is its first
            current.begin(modules)
            return current
        if modules <= current.modules:
            return current
        modules |= current.modules  # workflows taking turns do not restart it each time
        current.retire()
    _ZYGOTE = Zygote(modules)
    return _ZYGOTE


def prestart() -> None:
    """Start the helper now, for a command that will run steps on this engine but has not yet read its
    workflow: its imports (0.4-0.5 s) overlap the command's own start instead of following it."""
    global _ZYGOTE
    with _ZYGOTE_LOCK:
        if _ZYGOTE is None or not _ZYGOTE.usable():
            _ZYGOTE = Zygote(None)


def _close_zygote() -> None:
    if _ZYGOTE is not None:
        _ZYGOTE.close()


atexit.register(_close_zygote)


# ---- what a workflow imports -----------------------------------------------------------

_IMPORTS: dict[str, tuple[list, frozenset[str], list[Path]]] = {}


def workflow_imports(notebook: str) -> frozenset[str]:
    """What the zygote should import for `notebook`'s workflow (its `workflow.yaml`'s steps), found
    statically, never by running anything: ``import a.b`` and ``from a.b import c`` give ``a.b``.

    The workflow's own modules (a ``.py`` file or package beside a notebook) are read, not imported:
    what they import counts, they do not (the zygote never runs workflow code). pandas and pyarrow
    count when the workflow may handle tables (a ``table`` in its manifest, or a call of ``load(`` in
    its code: ``kit.load``, and erring towards warm, any other), since kit's kernel side imports them then. Nothing else is warmed on speculation: every module in
    the zygote makes every step's fork and exit dearer (pandas, pyarrow and duckdb: 5 ms a step)."""
    path = Path(notebook).resolve()
    manifest = next((d / "workflow.yaml" for d in path.parents if (d / "workflow.yaml").is_file()), None)
    notebooks, tables = _manifest_notebooks(manifest) if manifest is not None else (set(), False)
    notebooks = {p for p in {path} | notebooks if p.is_file()}
    cached = _IMPORTS.get(str(path))
    if cached is not None and cached[0] == stamps(cached[2]):
        return cached[1]
    folders = {p.parent for p in notebooks}
    found: set[str] = set()
    sources = [_notebook_cells(nb) for nb in notebooks]  # each a list of code chunks that parse alone
    read: set[Path] = set()
    while sources:
        chunks = sources.pop()
        tables = tables or any("load(" in chunk for chunk in chunks)
        for name in _imports(chunks):
            top = name.split(".")[0]
            own = [f / f"{top}.py" for f in folders if (f / f"{top}.py").is_file()]
            own += [p for f in folders if (f / top).is_dir() for p in sorted((f / top).rglob("*.py"))]
            if not own and not any((f / top).exists() for f in folders):
                found.add(name)
            for module in own:  # the workflow's own code: read what it imports, never import it
                if module not in read:
                    read.add(module)
                    sources.append([_read_text(module)])
    found.discard("__future__")
    if tables:
        found.update(TABLE_MODULES)
    result = frozenset(found)
    files = sorted({*notebooks, *read, *([manifest] if manifest is not None else [])})
    _IMPORTS[str(path)] = (stamps(files), result, files)
    return result


#: What kit's kernel side imports to read or write a table (`kit.load`, `kit.output` of a DataFrame).
TABLE_MODULES = ("pandas", "pyarrow", "pyarrow.parquet")

_MANIFESTS: dict[Path, tuple[Any, set[Path], bool]] = {}


def _manifest_notebooks(manifest: Path) -> tuple[set[Path], bool]:
    """The notebooks a `workflow.yaml` names, and whether it declares a table; read again only when it changes."""
    import yaml

    try:
        stamp = stamps([manifest])[0]
        cached = _MANIFESTS.get(manifest)
        if cached is not None and cached[0] == stamp:
            return cached[1], cached[2]
        spec = yaml.safe_load(manifest.read_text()) or {}
        steps = spec.get("steps") or {}
        names = [s.get("notebook") for s in steps.values() if isinstance(s, dict)]
    except (OSError, yaml.YAMLError, AttributeError):
        return set(), False
    found = {(manifest.parent / n).resolve() for n in names if isinstance(n, str)}
    tables = _declares_table(spec)
    _MANIFESTS[manifest] = (stamp, found, tables)
    return found, tables


def _declares_table(node: Any) -> bool:
    """Whether a manifest names the type ``table`` anywhere (an output, a parameter)."""
    if isinstance(node, dict):
        return any(_declares_table(v) for v in node.values())
    if isinstance(node, list):
        return any(_declares_table(v) for v in node)
    return node == "table"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _notebook_cells(notebook: Path) -> list[str]:
    """A notebook's Python code cells: cell magics' cells left out, line magics and shell escapes dropped."""
    try:
        cells = json.loads(notebook.read_text()).get("cells", [])
    except (OSError, ValueError):
        return []
    parts = []
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        if source.lstrip().startswith("%%"):
            continue
        lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
        parts.append("\n".join(lines))
    return parts


def _imports(chunks: list[str]) -> set[str]:
    """The absolute imports anywhere in each chunk of code (one that does not parse gives none)."""
    import ast

    names: set[str] = set()
    for chunk in chunks:
        try:
            tree = ast.parse(chunk)
        except (SyntaxError, ValueError, RecursionError, MemoryError):  # the step's own cell meets it, and says so
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
    return names


# ---- the engine ------------------------------------------------------------------------


def run_fork(task: StepTask) -> NotebookOutcome:
    """Execute the step in a process forked from the zygote; its outcome is what that process wrote."""
    outcome_path = os.path.join(task.spool, OUTCOME_FILE)
    crash_path = os.path.join(task.spool, CRASH_FILE)
    request = {
        "notebook": task.notebook,
        "output_notebook": task.output_notebook,
        "parameters": task.parameters,
        "kernel_name": task.kernel_name,
        "workdir": task.workdir,
        "env": kernel_environment(task),
        "outcome": outcome_path,
        "crash": crash_path,
    }
    child: _Child | None = None
    failure = None
    with running_step(task.run_id) as step, Watchdog(task.timeout, step, what="process") as watchdog:
        try:
            child = _fork_step(task.notebook, request)
            if not child.forked.wait(START_TIMEOUT):
                raise ZygoteFailed(f"the fork engine's helper did not fork the step in {START_TIMEOUT:g}s")
            if child.failure:
                raise ZygoteFailed(child.failure)
            step.kernel_started(child.pid)
            child.ended.wait()
        except StepCancelled:
            child.ended.wait(10)
        except ZygoteFailed as exc:
            failure = str(exc)
    if step.cancelled:
        return NotebookOutcome(
            error_type=CANCELLED,
            error_message="the step was cancelled: its process and the processes it started were killed",
        )
    outcome = _read_outcome(outcome_path)
    if outcome is None:
        if failure or child is None or child.failure:
            outcome = NotebookOutcome(error_type="EngineError", error_message=failure or child.failure)
        else:
            outcome = _died(task, child, crash_path)
    if watchdog.fired:
        outcome.error_type = "Timeout"
        outcome.error_message = watchdog.message()
    return outcome


def _read_outcome(path: str) -> NotebookOutcome | None:
    try:
        with open(path) as fh:
            return NotebookOutcome(**json.load(fh))
    except (OSError, ValueError, TypeError):
        return None


def _died(task: StepTask, child: _Child, crash_path: str) -> NotebookOutcome:
    """The outcome of a step whose process ended without writing one: how, in which cell, what it said."""
    try:
        with open(crash_path, errors="replace") as fh:
            said = fh.read().strip() or None
    except OSError:
        said = None
    code = child.code or 0
    if code == EXIT_CANNOT_RUN:
        last = said.splitlines()[-1] if said else "no reason given"
        return NotebookOutcome(
            error_type="EngineError", error_message=f"the step's process could not execute it: {last}", traceback=said
        )
    if code < 0:
        name = signal.Signals(-code).name
        how = f"was killed by {name}" + (f" ({_HINTS[name]})" if name in _HINTS else "")
    elif code == 0:
        how = "ended without leaving its outcome"
    else:
        how = f"exited with code {code} (os._exit, or sys.exit from native code)"
    where = f" in cell {child.cell}" if child.cell is not None else ""
    outcome = NotebookOutcome(
        error_type="ProcessDied",
        error_message=f"the step's process {how}{where}, before it finished its notebook; "
        "the processes it started were killed",
        error_cell=child.cell,
        traceback=said,
    )
    if child.cell is not None:
        try:
            with open(task.notebook) as fh:
                source = json.load(fh)["cells"][child.cell]["source"]
            outcome.error_source = "".join(source) if isinstance(source, list) else source
        except (OSError, ValueError, KeyError, IndexError):
            pass
    return outcome


FORK = Engine("fork", ISOLATION, run_fork)


# ---- the zygote's side -----------------------------------------------------------------


def serve() -> None:
    """The zygote's main: import, keep a spare process forked, hand each step to it, report how it ended.

    Its stdin and stdout carry the protocol; they are moved off descriptors 0 and 1 first,
    so that nothing an import prints can garble a reply.
    """
    requests, replies = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(2, 1)
    os.close(null)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]
    defer_iri_grammar()
    _papermill_without_remote_storage()

    from kit.execution import fork_child as forked

    forked.prepare_shell()
    line, pending = _read_line(requests)
    if not line:  # the coordinator is gone (it ended before running a step)
        os._exit(0)
    failed = forked.prepare(json.loads(line)["modules"])
    forked.become_subreaper()  # the processes a dead step left behind become ours to kill
    _Server(forked, requests, replies).serve(failed, pending)


def _read_line(fd: int) -> tuple[bytes, bytes]:
    """The first line on `fd` (empty at EOF), and what came after it in the same reads."""
    data = b""
    while b"\n" not in data:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"", b""
        data += chunk
    line, rest = data.split(b"\n", 1)
    return line, rest


#: papermill's handlers for notebooks kept elsewhere than on disk, which the step's process never needs
#: (kit hands it local paths), and what they import: boto3 (S3) and pyarrow (HDFS).
_REMOTE_STORAGE = ("papermill.s3", "pyarrow.fs")


def _papermill_without_remote_storage() -> None:
    """Import papermill as if boto3 and pyarrow.fs were missing (papermill then leaves S3 and HDFS out),
    so that the zygote does not carry them: 48 MB fewer to fork, 2-3 ms a step. A workflow that uses
    pyarrow (`workflow_imports`) still gets it, imported afterwards as usual."""
    blocked = [name for name in _REMOTE_STORAGE if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # an import of it raises ImportError, as if it were not installed
    try:
        import papermill.iorw  # noqa: F401
    finally:
        for name in blocked:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


class _Server:
    """The zygote's loop. Single-threaded: it waits on its requests, on its steps saying they are done, and
    on SIGCHLD (through a wakeup pipe). A spare process, forked ahead of need, waits for the next step, so a
    step does not wait for a fork; a step's process says when it is done (and has killed what it started),
    so a step does not wait for its process's memory to be torn down either."""

    def __init__(self, forked: Any, requests: int, replies: int):
        self.forked, self.requests, self.replies = forked, requests, replies
        self.done_r, self.done_w = os.pipe()
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w, self.done_r):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.steps: dict[int, Any] = {}  # pid -> the marker it shares: the cell it runs
        self.spare: tuple[int, int, Any] | None = None  # pid, the pipe its step comes on, its marker
        self.retiring = False

    def serve(self, failed: list[str], pending: bytes) -> None:
        """Serve until retired with no steps left, or the coordinator is gone; `pending` came with the modules."""
        self.spare = self._fork_spare()
        self._reply({"ready": True, "failed": failed})
        while True:
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                message = json.loads(line)
                if message["op"] == "fork":
                    self._start(message)
                elif message["op"] == "retire":
                    self.retiring = True
            if self.retiring and not self.steps:
                break
            readable, _, _ = select.select([self.requests, self.done_r, self.wake_r], [], [])
            if self.wake_r in readable:
                _drain(self.wake_r)
            if self.done_r in readable:
                self._done(_drain(self.done_r))
            self._reap()
            if self.requests in readable:
                data = os.read(self.requests, 1 << 16)
                if not data:  # the coordinator is gone: so are its steps
                    break
                pending += data
        for pid in [*self.steps, *([self.spare[0]] if self.spare else [])]:
            kill_process_tree(pid)
            _kill_group(pid)
        os._exit(0)

    def _reply(self, message: dict[str, Any]) -> None:
        os.write(self.replies, json.dumps(message).encode() + b"\n")

    def _fork_spare(self) -> tuple[int, int, Any] | None:
        import mmap
        import struct

        task_r, task_w = os.pipe()
        marker = mmap.mmap(-1, 4)
        marker[:4] = struct.pack("i", -1)
        try:
            pid = os.fork()
        except OSError:
            os.close(task_r)
            os.close(task_w)
            return None
        if pid == 0:
            os.setsid()  # its own session and process group: killed as one
            inherited = [self.requests, self.replies, self.wake_r, self.wake_w, self.done_r, task_w]
            self.forked.serve_one(task_r, self.done_w, marker, inherited)
        os.close(task_r)
        return pid, task_w, marker

    def _start(self, message: dict[str, Any]) -> None:
        """Hand the step to the spare (forking one if it is missing or died), then fork the next spare."""
        data = json.dumps(message["task"]).encode()
        for _ in range(2):
            spare, self.spare = self.spare or self._fork_spare(), None
            if spare is None:
                break
            pid, task_w, marker = spare
            try:
                _write_all(task_w, data)
            except OSError:  # it died meanwhile
                continue
            finally:
                os.close(task_w)
            self.steps[pid] = marker
            self._reply({"id": message["id"], "pid": pid})
            self.spare = self._fork_spare()
            return
        self._reply({"id": message["id"], "error": "could not fork a process for the step"})

    def _done(self, data: bytes) -> None:
        """Steps that said they are done: end their process groups, and report them ended."""
        import struct

        for (pid,) in struct.iter_unpack("i", data[: len(data) - len(data) % 4]):
            if pid in self.steps:
                self._ended(pid, 0)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.spare and pid == self.spare[0]:  # it died waiting: the next step gets another
                os.close(self.spare[1])
                self.spare[2].close()
                self.spare = None
            elif pid in self.steps:  # it died before it was done
                self._ended(pid, os.waitstatus_to_exitcode(status))

    def _ended(self, pid: int, code: int) -> None:
        """Kill the step's process group and, if it died, what it left behind; then report it."""
        import struct

        marker = self.steps.pop(pid)
        cell = struct.unpack("i", marker[:4])[0]
        marker.close()
        _kill_group(pid)
        if code != 0:
            _kill_orphans(set(self.steps) | ({self.spare[0]} if self.spare else set()))
        self._reply({"ended": pid, "code": code, "cell": cell if cell >= 0 else None})


def _drain(fd: int) -> bytes:
    chunks = []
    try:
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:  # no such group left
        pass


def _kill_orphans(keep: set[int]) -> None:
    """Kill the processes a dead step left behind: the zygote's children it does not know."""
    import psutil

    for process in psutil.Process().children():
        if process.pid not in keep:
            kill_process_tree(process.pid)
