"""The Dask executor: step tasks on a dask.distributed cluster (DESIGN section 13).

``--executor dask --scheduler ADDRESS`` (or ``KIT_DASK_SCHEDULER``) runs each step on a
Dask worker through the same pure function as the local executor
(`kit.execution.step.execute_step`); the coordinator still alone writes the ledger.

- **Nothing shared but the scheduler.** A step task travels with its bundle by digest:
  the bundle's files (read from the coordinator's object store, re-hashed) are
  scattered once per bundle id (key ``kit-bundle-<id>``); a worker re-hashes them,
  writes them under its own local directory once per bundle id and runs the step
  there, paths rewritten. Files a step reads outside its bundle (components taken from
  a store, LLM recordings) travel the same way as content-addressed trees, and upstream
  tables as objects by digest. The worker sends back the step result, the executed
  notebook's bytes and the bytes of every object the result refers to; the coordinator
  checks each object's digest as it stores it.
- **Keys** are ``RUN/STEP/ATTEMPT`` (run ids are unique, so concurrent runs never
  collide); a resubmission after a lost worker adds ``/infra-N``.
- **Bounded.** At most ``KIT_DASK_MAX_IN_FLIGHT`` step tasks (default twice the cluster's
  threads, at least 4) are submitted at once per coordinating process; the rest wait
  in the coordinator, so the scheduler never holds thousands of queued tasks.
- **Three kinds of failure stay apart.** A step's own error comes back as a failed
  `StepResult` and is retried as the manifest says. A lost worker (the scheduler's
  ``remove-worker`` event naming the task, `KilledWorker`, lost scattered data) is an
  infrastructure fault: the task runs again (Dask reschedules it, or kit resubmits it)
  at the same attempt number, so it never counts against ``retries.attempts``; each
  fault is recorded as a span of kind ``infra`` under the step's attempt. After
  ``INFRA_RETRIES`` faults on one step, or when the scheduler itself is gone, the task
  fails with `InfrastructureError`: the coordinator ends the run ``failed``, resumable
  with ``kit resume`` once the cluster is back.
- **Engines on a worker.** kit's engines start their processes with `subprocess` (the
  fork engine's zygote, papermill's kernels), never `multiprocessing`, so they work in
  Dask's daemonic, nanny-started worker processes; papermill runs in a worker thread as
  it does in the local executor's threads.

`connect` checks, before anything runs, that the scheduler answers (else exit 2) and
that every worker can import kit (else exit 2, naming the workers). dask is imported
only here, and only when this executor is used: the CLI starts without it.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import os
import shutil
import sys
import threading
import uuid
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from kit.base.clock import new_span_id, utcnow
from kit.base.digests import digest, sha256_bytes, sha256_file
from kit.errors import InvalidInput, KitError
from kit.execution.task import StepResult, StepTask
from kit.kernel.api import ARTIFACT_PREFIX, COMPONENTS_ENV
from kit.kernel.calls import RECORDINGS_ENV
from kit.ledger.objects import ObjectStore, digest_of

NAME = "dask"
SCHEDULER_ENV = "KIT_DASK_SCHEDULER"
MAX_IN_FLIGHT_ENV = "KIT_DASK_MAX_IN_FLIGHT"
INFRA_RETRIES_ENV = "KIT_DASK_INFRA_RETRIES"
CONNECT_TIMEOUT_ENV = "KIT_DASK_CONNECT_TIMEOUT"

#: Infrastructure faults one step may meet (workers lost while running it) before the run fails.
INFRA_RETRIES = 3
#: Seconds to reach the scheduler, and to wait for its first worker.
CONNECT_TIMEOUT = 10.0
#: Bundles (and trees) kept scattered on the cluster per process, the most recently shipped.
KEEP_SCATTERED = 64
#: The span kind of an infrastructure fault, under the step attempt it interrupted.
INFRA_KIND = "infra"
#: Why Dask cancels a future when the client lost its scheduler.
_SCHEDULER_LOST = "scheduler-connection-lost"


class InfrastructureError(KitError):
    """The cluster failed a step (its scheduler is gone, or its workers kept dying): the run ends failed,
    resumable (exit 1)."""


def scheduler_address(given: str | None) -> str:
    """The scheduler to use: ``--scheduler``, else ``KIT_DASK_SCHEDULER``; refused (exit 2) when neither says."""
    address = given or os.environ.get(SCHEDULER_ENV)
    if not address:
        raise InvalidInput(f"--executor dask needs a scheduler: pass --scheduler ADDRESS or set {SCHEDULER_ENV}")
    return address


def _env_number(name: str, default: float, kind=float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise InvalidInput(f"{name}={raw!r}: expected a number") from None
    if value <= 0:
        raise InvalidInput(f"{name}={raw!r}: expected a number above 0")
    return value


# ---- the coordinator's side ------------------------------------------------------------------


_SESSIONS: dict[str, _Session] = {}
_SESSIONS_LOCK = threading.Lock()


def connect(
    address: str | None = None, timeout: float | None = None, max_in_flight: int | None = None
) -> DaskExecutorFactory:
    """An executor factory for `Coordinator(executor_factory=...)`, connected to the scheduler at `address`
    (else ``KIT_DASK_SCHEDULER``). Raises InvalidInput (exit 2), before anything runs, when the scheduler
    does not answer, has no worker, or a worker cannot import kit. One connection per address and process."""
    address = scheduler_address(address)
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(address)
        if session is None or session.client.status in ("closing", "closed"):
            timeout = timeout or _env_number(CONNECT_TIMEOUT_ENV, CONNECT_TIMEOUT)
            session = _Session.open(address, timeout)
            _SESSIONS[address] = session
        if max_in_flight is not None:
            session.max_in_flight = max(1, max_in_flight)
    return DaskExecutorFactory(session)


def disconnect(address: str) -> None:
    """Close this process's connection to `address`, if any (before the cluster itself goes away)."""
    with _SESSIONS_LOCK:
        session = _SESSIONS.pop(address, None)
    if session is not None:
        session.close()


