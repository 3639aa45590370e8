"""The coordinator: turns a checked workflow and its parameters into a recorded run.

It validates every parameter before any kernel starts, walks the graph in
dependency order (independent steps run concurrently on the executor), feeds each
step its upstream outputs, and writes the ledger: the only part of kit that does.
Each finished step is committed at once, so a killed coordinator loses nothing
that had completed.
"""

from __future__ import annotations

import getpass
import graphlib
import os
import platform
import secrets as _secrets
import subprocess
import sys
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import kit
from kit import contracts
from kit.bundle import compute_lock, snapshot
from kit.errors import EXIT_FAILED, EXIT_OK, EXIT_WAITING, InvalidInput
from kit.executors import Executor, LocalExecutor
from kit.ledger import Ledger, utcnow
from kit.manifest import Workflow, parse_wire
from kit.objects import ObjectStore
from kit.project import Project
from kit.task import StepResult, StepTask

DONE_OK = ("succeeded", "cached")


def new_run_id() -> str:
    """Sortable by time: UTC date, time and milliseconds, then a random tail."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y%m%d-%H%M%S-") + f"{now.microsecond // 1000:03d}-" + _secrets.token_hex(2)


def resolve_principal(as_: str | None) -> str:
    return as_ or os.environ.get("KIT_PRINCIPAL") or getpass.getuser()


def _git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _packages_hash() -> str:
    import hashlib
    import importlib.metadata as md

    names = sorted(f"{d.metadata['Name']}=={d.version}" for d in md.distributions())
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def _as_ledger_time(text: str | None) -> str | None:
    """Any ISO timestamp (kernel spans, papermill cells) as the ledger's naive UTC text."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.isoformat(sep=" ")


@dataclass
class RunRequest:
    workflow: Workflow
    params: dict[str, Any]
    principal: str
    env: str | None = None
    workers: int | None = None
    engine: str = "papermill"
    scenario_id: str | None = None
    baseline_of: str | None = None


@dataclass
class RunOutcome:
    run_id: str
    status: str
    steps: dict[str, str]
    failures: list[StepResult] = field(default_factory=list)
    seconds: float = 0.0
    bundle_id: str = ""
    values: dict[str, Any] = field(default_factory=dict)  # "STEP.OUTPUT" -> JSON value or artifact ref

    @property
    def exit_code(self) -> int:
        if self.status == "succeeded":
            return EXIT_OK
        if self.status == "waiting":
            return EXIT_WAITING
        return EXIT_FAILED


class Progress:
    """Steps done of total, on a terminal only; silent when output is not a terminal."""

    def __init__(self, total: int, stream=None):
        self.stream = stream or sys.stderr
        self.total = total
        self.done = 0
        self.enabled = hasattr(self.stream, "isatty") and self.stream.isatty()

    def step_done(self, step_id: str, status: str) -> None:
        self.done += 1
        if self.enabled:
            self.stream.write(f"\r\x1b[K  {self.done}/{self.total} steps done ({step_id}: {status})")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.done:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