class DaskExecutorFactory:
    """What the coordinator calls for each run's executor; `name` goes into the run record."""

    name = NAME

    def __init__(self, session: _Session):
        self.session = session

    @property
    def address(self) -> str:
        return self.session.address

    def __call__(self, workers: int) -> DaskExecutor:  # workers: the cluster decides, not --workers
        return DaskExecutor(self.session)


class DaskExecutor:
    """One run's executor: its tasks go through the process's session with the scheduler."""

    name = NAME

    def __init__(self, session: _Session):
        self.session = session
        self.flights: list[_Flight] = []

    def submit(self, task: StepTask) -> Future:
        flight = _Flight(task)
        self.flights.append(flight)
        self.session.enqueue(flight)
        return flight.outcome

    def shutdown(self) -> None:
        """The run is over: whatever of it is still queued or running on the cluster is cancelled."""
        for flight in self.flights:
            if not flight.outcome.done():
                self.session.cancel(flight)
        self.flights.clear()


@dataclasses.dataclass
class _Flight:
    """A step task on its way: its current Dask future and key, the faults it met, what it holds."""

    task: StepTask
    outcome: Future = dataclasses.field(default_factory=Future)
    key: str = ""
    future: Any = None
    submitted_at: str = ""
    faults: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    faulted_keys: set[str] = dataclasses.field(default_factory=set)
    held: list[Any] = dataclasses.field(default_factory=list)  # scattered inputs, released at the end
    cancelled: bool = False
    resubmissions: int = 0

    @property
    def base_key(self) -> str:
        return f"{self.task.run_id}/{self.task.step_id}/{self.task.attempt}"