class Coordinator:
    def __init__(self, project: Project, executor_factory: Callable[[int], Executor] | None = None):
        self.project = project
        project.ensure_home()
        self.ledger = Ledger(project.ledger_path)
        self.store = ObjectStore(project.objects_dir)
        self.executor_factory = executor_factory or LocalExecutor

    # ---- parameters --------------------------------------------------------

    def check_parameters(self, workflow: Workflow, params: dict[str, Any]) -> None:
        """Every `params.X` wire checked against its notebook's annotation, before anything runs."""
        problems = []
        for step in workflow.steps.values():
            if step.info is None:
                continue
            for input_name, source in step.spec.inputs.items():
                origin, name = parse_wire(source)
                if origin != "params":
                    continue
                param = step.info.parameters[input_name]
                problem = contracts.check_parameter(param.annotation, params[name])
                if problem:
                    problems.append(
                        f"{workflow.path}: steps.{step.id}.inputs.{input_name}: params.{name}: {problem} "
                        f"({step.notebook.name} declares {input_name}: {param.annotation})"
                    )
        if problems:
            raise InvalidInput("\n".join(problems))

    # ---- a run -------------------------------------------------------------

    def run(self, request: RunRequest) -> RunOutcome:
        workflow = request.workflow
        params = workflow.resolve_params(request.params)
        self.check_parameters(workflow, params)
        env = request.env or self.project.settings.get("default_env")
        if env is not None and workflow.spec.environments and env not in workflow.spec.environments:
            known = ", ".join(workflow.spec.environments)
            raise InvalidInput(f"{workflow.path}: --env {env}: the workflow has no environment {env!r} (its environments: {known})")

        t0 = time.perf_counter()
        lock = compute_lock(workflow)
        snapshot(workflow, lock, self.store)
        run_id = new_run_id()
        workers = request.workers or os.cpu_count() or 1
        run_row = {
            "run_id": run_id,
            "workflow": workflow.name,
            "bundle_id": lock["bundle_id"],
            "version": workflow.version,
            "env": env,
            "principal": request.principal,
            "params": params,
            "status": "running",
            "started_at": utcnow(),
            "scenario_id": request.scenario_id,
            "baseline_of": request.baseline_of,
            "git_commit": _git_commit(self.project.root),
            "manifest": str(workflow.path),
            "engine": request.engine,
            "isolation": "fresh kernel per step",
            "workers": workers,
            "kit_version": kit.__version__,
            "python_version": platform.python_version(),
            "packages_hash": _packages_hash(),
            "pid": os.getpid(),
        }
        step_rows = [
            {"run_id": run_id, "step_id": sid, "status": "pending", "attempts": 0,
             "notebook": str(workflow.steps[sid].notebook) if workflow.steps[sid].notebook else None}
            for sid in workflow.order
        ]
        self.ledger.write(
            ("upsert", "bundles", [{"bundle_id": lock["bundle_id"], "workflow": workflow.name,
                                    "version": workflow.version, "lock": lock, "created_at": utcnow()}]),
            ("upsert", "runs", [run_row]),
            ("upsert", "steps", step_rows),
        )
        outcome = self._execute(run_id, workflow, params, request, workers)
        outcome.seconds = time.perf_counter() - t0
        outcome.bundle_id = lock["bundle_id"]
        return outcome

    def _execute(self, run_id: str, workflow: Workflow, params: dict[str, Any],
                 request: RunRequest, workers: int) -> RunOutcome:
        run_dir = self.project.runs_dir / run_id
        statuses = {sid: "pending" for sid in workflow.order}
        values: dict[tuple[str, str], Any] = {}
        failures: list[StepResult] = []
        progress = Progress(len(workflow.order))
        sorter = graphlib.TopologicalSorter({s.id: s.depends_on for s in workflow.steps.values()})
        sorter.prepare()
        executor = self.executor_factory(workers)
        running: dict[Future, str] = {}
        run_span = uuid.uuid4().hex[:16]
        run_started = utcnow()
        try:
            while sorter.is_active():
                ready = list(sorter.get_ready())
                while ready:
                    sid = ready.pop(0)
                    step = workflow.steps[sid]
                    if any(statuses[d] not in DONE_OK for d in step.depends_on):
                        statuses[sid] = "skipped"
                        self.ledger.write(("upsert", "steps", [{"run_id": run_id, "step_id": sid, "status": "skipped",
                                                                "attempts": 0, "notebook": str(step.notebook) if step.notebook else None}]))
                        progress.step_done(sid, "skipped")
                        sorter.done(sid)
                        ready.extend(sorter.get_ready())
                        continue
                    if step.is_approval:
                        statuses[sid] = "waiting"
                        self.ledger.write(("sql", "UPDATE steps SET status = 'waiting', started_at = ? WHERE run_id = ? AND step_id = ?",
                                           [utcnow(), run_id, sid]))
                        continue
                    task = self._task(run_id, run_dir, workflow, sid, params, values, request)
                    if isinstance(task, StepResult):  # the inputs failed their contract
                        self._finish_step(run_id, sid, task, run_span, statuses, values, failures, progress)
                        sorter.done(sid)
                        ready.extend(sorter.get_ready())
                        continue
                    statuses[sid] = "running"
                    self.ledger.write(("sql", "UPDATE steps SET status = 'running', started_at = ?, attempts = ? WHERE run_id = ? AND step_id = ?",
                                       [utcnow(), task.attempt, run_id, sid]))
                    running[executor.submit(task)] = sid
                if not running:
                    break  # only waiting steps are left
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    sid = running.pop(future)
                    result = future.result()
                    self._finish_step(run_id, sid, result, run_span, statuses, values, failures, progress)
                    sorter.done(sid)
        finally:
            executor.shutdown()
            progress.close()

        for sid, status in statuses.items():  # dependants of a waiting step stay pending
            if status == "pending" and any(statuses[d] not in DONE_OK for d in workflow.steps[sid].depends_on):
                if any(statuses[d] in ("failed", "skipped") for d in workflow.steps[sid].depends_on):
                    statuses[sid] = "skipped"
        if any(s in ("failed",) for s in statuses.values()):
            run_status = "failed"
        elif any(s == "waiting" for s in statuses.values()):
            run_status = "waiting"
        else:
            run_status = "succeeded"
        ended = utcnow()
        self.ledger.write(
            ("sql", "UPDATE runs SET status = ?, ended_at = ? WHERE run_id = ?",
             [run_status, ended if run_status != "waiting" else None, run_id]),
            ("insert", "spans", [{"run_id": run_id, "span_id": run_span, "parent_id": None, "step_id": None,
                                  "name": workflow.name, "kind": "run", "started_at": run_started, "ended_at": ended,
                                  "status": run_status, "attributes": {"params": params}}]),
        )
        return RunOutcome(run_id=run_id, status=run_status, steps=statuses, failures=failures,
                          values={f"{sid}.{name}": value for (sid, name), value in values.items()})

    def _task(self, run_id: str, run_dir: Path, workflow: Workflow, sid: str, params: dict[str, Any],
              values: dict[tuple[str, str], Any], request: RunRequest) -> StepTask | StepResult:
        step = workflow.steps[sid]
        parameters: dict[str, Any] = {}
        problems = []
        for input_name, source in step.spec.inputs.items():
            origin, name = parse_wire(source)
            value = params[name] if origin == "params" else values[(origin, name)]
            if origin != "params":
                problem = contracts.check_parameter(step.info.parameters[input_name].annotation, value)
                if problem:
                    problems.append(f"input {input_name!r} from {source}: {problem}")
            parameters[input_name] = value
        if problems:
            now = utcnow()
            return StepResult(step_id=sid, attempt=1, status="failed", started_at=now, ended_at=now, duration_ms=0.0,
                              error_type="ParameterError", error_message="; ".join(problems))
        return StepTask(
            run_id=run_id,
            step_id=sid,
            attempt=1,
            notebook=str(step.notebook),
            workdir=str(step.notebook.parent),
            parameters=parameters,
            outputs=dict(step.spec.outputs),
            output_notebook=str(run_dir / f"{sid}.ipynb"),
            spool=str(run_dir / ".spool" / f"{sid}-1"),
            objects=str(self.store.root),
            engine=request.engine,
        )

    def _finish_step(self, run_id: str, sid: str, result: StepResult, run_span: str, statuses: dict[str, str],
                     values: dict[tuple[str, str], Any], failures: list[StepResult], progress: Progress) -> None:
        statuses[sid] = result.status
        if result.ok:
            for out in result.outputs:
                values[(sid, out.name)] = out.artifact if out.type == "table" else out.value
        else:
            failures.append(result)
        for warning in result.warnings:
            print(f"warning: step {sid}: {warning}", file=sys.stderr)
        self.ledger.write(*self._result_ops(run_id, result, run_span))
        progress.step_done(sid, result.status)

    def _result_ops(self, run_id: str, result: StepResult, run_span: str) -> list[tuple]:
        sid = result.step_id
        step_row = {
            "run_id": run_id, "step_id": sid, "status": result.status, "attempts": result.attempt,
            "started_at": result.started_at, "ended_at": result.ended_at, "duration_ms": result.duration_ms,
            "executed_notebook": result.executed_notebook, "error_type": result.error_type,
            "error_message": result.error_message, "error_cell": result.error_cell,
            "error_source": result.error_source, "traceback": result.traceback,
        }
        attempt_span = uuid.uuid4().hex[:16]
        spans = [{
            "run_id": run_id, "span_id": attempt_span, "parent_id": run_span, "step_id": sid,
            "name": sid, "kind": "step", "started_at": result.started_at, "ended_at": result.ended_at,
            "status": "ok" if result.ok else "error",
            "attributes": {"attempt": result.attempt, "duration_ms": result.duration_ms,
                           **({"error.type": result.error_type} if result.error_type else {})},
        }]
        for span in result.spans:
            spans.append({
                "run_id": run_id, "span_id": span.get("span_id") or uuid.uuid4().hex[:16],
                "parent_id": span.get("parent_id") or attempt_span, "step_id": sid,
                "name": str(span.get("name")), "kind": str(span.get("kind") or "custom"),
                "started_at": _as_ledger_time(span.get("started_at")), "ended_at": _as_ledger_time(span.get("ended_at")),
                "status": span.get("status") or "ok", "attributes": span.get("attributes") or {},
            })
        outputs = [
            {"run_id": run_id, "step_id": sid, "name": o.name, "type": o.type, "value": o.value,
             "artifact": o.artifact, "size_bytes": o.size_bytes}
            for o in result.outputs
        ]
        return [("upsert", "steps", [step_row]), ("insert", "spans", spans), ("upsert", "outputs", outputs)]