class _Session:
    """The process's connection to one scheduler: the client, what it scattered, the tasks in flight."""

    def __init__(self, address: str, client: Any, max_in_flight: int, infra_retries: int):
        self.address = address
        self.client = client
        self.max_in_flight = max_in_flight
        self.infra_retries = infra_retries
        self.lock = threading.RLock()
        self.queue: deque[_Flight] = deque()
        self.in_flight: dict[str, _Flight] = {}  # by current key
        self.bundles: dict[str, Any] = {}  # bundle id -> scattered future
        self.trees: dict[str, tuple[tuple, str, Any]] = {}  # path -> (signature, tree id, scattered future)
        self.peak_in_flight = 0

    @classmethod
    def open(cls, address: str, timeout: float) -> _Session:
        from distributed import Client

        if not os.environ.get("KIT_DEBUG"):  # kit says what went wrong with the cluster; Dask's logs: KIT_DEBUG=1
            _quiet_dask_logs()
        try:
            client = Client(address, timeout=f"{timeout}s", set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise InvalidInput(f"--scheduler {address}: cannot reach the Dask scheduler ({exc}); nothing was started")
        except ValueError as exc:
            raise InvalidInput(f"--scheduler {address}: not a scheduler address ({exc})") from None
        try:
            threads = _check_workers(client, address, timeout)
        except BaseException:
            client.close()
            raise
        limit = int(_env_number(MAX_IN_FLIGHT_ENV, max(4, 2 * threads), int))
        retries = int(_env_number(INFRA_RETRIES_ENV, INFRA_RETRIES, int))
        session = cls(address, client, limit, retries)
        client.subscribe_topic("all", session._on_event)
        atexit.register(session.close)
        return session

    def close(self) -> None:
        """Leave the scheduler politely (at exit): unsubscribed first, so it has nothing more to send us."""
        try:
            self.client.unsubscribe_topic("all")
            self.client.close(timeout=5)
        except Exception:  # noqa: BLE001 - a scheduler already gone
            pass

    # ---- shipping: bundles, trees, objects ---------------------------------------------------

    def _bundle(self, task: StepTask) -> tuple[str, Any]:
        """The scattered bundle of `task` (once per bundle id; again if a lost worker took it)."""
        lock, root = task.bundle["lock"], Path(task.bundle["root"])
        bundle_id = lock["bundle_id"]
        with self.lock:
            future = self.bundles.pop(bundle_id, None)  # put back last: the most recently used are kept
            if future is not None:
                self.bundles[bundle_id] = future
        if future is not None and future.status == "finished":
            return bundle_id, future
        store = ObjectStore(task.objects)
        data = {}
        for key, file_digest in lock["files"].items():
            data[file_digest] = _file_bytes(store, file_digest, root / key, f"bundle {bundle_id[:12]} (file {key})")
        blob = {"kind": "bundle", "id": bundle_id, "lock": lock, "data": data}
        future = self.client.scatter({f"kit-bundle-{bundle_id}": blob}, hash=False)[f"kit-bundle-{bundle_id}"]
        with self.lock:
            self.bundles[bundle_id] = future
            _forget_oldest(self.bundles, KEEP_SCATTERED)
        return bundle_id, future

    def _tree(self, path: Path) -> tuple[str, Any]:
        """A file or folder outside the bundle (a store component, recordings), scattered by content."""
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        signature = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
        with self.lock:
            known = self.trees.pop(str(path), None)
            if known is not None:
                self.trees[str(path)] = known
        if known is not None and known[0] == signature and known[2].status == "finished":
            return known[1], known[2]
        base = path if path.is_dir() else path.parent
        listing = {p.relative_to(base).as_posix(): sha256_file(p) for p in files}
        data = {d: _file_bytes(None, d, base / rel, str(base / rel)) for rel, d in listing.items()}
        tree_id = digest(listing)
        blob = {"kind": "tree", "id": tree_id, "files": listing, "data": data}
        future = self.client.scatter({f"kit-tree-{tree_id}": blob}, hash=False)[f"kit-tree-{tree_id}"]
        with self.lock:
            self.trees[str(path)] = (signature, tree_id, future)
            _forget_oldest(self.trees, KEEP_SCATTERED)
        return tree_id, future

    def _shipment(self, flight: _Flight) -> tuple[StepTask, list, dict, dict]:
        """What goes to the worker: the task without its coordinator-side bundle, the path map (coordinator
        path -> blob id and the path inside it), the scattered blobs, and the input objects."""
        task = flight.task
        if not task.bundle:
            raise InvalidInput(
                f"step {task.step_id}: the task names no bundle; the Dask executor ships steps by bundle"
            )
        root = Path(task.bundle["root"]).resolve()
        bundle_id, bundle_future = self._bundle(task)
        blobs = {bundle_id: bundle_future}
        mapping = [(str(root), bundle_id, "")]
        for outside in _paths_outside(task, root):
            tree_id, future = self._tree(outside)
            blobs[tree_id] = future
            mapping.append((str(outside), tree_id, "" if outside.is_dir() else outside.name))
        store = ObjectStore(task.objects)
        inputs = {}
        for ref in sorted(_artifact_refs(task.parameters)):
            d = digest_of(ref)
            key = f"kit-object-{d}"
            inputs[d] = self.client.scatter({key: store.read_bytes(d)}, hash=False)[key]
        flight.held = list(inputs.values())
        return dataclasses.replace(task, bundle=None), mapping, blobs, inputs

    # ---- submitting --------------------------------------------------------------------------

    def enqueue(self, flight: _Flight) -> None:
        with self.lock:
            self.queue.append(flight)
        self._pump()

    def _pump(self) -> None:
        """Launch queued tasks while fewer than `max_in_flight` are on the cluster."""
        while True:
            with self.lock:
                if not self.queue or len(self.in_flight) >= self.max_in_flight:
                    return
                flight = self.queue.popleft()
                if flight.cancelled:
                    continue
                flight.key = flight.base_key
                self.in_flight[flight.key] = flight
                self.peak_in_flight = max(self.peak_in_flight, len(self.in_flight))
            self._launch(flight)

    def _launch(self, flight: _Flight) -> None:
        try:
            task, mapping, blobs, inputs = self._shipment(flight)
            flight.submitted_at = utcnow()
            flight.future = self.client.submit(
                run_on_worker, task, mapping, blobs, inputs, key=flight.key, pure=False, retries=0
            )
        except KitError as exc:
            self._end(flight, error=exc)
            return
        except Exception as exc:  # noqa: BLE001 - the cluster refused the task: the scheduler is gone, say
            self._end(flight, error=self._infrastructure(flight, exc))
            return
        flight.future.add_done_callback(lambda future, flight=flight: self._done(flight, future))

    def cancel(self, flight: _Flight) -> None:
        flight.cancelled = True
        future = flight.future
        if future is not None:
            try:
                future.cancel(reason="the run ended")
            except Exception:  # noqa: BLE001 - a lost scheduler cancels it anyway
                pass
        self._end(flight, cancel=True)

    # ---- results and faults --------------------------------------------------------------------

    def _on_event(self, event: tuple[float, dict]) -> None:
        """The scheduler removed a worker: each of our tasks it was running is an infrastructure fault."""
        _, msg = event
        if not isinstance(msg, dict) or msg.get("action") != "remove-worker":
            return
        worker = msg.get("worker", "?")
        with self.lock:
            for key in msg.get("processing-tasks") or ():
                flight = self.in_flight.get(key)
                if flight is not None:
                    self._fault(flight, key, f"worker {worker} was lost while running the step", worker)

    def _fault(self, flight: _Flight, key: str, reason: str, worker: str | None = None) -> None:
        if key in flight.faulted_keys:
            return
        flight.faulted_keys.add(key)
        moment = utcnow()
        flight.faults.append(
            {
                "span_id": new_span_id(),
                "parent_id": None,
                "name": "infrastructure fault",
                "kind": INFRA_KIND,
                "started_at": flight.submitted_at or moment,
                "ended_at": moment,
                "status": "error",
                "attributes": {
                    "kit.executor": NAME,
                    "kit.infra.reason": reason,
                    "kit.infra.key": key,
                    **({"kit.infra.worker": worker} if worker else {}),
                },
            }
        )

    def _done(self, flight: _Flight, future: Any) -> None:
        if flight.cancelled or flight.outcome.done():
            return
        try:
            payload = future.result()
        except BaseException as exc:  # noqa: BLE001 - sorted below: infrastructure, or the step's code path
            self._failed(flight, future, exc)
            return
        try:
            result = _ingest(flight.task, payload)
        except Exception as exc:  # noqa: BLE001 - a full disk on the coordinator, say: the run's fault path
            self._end(flight, error=exc)
            return
        result.spans.extend(flight.faults)
        if flight.faults:
            result.warnings.append(
                f"{len(flight.faults)} infrastructure fault(s) on Dask, the step ran again "
                "(not counted as an attempt): " + "; ".join(f["attributes"]["kit.infra.reason"] for f in flight.faults)
            )
        self._end(flight, result=result)

    def _failed(self, flight: _Flight, future: Any, exc: BaseException) -> None:
        from distributed.client import FutureCancelledError

        with self.lock:
            faulted = flight.key in flight.faulted_keys
        lost = _is_lost_worker(exc) or (isinstance(exc, FutureCancelledError) and exc.reason != _SCHEDULER_LOST)
        if not lost:
            self._end(flight, error=self._infrastructure(flight, exc))
            return
        if not faulted:
            with self.lock:
                self._fault(flight, flight.key, _describe(exc))
        if len(flight.faults) > self.infra_retries:
            reasons = "; ".join(f["attributes"]["kit.infra.reason"] for f in flight.faults)
            self._end(
                flight,
                error=InfrastructureError(
                    f"step {flight.task.step_id}: {len(flight.faults)} infrastructure faults on the Dask cluster at "
                    f"{self.address} ({reasons}); the run is resumable: `kit resume {flight.task.run_id}`"
                ),
            )
            return
        with self.lock:  # the same attempt again, under a new key (the old one may linger on the scheduler)
            self.in_flight.pop(flight.key, None)
            flight.resubmissions += 1
            flight.key = f"{flight.base_key}/infra-{flight.resubmissions}"
            self.in_flight[flight.key] = flight
        self._launch(flight)

    def _infrastructure(self, flight: _Flight, exc: BaseException) -> BaseException:
        """What a failed Dask future means for the run: the scheduler gone, a worker without kit, or an
        error of kit's own code on the worker (kept as it is, as the local executor would raise it)."""
        from distributed.client import FutureCancelledError

        if isinstance(exc, FutureCancelledError) or isinstance(exc, (OSError, TimeoutError)):
            return InfrastructureError(
                f"the Dask scheduler at {self.address} went away while step {flight.task.step_id} was running "
                f"({_describe(exc)}); the run is resumable once it is back: `kit resume {flight.task.run_id} "
                f"--executor dask --scheduler {self.address}`"
            )
        if isinstance(exc, ImportError) and "kit" in str(exc):
            return InfrastructureError(
                f"a Dask worker of {self.address} cannot import kit ({exc}): install kit, the same version as here, "
                "on every worker"
            )
        return exc

    def _end(
        self,
        flight: _Flight,
        result: StepResult | None = None,
        error: BaseException | None = None,
        cancel: bool = False,
    ) -> None:
        with self.lock:
            if self.in_flight.get(flight.key) is flight:
                del self.in_flight[flight.key]
            if flight in self.queue:
                self.queue.remove(flight)
            flight.held = []
            flight.future = None
        if not flight.outcome.done():
            if cancel:
                flight.outcome.cancel()
            elif error is not None:
                flight.outcome.set_exception(error)
            else:
                flight.outcome.set_result(result)
        if not cancel:
            self._pump()


def _quiet_dask_logs() -> None:
    """Silence the handlers Dask's logging config put on its loggers (in this, the coordinating process)."""
    for name in ["distributed", *logging.root.manager.loggerDict]:
        if name == "distributed" or name.startswith("distributed."):
            for handler in logging.getLogger(name).handlers:
                handler.setLevel(logging.CRITICAL + 1)


def _forget_oldest(scattered: dict, keep: int) -> None:
    """Release the oldest scattered blobs past `keep` (a task that needs one still holds it on the cluster)."""
    while len(scattered) > keep:
        scattered.pop(next(iter(scattered)))


def _check_workers(client: Any, address: str, timeout: float) -> int:
    """Every worker imports kit (else InvalidInput naming them); warn of another kit version. The threads."""
    from kit.base.version import __version__ as kit_version

    try:
        client.wait_for_workers(1, timeout=timeout)
    except (TimeoutError, OSError):
        raise InvalidInput(
            f"--scheduler {address}: the scheduler has no workers (waited {timeout:g}s); start some, "
            "e.g. `dask worker " + address + "`; nothing was started"
        ) from None
    versions = client.run(eval, "__import__('kit').__version__", on_error="return")
    broken = {w: v for w, v in versions.items() if isinstance(v, BaseException)}
    if broken:
        lines = "; ".join(f"{w}: {type(v).__name__}: {v}" for w, v in sorted(broken.items()))
        raise InvalidInput(
            f"--scheduler {address}: {len(broken)} Dask worker(s) cannot import kit ({lines}); install kit, "
            f"version {kit_version}, on every worker; nothing was started"
        )
    others = {w: v for w, v in versions.items() if v != kit_version}
    if others:
        shown = ", ".join(f"{w} has {v}" for w, v in sorted(others.items()))
        print(f"warning: Dask workers run another kit version than {kit_version}: {shown}", file=sys.stderr)
    return sum(client.nthreads().values()) or 1


def _file_bytes(store: ObjectStore | None, file_digest: str, path: Path, what: str) -> bytes:
    """A file's bytes by digest: from the object store (re-hashed there), else from disk, checked."""
    from kit.ledger.objects import MissingObject

    if store is not None:
        try:
            return store.read_bytes(file_digest)
        except MissingObject:
            pass
    data = path.read_bytes()
    if sha256_bytes(data) != file_digest:
        raise InvalidInput(f"{what}: {path} changed since the run started (sha256 no longer {file_digest[:12]})")
    return data


def _artifact_refs(value: Any) -> set[str]:
    if isinstance(value, str):
        return {value} if value.startswith(ARTIFACT_PREFIX) else set()
    if isinstance(value, dict):
        return set().union(*(_artifact_refs(v) for v in value.values())) if value else set()
    if isinstance(value, (list, tuple)):
        return set().union(*(_artifact_refs(v) for v in value)) if value else set()
    return set()


def _paths_outside(task: StepTask, root: Path) -> list[Path]:
    """Files and folders the step's environment names outside its bundle: they travel as trees."""
    found = []
    raw = task.env.get(COMPONENTS_ENV)
    if raw:
        for where in json.loads(raw).values():
            path = Path(where).resolve()
            if not path.is_relative_to(root) and path.exists():
                found.append(path)
    recordings = task.env.get(RECORDINGS_ENV)
    if recordings and Path(recordings).is_file() and not Path(recordings).resolve().is_relative_to(root):
        found.append(Path(recordings).resolve())
    return sorted(set(found))


def _is_lost_worker(exc: BaseException) -> bool:
    from distributed.scheduler import KilledWorker

    return isinstance(exc, KilledWorker)


def _describe(exc: BaseException) -> str:
    from distributed.scheduler import KilledWorker

    if isinstance(exc, KilledWorker):
        return f"the workers running it kept dying (last {getattr(exc.last_worker, 'address', '?')})"
    reason = getattr(exc, "reason", None)
    if reason:
        return f"Dask cancelled it: {reason}"
    return f"{type(exc).__name__}: {exc}"


def _ingest(task: StepTask, payload: dict[str, Any]) -> StepResult:
    """A worker's answer into the coordinator's object store and run folder: every object re-hashed against
    the digest it came under, the executed notebook kept where the local executor would keep it."""
    result: StepResult = payload["result"]
    objects: dict[str, bytes] = payload["objects"]
    store = ObjectStore(task.objects)
    problems = []
    for ref in _result_refs(result):
        d = digest_of(ref)
        data = objects.get(d)
        if data is None:
            problems.append(f"object sha256:{d} did not come back from worker {payload.get('worker')}")
        elif sha256_bytes(data) != d:
            problems.append(
                f"object sha256:{d} from worker {payload.get('worker')} is corrupt: its bytes hash to "
                f"sha256:{sha256_bytes(data)}"
            )
        else:
            store.put_bytes(data)
    notebook = payload.get("notebook")
    result.executed_notebook = None
    if notebook is not None:
        target = Path(task.output_notebook)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + f".tmp-{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(notebook)
        os.replace(tmp, target)
        result.executed_notebook = str(target)
    if problems:
        result.status, result.outputs = "failed", []
        result.error_type = "CorruptArtifact"
        result.error_message = f"run {task.run_id}, step {task.step_id}: " + "; ".join(problems)
    return result


def _result_refs(result: StepResult) -> set[str]:
    refs = {o.artifact for o in result.outputs if o.artifact}
    for span in result.spans:
        ref = (span.get("attributes") or {}).get("kit.llm.content")
        if isinstance(ref, str) and ref.startswith(ARTIFACT_PREFIX):
            refs.add(ref)
    return refs


# ---- the worker's side -----------------------------------------------------------------------

_MATERIALIZED: dict[str, Path] = {}
_MATERIALIZE_LOCK = threading.Lock()


def run_on_worker(
    task: StepTask, mapping: list[tuple[str, str, str]], blobs: dict[str, dict], inputs: dict[str, bytes]
) -> dict[str, Any]:
    """On a Dask worker: materialize the bundle (once per id), run the step with its paths rewritten into
    the worker's local directory, and return the result with the bytes of what it made."""
    from distributed import get_worker

    from kit.execution.step import execute_step

    worker = get_worker()
    home = Path(worker.local_directory) / "kit"
    store = ObjectStore(home / "objects")
    for d, data in inputs.items():
        if sha256_bytes(data) != d:
            raise InvalidInput(f"input object sha256:{d} arrived corrupt on worker {worker.address}")
        store.put_bytes(data)
    roots = {blob_id: _materialize(home, store, blob) for blob_id, blob in blobs.items()}
    places = sorted(
        ((Path(src), roots[blob_id] / inner) for src, blob_id, inner in mapping), key=lambda p: -len(str(p[0]))
    )

    def local(path: str) -> str:
        resolved = Path(path).resolve()
        for src, dst in places:
            if resolved == src or resolved.is_relative_to(src):
                return str(dst / resolved.relative_to(src)) if resolved != src else str(dst)
        return path

    env = dict(task.env)
    if env.get(COMPONENTS_ENV):
        env[COMPONENTS_ENV] = json.dumps({k: local(v) for k, v in json.loads(env[COMPONENTS_ENV]).items()})
    if env.get(RECORDINGS_ENV):
        env[RECORDINGS_ENV] = local(env[RECORDINGS_ENV])
    scratch = home / "steps" / f"{task.run_id}-{task.step_id}-{task.attempt}-{uuid.uuid4().hex[:8]}"
    scratch.mkdir(parents=True)
    try:
        here = dataclasses.replace(
            task,
            notebook=local(task.notebook),
            workdir=local(task.workdir),
            output_notebook=str(scratch / Path(task.output_notebook).name),
            spool=str(scratch / "spool"),
            objects=str(store.root),
            env=env,
        )
        result = execute_step(here)
        notebook = Path(result.executed_notebook).read_bytes() if result.executed_notebook else None
        objects = {digest_of(ref): store.read_bytes(ref) for ref in _result_refs(result)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"result": result, "notebook": notebook, "objects": objects, "worker": worker.address}


def _materialize(home: Path, store: ObjectStore, blob: dict[str, Any]) -> Path:
    """A bundle's (or tree's) files under the worker's directory, once per id and process: every file
    re-hashed against its digest, written to a fresh folder and renamed into place."""
    blob_id = blob["id"]
    with _MATERIALIZE_LOCK:
        known = _MATERIALIZED.get(blob_id)
        if known is not None and known.is_dir():
            return known
        for d, data in blob["data"].items():
            if sha256_bytes(data) != d:
                raise InvalidInput(f"{blob['kind']} {blob_id[:12]}: a file arrived corrupt (sha256:{d})")
            store.put_bytes(data)
        target = home / f"{blob['kind']}s" / blob_id
        if target.is_dir():
            _write_files(blob, store, target)  # a folder written before (another process): every file re-checked
        else:
            fresh = target.with_name(f".{blob_id}-{uuid.uuid4().hex[:8]}")
            _write_files(blob, store, fresh)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(fresh, target)
            except OSError:  # another process of this worker's directory won: use its copy, checked
                shutil.rmtree(fresh, ignore_errors=True)
                _write_files(blob, store, target)
        _MATERIALIZED[blob_id] = target
        return target


def _write_files(blob: dict[str, Any], store: ObjectStore, root: Path) -> None:
    if blob["kind"] == "bundle":
        from kit.bundles.lock import materialize

        materialize(blob["lock"], store, root)
        return
    done = root / ".complete"
    for rel, d in blob["files"].items():
        path = root / rel
        if done.exists():
            if not path.is_file() or sha256_file(path) != d:
                raise InvalidInput(f"tree {blob['id'][:12]}: {path} does not match sha256:{d}; delete {root}")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(store.read_bytes(d))
    done.write_text(blob["id"])
