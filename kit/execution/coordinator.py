"""The coordinator: turns a checked workflow and its parameters into a recorded run.

It validates every parameter and entitlement before any kernel starts, walks the
graph in dependency order (independent steps run concurrently on the executor),
routes by each step's `when:` (a skip is recorded, final, before the run moves on),
feeds each step its upstream outputs, retries, reuses cached steps, stops at
approval gates, and records all of it through the ledger's named operations: the
only part of kit that writes a run. A step's writes (its result, spans and outputs, and
the start of the steps that follow it) are gathered in a `Batch` and committed in one
transaction before the coordinator waits again (the run's start joins the first, its end
the last), so a killed coordinator loses nothing that had completed, and `resume`
continues from the ledger. Several runs may be driven at once from threads of one
process (a suite's scenarios): `cancelled` stops them all from another thread. A run is
driven by one process at a time (`kit.ledger.driver`); Ctrl-C or SIGTERM ends it
`cancelled`, resumable; a full disk fails the step `NoSpace`.
"""

from __future__ import annotations

import graphlib
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from kit.base import backoff, interrupts
from kit.base.clock import ledger_time, new_run_id, new_span_id, now, utcnow
from kit.base.digests import canonical_bytes, canonical_json, digest
from kit.base.progress import Progress
from kit.bundles import compose
from kit.bundles.lock import snapshot
from kit.errors import EXIT_FAILED, EXIT_OK, EXIT_WAITING, InvalidInput, KitError, PermissionDenied
from kit.execution import engines
from kit.execution.approvals import Approvals
from kit.execution.environment import LLMSettings, task_environment
from kit.execution.executors import Executor, LocalExecutor
from kit.execution.provenance import provenance
from kit.execution.recorded import recorded_values
from kit.execution.task import OutputRecord, StepResult, StepTask
from kit.ledger.audit import AuditEvent
from kit.ledger.database import LedgerBusy
from kit.ledger.driver import RunDriver
from kit.ledger.ledger import DONE_STEP_STATUSES, Batch, Ledger
from kit.ledger.objects import MissingObject, ObjectStore, ref_of
from kit.spec import contracts
from kit.spec.conditions import ConditionFailed, render
from kit.spec.manifest import Workflow
from kit.spec.policy import REDACTED, Redactor, parse_duration, principal_problem
from kit.spec.project import Project
from kit.spec.tools import kernel_tools, missing_for_tools

DONE_OK = DONE_STEP_STATUSES
RESUMABLE = ("failed", "running", "waiting", "cancelled")
SCENARIO_GATE = "scenario runs stop at approval gates (a scenario's `approve:` decides one)"


def idempotency_key(run_id: str, step_id: str) -> str:
    """The key a step's side effects carry: the same for every attempt and resume of this run's step."""
    return hashlib.sha256(f"kit-idempotency/{run_id}/{step_id}".encode()).hexdigest()[:32]


@dataclass
class RunRequest:
    workflow: Workflow
    params: dict[str, Any]
    principal: str
    env: str | None = None
    workers: int | None = None
    engine: str = "papermill"
    fresh: bool = False
    scenario_id: str | None = None
    baseline_of: str | None = None
    llm: LLMSettings | None = None
    approvals: dict[str, str] = field(default_factory=dict)  # scenario runs: approval step -> who decides it


@dataclass
class RunOutcome:
    run_id: str
    status: str
    steps: dict[str, str]
    failures: list[StepResult] = field(default_factory=list)
    seconds: float = 0.0
    bundle_id: str = ""
    values: dict[str, Any] = field(default_factory=dict)  # "STEP.OUTPUT" -> JSON value or artifact ref
    waiting: list[str] = field(default_factory=list)  # approval steps waiting for a decision
    reasons: dict[str, str] = field(default_factory=dict)  # step skipped by a `when:` rule -> why
    redactor: Redactor | None = None  # what the run keeps secret, for whoever reports on it
    workflow: Workflow | None = None

    @property
    def exit_code(self) -> int:
        if self.status == "succeeded":
            return EXIT_OK
        if self.status == "waiting":
            return EXIT_WAITING
        return EXIT_FAILED


@dataclass
class _RunState:
    """Everything one execution of a run needs; built fresh by `run` and from the ledger by `resume`."""

    run_id: str
    workflow: Workflow
    params: dict[str, Any]
    principal: str
    env: str | None
    workers: int
    engine: str
    fresh: bool
    lock: dict[str, Any]
    redactor: Redactor
    statuses: dict[str, str]
    values: dict[tuple[str, str], Any] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    run_span: str = field(default_factory=new_span_id)
    task_env: dict[str, str] = field(default_factory=dict)  # what every kernel of the run sees
    scenario: bool = False  # a scenario run: gates do not wait
    approvals: dict[str, str] = field(default_factory=dict)
    #: the environment and lock of each nested workflow's steps (a workflow step from the store), by folder
    nested_env: dict[Any, dict[str, str]] = field(default_factory=dict)
    nested_lock: dict[Any, dict[str, Any]] = field(default_factory=dict)
    step_spans: dict[str, str] = field(default_factory=dict)  # a workflow step -> its span (its inner steps' parent)
    #: steps skipped by a `when:` rule, theirs or their upstreams': final (resume keeps them) -> why
    routed: dict[str, str] = field(default_factory=dict)
    #: step writes not yet committed: committed together before the coordinator waits, and with the run's end
    pending: Batch | None = None

    def env_of(self, step) -> dict[str, str]:
        return self.nested_env.get(step.home, self.task_env)

    def lock_of(self, step) -> dict[str, Any]:
        return self.nested_lock.get(step.home, self.lock)

    def parent_span(self, step) -> str:
        return self.step_spans.setdefault(step.within, new_span_id()) if step.within else self.run_span


def _span_attributes(redactor: Redactor, attributes: dict[str, Any]) -> dict[str, Any]:
    """kit's own attribute names (gen_ai.*, kit.*) are never redacted by name; every value is scrubbed."""
    return {
        k: (redactor.value(v) if k.startswith(("gen_ai.", "kit.", "server.")) or not redactor.matches(k) else REDACTED)
        for k, v in attributes.items()
    }


class Coordinator:
    def __init__(
        self, project: Project, executor_factory: Callable[[int], Executor] | None = None, progress: bool = True
    ):
        self.project = project
        project.ensure_home()
        self.ledger = Ledger(project.ledger_path)
        self.store = ObjectStore(project.objects_dir)
        self.executor_factory = executor_factory or LocalExecutor
        self.access = project.access
        self.approvals = Approvals(project, self.ledger)
        self.progress = progress  # steps done of total on a terminal (off when a suite shows its own)
        #: set from another thread (a suite's main thread on Ctrl-C or SIGTERM): every run of this
        #: coordinator stops, its running steps and itself `cancelled`, resumable
        self.cancelled = threading.Event()

    # ---- checks before anything runs ---------------------------------------

    def check_parameters(self, workflow: Workflow, params: dict[str, Any]) -> None:
        """Every `params.X` wire checked against its notebook's annotation."""
        problems = []
        for step in workflow.steps.values():
            if step.info is None:
                continue
            for input_name, (origin, name) in step.wires.items():
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

    def check_entitlements(self, workflow: Workflow, principal: str, steps: list[str] | None = None) -> None:
        """Deny by default: the steps' `requires` against the principal's roles; a denial is audited."""
        denied, tools_denied = [], {}
        for sid in steps if steps is not None else workflow.order:
            missing = self.access.missing(principal, workflow.steps[sid].spec.requires)
            if missing:
                denied.append((sid, missing))
            # the tools a step lets a model call are checked like the step's own `requires`
            if by_tool := missing_for_tools(workflow.steps[sid], lambda r: self.access.missing(principal, r)):
                tools_denied[sid] = by_tool
        if not denied and not tools_denied:
            return
        detail: dict[str, Any] = {"steps": {sid: missing for sid, missing in denied}}
        if tools_denied:
            detail["tools"] = tools_denied
        self.ledger.audit(AuditEvent(principal, "run.denied", workflow.name, detail))
        roles = ", ".join(sorted(self.access.roles_of(principal))) or "no roles"
        lines = [f"step {sid!r} requires {', '.join(missing)}" for sid, missing in denied]
        lines += [
            f"step {sid!r} lists tool {tool!r}, which requires {', '.join(missing)}"
            for sid, by_tool in tools_denied.items()
            for tool, missing in by_tool.items()
        ]
        raise PermissionDenied(f"{principal!r} ({roles}) may not run {workflow.name}: " + "; ".join(lines))

    def _compose(
        self, workflow: Workflow, env: str | None, llm: LLMSettings | None, resolved: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], compose.Expanded, dict[str, str], dict, dict]:
        """The run's lock, its workflow with the store's parts in place (`kit.bundles.compose`), and the
        environment of its own steps and of each nested workflow's. `resolved`: a recorded resolution (resume)."""
        lock, resolved, store = compose.lock_now(self.project, workflow, resolved)
        expanded = compose.expand(workflow, resolved, self.project, store)
        task_env = {**task_environment(workflow, env, llm), "KIT_COMPONENTS": json.dumps(expanded.components)}
        nested_env, nested_lock = {}, {}
        for folder, (inner, inner_lock) in expanded.nested.items():
            parts = {n: str((inner.dir / c.path).resolve()) for n, c in inner.spec.components.items() if c.path}
            inner_env = env if env in inner.spec.environments else None
            nested_env[folder] = {**task_environment(inner, inner_env, llm), "KIT_COMPONENTS": json.dumps(parts)}
            nested_lock[folder] = inner_lock
        return lock, expanded, task_env, nested_env, nested_lock

    def check_declared_approvals(self, workflow: Workflow, request: RunRequest) -> None:
        """A scenario's `approve:` names approval steps and principals the policy lets decide them."""
        for sid, who in request.approvals.items():
            step = workflow.steps.get(sid)
            if step is None or not step.is_approval:
                gates = ", ".join(s.id for s in workflow.steps.values() if s.is_approval) or "none"
                raise InvalidInput(f"approve: {sid!r} is not an approval step (approval steps: {gates})")
            try:
                self.access.check_approver(who, step.spec.approval.approvers, request.principal)
            except PermissionDenied as exc:
                raise InvalidInput(f"approve: {sid}: {exc.message}") from None

    def environment(self, workflow: Workflow, env: str | None) -> str | None:
        """The environment a run uses: the one asked for, which must be declared, else the project's default
        when the workflow declares it."""
        declared = workflow.spec.environments
        if env is not None:
            if env not in declared:
                known = ", ".join(declared) if declared else "it declares none"
                raise InvalidInput(
                    f"{workflow.path}: --env {env}: the workflow has no environment {env!r} (its environments: {known})"
                )
            return env
        default = self.project.settings.get("default_env")
        return default if default in declared else None

    def _redactor(self, workflow: Workflow, params: dict[str, Any]) -> Redactor:
        redactor = Redactor(workflow.spec.policy.redact)
        redactor.add_secrets(redactor.secret_values_of(params))
        return redactor

    # ---- a new run ---------------------------------------------------------

    def run(self, request: RunRequest) -> RunOutcome:
        workflow = request.workflow
        problem = principal_problem(request.principal)
        if problem:
            raise InvalidInput(problem)
        params = workflow.resolve_params(request.params)
        env = self.environment(workflow, request.env)
        # store parts resolved and fetched (checked), a broken model or environment config refused, here
        lock, expanded, task_env, nested_env, nested_lock = self._compose(workflow, env, request.llm)
        defined = workflow
        workflow = expanded.workflow
        self.check_parameters(workflow, params)
        self.check_entitlements(workflow, request.principal)
        self.check_declared_approvals(workflow, request)
        engine = engines.get_engine(request.engine)  # an unknown engine is refused here

        t0 = time.perf_counter()
        snapshot(defined, lock, self.store)
        run_id = new_run_id()
        driver = RunDriver(self.project.runs_dir, run_id).acquire()
        try:
            workers = request.workers or os.cpu_count() or 1
            redactor = self._redactor(workflow, params)
            run_row = {
                "run_id": run_id,
                "workflow": workflow.name,
                "bundle_id": lock["bundle_id"],
                "version": workflow.version,
                "env": env,
                "principal": request.principal,
                "params": redactor.named(params),
                "status": "running",
                "started_at": utcnow(),
                "scenario_id": request.scenario_id,
                "baseline_of": request.baseline_of,
                "manifest": str(workflow.path),
                "engine": engine.name,
                "isolation": engine.isolation,
                "workers": workers,
                "executor": getattr(self.executor_factory, "name", "local"),
                "pid": os.getpid(),
                **provenance(self.project.root),
            }
            step_rows = [
                {
                    "run_id": run_id,
                    "step_id": sid,
                    "status": "pending",
                    "attempts": 0,
                    "notebook": str(workflow.steps[sid].notebook) if workflow.steps[sid].notebook else None,
                    "depends_on": sorted(workflow.steps[sid].depends_on),
                }
                for sid in workflow.order
            ]
            bundle_row = {
                "bundle_id": lock["bundle_id"],
                "workflow": workflow.name,
                "version": workflow.version,
                "lock": lock,
                "created_at": utcnow(),
            }
            pending = self.ledger.batch()  # committed with the first step's start (or, all cached, the run's end)
            pending.start_run(
                bundle_row,
                run_row,
                step_rows,
                AuditEvent(
                    request.principal,
                    "run.started",
                    run_id,
                    {
                        "workflow": workflow.name,
                        "version": workflow.version,
                        "bundle_id": lock["bundle_id"],
                        "env": env,
                        "scenario": request.scenario_id,
                    },
                ),
            )
            state = _RunState(
                run_id=run_id,
                workflow=workflow,
                params=params,
                principal=request.principal,
                env=env,
                workers=workers,
                engine=engine.name,
                fresh=request.fresh,
                lock=lock,
                redactor=redactor,
                statuses={sid: "pending" for sid in workflow.order},
                task_env=task_env,
                scenario=request.scenario_id is not None,
                approvals=dict(request.approvals),
                nested_env=nested_env,
                nested_lock=nested_lock,
                pending=pending,
            )
            outcome = self._execute(state)
        finally:
            driver.release()
        outcome.seconds = time.perf_counter() - t0
        return outcome

    # ---- resuming ----------------------------------------------------------

    def resume(
        self,
        run_id: str,
        principal: str,
        params: dict[str, Any] | None = None,
        workers: int | None = None,
        fresh: bool = False,
    ) -> RunOutcome:
        """Continue a failed, interrupted or waiting run as `principal`; completed steps are not run again."""
        driver = RunDriver(self.project.runs_dir, run_id).acquire()  # one process drives a run: else exit 2
        try:
            return self._resume(run_id, principal, params, workers, fresh)
        finally:
            driver.release()

    def _resume(
        self, run_id: str, principal: str, params: dict[str, Any] | None, workers: int | None, fresh: bool
    ) -> RunOutcome:
        self.approvals.expire_overdue(run_id)
        run = self.ledger.run(run_id)
        if run is None:
            raise InvalidInput(f"no run {run_id!r}")
        if run["status"] == "succeeded":
            return RunOutcome(run_id=run_id, status="succeeded", steps={})
        if run["status"] == "rejected":
            raise InvalidInput(f"run {run_id} was rejected at an approval: it cannot be resumed; start a new run")
        workflow = self.project.load_workflow(run["manifest"])
        recorded = dict(run["params"] or {})
        given = dict(params or {})
        hidden = [k for k, v in recorded.items() if v == REDACTED and k not in given]
        if hidden:
            raise InvalidInput(
                f"run {run_id}: parameter(s) {', '.join(hidden)} were redacted; give them again with -p NAME=VALUE"
            )
        recorded.update(given)
        resolved = workflow.resolve_params(recorded)
        previous = self.ledger.bundle_lock(run["bundle_id"]) or {}
        lock, expanded, task_env, nested_env, nested_lock = self._compose(
            workflow, run["env"], None, previous.get("resolved")
        )
        defined, workflow = workflow, expanded.workflow
        steps = {s["step_id"]: s for s in self.ledger.steps(run_id)}
        statuses, routed = {}, {}
        for sid in workflow.order:
            row = steps.get(sid, {})
            status = row.get("status", "pending")
            if status == "skipped" and row.get("routed"):  # a recorded routing decision stands
                routed[sid] = row.get("reason") or ""
            statuses[sid] = status if status in DONE_OK or sid in routed else "pending"
        remaining = [sid for sid in workflow.order if statuses[sid] not in DONE_OK and sid not in routed]
        self.check_entitlements(workflow, principal, remaining)  # resume acts as someone

        t0 = time.perf_counter()
        if lock["bundle_id"] != run["bundle_id"]:
            print(
                f"warning: the workflow's files changed since run {run_id} started "
                f"(bundle {run['bundle_id'][:12]} -> {lock['bundle_id'][:12]}); remaining steps use the current files",
                file=sys.stderr,
            )
        snapshot(defined, lock, self.store)
        values = {}
        done_outputs: dict[str, list[dict]] = {}
        for out in self.ledger.outputs(run_id):
            if statuses.get(out["step_id"]) in DONE_OK:
                done_outputs.setdefault(out["step_id"], []).append(out)
        for sid, rows in done_outputs.items():
            try:
                checked = recorded_values(self.ledger, self.store, rows)
            except KitError as exc:
                raise KitError(f"cannot resume run {run_id}: {exc.message}") from None
            values.update({(sid, name): value for name, value in checked.items()})
        self.ledger.resume_run(
            run_id,
            os.getpid(),
            AuditEvent(
                principal, "run.resumed", run_id, {"steps_done": sorted(s for s, v in statuses.items() if v in DONE_OK)}
            ),
        )
        state = _RunState(
            run_id=run_id,
            workflow=workflow,
            params=resolved,
            principal=principal,
            env=run["env"],
            workers=workers or run["workers"] or os.cpu_count() or 1,
            engine=run["engine"] or "papermill",
            fresh=fresh,
            lock=lock,
            redactor=self._redactor(workflow, resolved),
            statuses=statuses,
            values=values,
            attempts={sid: (steps.get(sid, {}).get("attempts") or 0) for sid in workflow.order},
            task_env=task_env,
            scenario=run["scenario_id"] is not None,
            nested_env=nested_env,
            nested_lock=nested_lock,
            routed=routed,
        )
        outcome = self._execute(state)
        outcome.seconds = time.perf_counter() - t0
        return outcome

    # ---- approvals ---------------------------------------------------------

    def approve(
        self, run_id: str, step_id: str, principal: str, reject: bool = False, comment: str | None = None
    ) -> str:
        """Decide an approval step (`kit.execution.approvals`); returns the decision."""
        return self.approvals.decide(run_id, step_id, principal, reject=reject, comment=comment)

    # ---- the loop ----------------------------------------------------------

    def _execute(self, state: _RunState) -> RunOutcome:
        workflow = state.workflow
        failures: list[StepResult] = []
        waiting: list[str] = []
        progress = Progress(len(workflow.order), "steps done", enabled=None if self.progress else False)
        sorter = graphlib.TopologicalSorter({s.id: s.depends_on for s in workflow.steps.values()})
        sorter.prepare()
        executor = self.executor_factory(state.workers)
        running: dict[Future, StepTask] = {}
        delayed: list[tuple[float, StepTask]] = []
        run_started = utcnow()
        if state.pending is None:
            state.pending = self.ledger.batch()
        try:
            while sorter.is_active():
                self._check_cancelled()
                ready = list(sorter.get_ready())
                while ready:
                    sid = ready.pop(0)
                    status = self._start(state, sid, executor, running, failures, waiting, progress)
                    if status != "waiting" and status != "running":
                        sorter.done(sid)
                        ready.extend(sorter.get_ready())
                moment = time.monotonic()
                for due, task in [d for d in delayed if d[0] <= moment]:
                    delayed.remove((due, task))
                    state.pending.commit()  # the failed attempt it retries, recorded before it runs again
                    running[executor.submit(task)] = task
                if not running and not delayed:
                    break  # only waiting steps are left
                timeout = max(0.0, min(d for d, _ in delayed) - time.monotonic()) if delayed else None
                state.pending.commit()  # what ended and what started, in one transaction, before waiting
                done, _ = self._wait(running, timeout)
                self._check_cancelled()
                for future in done:
                    task = running.pop(future)
                    result = future.result()
                    retry = self._retry_of(state, task, result)
                    if retry is not None:
                        self._record_attempt(state, result)
                        delayed.append(retry)
                        continue
                    self._finish(state, result, failures, progress)
                    sorter.done(task.step_id)
        except KeyboardInterrupt:
            with interrupts.held():  # a second Ctrl-C must not leave the run `running`
                self._stop(state, running, "cancelled", "interrupted (Ctrl-C or SIGTERM)")
            raise
        except Exception as exc:  # a fault (a full disk, a busy ledger): end the run failed, if the ledger lets us
            reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            try:
                self._stop(state, running, "failed", reason)
            except Exception:  # noqa: BLE001 - the ledger itself is the fault: the run stays resumable
                pass
            raise
        finally:
            executor.shutdown()
            progress.close()
        return self._close(state, run_started, failures, waiting)

    def _wait(self, running: dict[Future, StepTask], timeout: float | None) -> tuple[set[Future], set[Future]]:
        """Wait for a step to end; while this coordinator may be cancelled from another thread, in short
        slices, so a cancellation is seen promptly."""
        if threading.current_thread() is threading.main_thread():
            return wait(list(running), timeout=timeout, return_when=FIRST_COMPLETED)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 0.2 if deadline is None else min(0.2, max(0.0, deadline - time.monotonic()))
            done, not_done = wait(list(running), timeout=left, return_when=FIRST_COMPLETED)
            if done or self.cancelled.is_set() or (deadline is not None and time.monotonic() >= deadline):
                return done, not_done

    def _check_cancelled(self) -> None:
        """A cancellation asked from another thread ends this run the way Ctrl-C does."""
        if self.cancelled.is_set():
            raise KeyboardInterrupt

    def _stop(self, state: _RunState, running: dict[Future, StepTask], status: str, reason: str) -> None:
        """Stop the running steps' kernels and what they started; end them and the run `status` (cancelled
        on Ctrl-C or SIGTERM, failed on a fault), so nothing is left `running`; `kit resume` continues."""
        engines.cancel_running(state.run_id)  # this run's steps only: a suite's other scenarios go on
        wait(list(running), timeout=10)
        stopped = sorted(
            {t.step_id for t in running.values()} | {s for s, v in state.statuses.items() if v == "running"}
        )
        for sid in stopped:
            state.statuses[sid] = status
        event = AuditEvent(state.principal, f"run.{status}", state.run_id, {"steps": stopped, "reason": reason})
        self.ledger.end_run_early(state.run_id, stopped, reason, event, status=status, pending=state.pending)
        self.ledger.release()

    def _start(
        self,
        state: _RunState,
        sid: str,
        executor: Executor,
        running: dict[Future, StepTask],
        failures: list[StepResult],
        waiting: list[str],
        progress: Progress,
    ) -> str:
        """Decide what a ready step does: already done, skipped, gated, cached, or submitted."""
        step = state.workflow.steps[sid]
        if state.statuses[sid] in DONE_OK:
            return state.statuses[sid]
        if sid in state.routed:  # decided before (a resumed run): the decision stands
            progress.advance(f"{sid}: skipped")
            return "skipped"
        if any(state.statuses[d] not in DONE_OK and d not in state.routed for d in step.depends_on):
            return self._set_status(state, sid, "skipped", progress)
        try:
            reason = self._route(state, sid)
        except ConditionFailed as exc:
            moment = utcnow()
            result = StepResult(
                step_id=sid,
                attempt=state.attempts.get(sid, 0) + 1,
                status="failed",
                started_at=moment,
                ended_at=moment,
                duration_ms=0.0,
                error_type="ConditionError",
                error_message=str(exc),
            )
            self._finish(state, result, failures, progress)
            return "failed"
        if reason is not None:
            return self._skip(state, sid, reason, progress)
        if step.is_approval:
            return self._gate(state, sid, waiting, progress)
        if step.is_workflow:
            return self._gather(state, sid, failures, progress)
        task = self._task(state, sid)
        if isinstance(task, StepResult):  # the inputs failed their contract
            self._finish(state, task, failures, progress)
            return task.status
        key = self._cache_key(state, sid, task)
        if step.spec.cache and not state.fresh and self._cached(state, sid, task, key):
            progress.advance(f"{sid}: cached")
            return "cached"
        state.statuses[sid] = "running"
        state.pending.update_step(
            state.run_id, sid, status="running", started_at=utcnow(), attempts=task.attempt, cache_key=key
        )
        # Durable before the step can act: what ended before it and its start, in one transaction. A kill -9
        # once it has begun then finds the steps before it done (never run again) and it `running`.
        state.pending.commit()
        running[executor.submit(task)] = task
        return "running"

    # ---- routing -----------------------------------------------------------

    def _route(self, state: _RunState, sid: str) -> str | None:
        """Why a ready step is skipped by routing, or None when it runs. The rule, in order:
        every step it depends on was skipped by a rule; an input that is not `optional` comes from a
        skipped step; its `when:` reads a skipped step; its `when:` is false. ConditionFailed when the
        `when:` cannot be evaluated on the values it met."""
        step = state.workflow.steps[sid]
        skipped = [d for d in state.workflow.order if d in step.depends_on and d in state.routed]
        if skipped and len(skipped) == len(step.depends_on):
            return f"upstream {skipped[0]} skipped" if len(skipped) == 1 else f"upstreams {', '.join(skipped)} skipped"
        for name, (origin, what) in step.wires.items():
            if origin in state.routed and name not in step.optional:
                return f"input {name} needs {origin}.{what}, and {origin} was skipped"
        condition = step.condition
        if condition is None:
            return None
        for upstream in condition.steps:
            if upstream in state.routed:
                return f"when {condition.text} reads {upstream}, and {upstream} was skipped"
        names: dict[str, Any] = {"params": state.params}
        for upstream in condition.steps:
            outputs = state.workflow.steps[upstream].spec.outputs
            names[upstream] = {o: state.values[(upstream, o)] for o in outputs if (upstream, o) in state.values}
        verdict, seen = condition.evaluate(names)
        if verdict:
            return None
        redactor = state.redactor

        def shown(name: str, value: Any) -> str:
            hidden = any(redactor.matches(part) for part in name.split("."))
            return REDACTED if hidden else render(redactor.value(value))

        return redactor.text(condition.reason(seen, shown)) or ""

    def _skip(self, state: _RunState, sid: str, reason: str, progress: Progress) -> str:
        """A step skipped by routing: recorded (final, `routed`) in the batch that holds the results it was
        decided on, so both reach the ledger together, before the coordinator waits on anything."""
        state.statuses[sid] = "skipped"
        state.routed[sid] = reason
        moment = utcnow()
        state.pending.update_step(
            state.run_id, sid, status="skipped", reason=reason, routed=True, started_at=moment, ended_at=moment
        )
        progress.advance(f"{sid}: skipped")
        return "skipped"

    def _gather(self, state: _RunState, sid: str, failures: list[StepResult], progress: Progress) -> str:
        """A workflow step whose inner steps are done: its outputs are theirs of the same names, checked
        against its own contract; its span holds theirs."""
        step = state.workflow.steps[sid]
        moment = utcnow()
        result = StepResult(
            step_id=sid, attempt=1, status="succeeded", started_at=moment, ended_at=moment, duration_ms=0.0
        )
        problems = []
        for name, maker in compose.gathered_outputs(state.workflow, sid).items():
            value = state.values[(maker, name)]
            spec = step.spec.outputs[name]
            is_table = isinstance(value, str) and value.startswith("artifact:")
            problem = contracts.check_output(name, spec, None if is_table else value, is_table)
            if problem:
                problems.append(f"{problem} (made by {maker})")
            elif is_table:
                result.outputs.append(OutputRecord(name, "table", artifact=value))
            else:
                result.outputs.append(OutputRecord(name, contracts.type_name(spec), value=value))
        if problems:
            result.status, result.error_type, result.error_message = "failed", "OutputError", "; ".join(problems)
            result.outputs = []
        self._finish(state, result, failures, progress)
        return result.status

    def _set_status(
        self, state: _RunState, sid: str, status: str, progress: Progress, reason: str | None = None
    ) -> str:
        state.statuses[sid] = status
        state.pending.update_step(state.run_id, sid, status=status, reason=reason)
        progress.advance(f"{sid}: {status}")
        return status

    def _gate(self, state: _RunState, sid: str, waiting: list[str], progress: Progress) -> str:
        """An approval step: decided (approved, rejected, expired), or waiting for a decision.

        A scenario run never waits: its `approve:` decides the gate through the same policy,
        or the gate and what follows it are skipped, so scenario runs do not pile up waiting."""
        approval = state.workflow.steps[sid].spec.approval
        decision = self.ledger.decision(state.run_id, sid, settle=False, lease=True)
        if decision is None and state.scenario:
            if sid not in state.approvals:
                return self._set_status(state, sid, "skipped", progress, reason=SCENARIO_GATE)
            state.pending.commit()  # a decision meets the ledger as it is
            self.ledger.step_waiting(state.run_id, sid, None)
            self.approvals.decide(state.run_id, sid, state.approvals[sid], comment="declared by the scenario")
            decision = self.ledger.decision(state.run_id, sid)
        if decision is not None:
            status = decision["decision"]
            state.statuses[sid] = status
            progress.advance(f"{sid}: {status}")
            return status
        deadline = None
        if approval.timeout:
            deadline = (now() + timedelta(seconds=parse_duration(approval.timeout))).isoformat(sep=" ")
        state.pending.commit()  # what came before the gate, then the gate waits: both there for `kit approve`
        self.ledger.step_waiting(state.run_id, sid, deadline)
        state.statuses[sid] = "waiting"
        waiting.append(sid)
        return "waiting"

    def _task(self, state: _RunState, sid: str) -> StepTask | StepResult:
        step = state.workflow.steps[sid]
        parameters: dict[str, Any] = {}
        problems = []
        for input_name, (origin, name) in step.wires.items():
            if origin == "params":
                value = state.params[name]
            elif origin == "":  # a fixed value: an inner workflow's own default
                value = name
            elif origin in state.routed:  # an optional input whose step was skipped (`_route`)
                value = None
            else:
                value = state.values[(origin, name)]
            if origin not in ("params", "") and origin not in state.routed:
                problem = contracts.check_parameter(step.info.parameters[input_name].annotation, value)
                if problem:
                    problems.append(f"input {input_name!r} from {origin}.{name}: {problem}")
            parameters[input_name] = value
        attempt = state.attempts.get(sid, 0) + 1
        if problems:
            moment = utcnow()
            return StepResult(
                step_id=sid,
                attempt=attempt,
                status="failed",
                started_at=moment,
                ended_at=moment,
                duration_ms=0.0,
                error_type="ParameterError",
                error_message="; ".join(problems),
            )
        run_dir = self.project.runs_dir / state.run_id
        return StepTask(
            run_id=state.run_id,
            step_id=sid,
            attempt=attempt,
            notebook=str(step.notebook),
            workdir=str(step.notebook.parent),
            parameters=parameters,
            outputs=dict(step.spec.outputs),
            output_notebook=str(run_dir / f"{sid}.ipynb"),
            spool=str(run_dir / ".spool" / f"{sid}-{attempt}"),
            objects=str(self.store.root),
            engine=state.engine,
            timeout=step.spec.timeout,
            env={
                **state.env_of(step),
                "KIT_IDEMPOTENCY_KEY": idempotency_key(state.run_id, sid),
                **kernel_tools(step, step.notebook.parent),
            },
            redact=list(state.workflow.spec.policy.redact),
            secret_values=sorted(state.redactor.secrets),
            summary=self._summary(state, sid, parameters),
            bundle={"root": str(step.home or state.workflow.dir), "lock": state.lock_of(step)},
        )

    def _summary(self, state: _RunState, sid: str, parameters: dict[str, Any]) -> str:
        """The markdown a reviewer reads first in the executed notebook: the run, and every input's origin."""
        from kit.base.display import brief

        step = state.workflow.steps[sid]
        rows = []
        for name, (origin, what) in step.wires.items():
            value = REDACTED if state.redactor.matches(name) else state.redactor.value(parameters.get(name))
            if origin == "params":
                came = f"parameter `{what}`"
            elif origin == "":
                came = "the inner workflow's default"
            else:
                came = f"output `{what}` of step `{origin}`"
                if origin in state.routed:
                    came += " (that step was skipped: the input is optional)"
                if isinstance(value, str) and value.startswith("artifact:"):
                    came += f" (artifact `{value.split(':')[-1][:16]}…`)"
            shown = brief(value, 80).replace("|", "\\|").replace("`", "'")
            rows.append(f"| `{name}` | {came} | `{shown}` |")
        inputs = "\n".join(["| input | from | value |", "|---|---|---|", *rows]) if rows else "No inputs."
        return (
            f"**kit run** `{state.run_id}` · step **`{sid}`** of workflow **{state.workflow.name}** "
            f"{state.workflow.version} (bundle `{state.lock['bundle_id'][:12]}`)  \n"
            f"as **{state.principal}** · environment **{state.env or '-'}** · engine {state.engine}\n\n"
            f"{inputs}\n\n"
            "_Executed by kit; secrets are redacted. The cells below are the step's notebook as it ran._"
        )

    # ---- retries -----------------------------------------------------------

    def _retry_of(self, state: _RunState, task: StepTask, result: StepResult) -> tuple[float, StepTask] | None:
        """The next attempt, due after exponential backoff with jitter, or None."""
        retries = state.workflow.steps[task.step_id].spec.retries
        attempt_here = task.attempt - state.attempts.get(task.step_id, 0)
        if result.ok or attempt_here >= retries.attempts:
            return None
        if retries.retry_on and result.error_type not in retries.retry_on:
            return None
        run_dir = self.project.runs_dir / state.run_id
        nxt = StepTask(
            **{
                **task.__dict__,
                "attempt": task.attempt + 1,
                "spool": str(run_dir / ".spool" / f"{task.step_id}-{task.attempt + 1}"),
            }
        )
        return time.monotonic() + backoff.delay(attempt_here, retries.backoff), nxt

    def _record_attempt(self, state: _RunState, result: StepResult) -> None:
        """A failed attempt that will be retried: its span and error, the step still running."""
        step, spans, outputs = self._result_rows(state, result)
        step["status"] = "running"
        state.pending.record_step(step, spans, outputs)

    # ---- the cache ---------------------------------------------------------

    def _cache_key(self, state: _RunState, sid: str, task: StepTask) -> str:
        """Notebook, inputs, components and environment config: unchanged means the same outputs."""
        step = state.workflow.steps[sid]
        base = step.home or state.workflow.dir
        lock = state.lock_of(step)
        files = lock["files"]
        notebook_key = (
            step.notebook.relative_to(base).as_posix() if step.notebook.is_relative_to(base) else str(step.notebook)
        )
        notebooks = {
            s.notebook.relative_to(base).as_posix()
            for s in state.workflow.steps.values()
            if s.notebook is not None and s.notebook.is_relative_to(base)
        }
        context = {k: v for k, v in files.items() if k not in notebooks and k != lock.get("manifest", "workflow.yaml")}
        return digest(
            {
                "notebook": files.get(notebook_key),
                "inputs": task.parameters,
                "outputs": task.outputs,
                "components": lock["components"],
                "resolved": state.lock.get("resolved"),
                "context": context,
                "env": state.env,
                "engine": state.engine,
                "kernel_env": {k: v for k, v in state.env_of(step).items() if k != "KIT_LLM_RECORDINGS"},
                **({"tools": kernel_tools(step, base)} if step.tools else {}),
            }
        )

    def _cached(self, state: _RunState, sid: str, task: StepTask, key: str) -> bool:
        """Reuse the outputs recorded under `key`, each re-checked against its object; a damaged one means
        the step runs afresh (said on stderr), and so does one whose cache cannot be read (the file held)."""
        try:
            hit, outputs = self.ledger.cache_lookup(key, state.run_id)
        except LedgerBusy as exc:
            print(f"warning: step {sid}: not looking in the cache: {exc.message}; the step runs", file=sys.stderr)
            return False
        if hit is None:
            return False
        origin = hit["origin"]
        if {o["name"] for o in outputs} != set(task.outputs):
            return False
        if any(REDACTED in canonical_json(out["value"]) for out in outputs):
            return False  # a redacted value cannot stand in for the real one
        try:
            checked = recorded_values(self.ledger, self.store, outputs)
        except MissingObject:
            return False
        except KitError as exc:
            print(f"warning: step {sid}: not reusing the cache: {exc.message}; the step runs afresh", file=sys.stderr)
            return False
        moment = utcnow()
        for name, value in checked.items():
            state.values[(sid, name)] = value
        state.statuses[sid] = "cached"
        state.pending.record_step(
            {
                "run_id": state.run_id,
                "step_id": sid,
                "status": "cached",
                "attempts": 0,
                "started_at": moment,
                "ended_at": moment,
                "duration_ms": 0.0,
                "cache_key": key,
                "cached_from": origin,
                "notebook": str(state.workflow.steps[sid].notebook),
                "executed_notebook": hit["executed_notebook"],
                "error_type": None,
                "error_message": None,
                "error_cell": None,
                "error_source": None,
                "traceback": None,
            },
            [
                {
                    "run_id": state.run_id,
                    "span_id": new_span_id(),
                    "parent_id": state.parent_span(state.workflow.steps[sid]),
                    "step_id": sid,
                    "name": sid,
                    "kind": "step",
                    "started_at": moment,
                    "ended_at": moment,
                    "status": "ok",
                    "attributes": {"cached_from": origin},
                }
            ],
            [{**o, "run_id": state.run_id, "step_id": sid} for o in outputs],
        )
        return True

    # ---- results -----------------------------------------------------------

    def _finish(self, state: _RunState, result: StepResult, failures: list[StepResult], progress: Progress) -> None:
        sid = result.step_id
        state.statuses[sid] = result.status
        state.redactor.add_secret_names(result.secrets)
        for name in ("error_message", "error_source", "traceback"):  # what the CLI prints is redacted too
            setattr(result, name, state.redactor.text(getattr(result, name)))
        if result.ok:
            for out in result.outputs:
                state.values[(sid, out.name)] = out.artifact if out.type == "table" else out.value
        else:
            failures.append(result)
        for warning in result.warnings:
            print(f"warning: step {sid}: {warning}", file=sys.stderr)
        state.pending.record_step(*self._result_rows(state, result))
        progress.advance(f"{sid}: {result.status}")

    def _result_rows(self, state: _RunState, result: StepResult) -> tuple[dict, list[dict], list[dict]]:
        """The step row's fields, the spans and the outputs of one attempt, redacted."""
        redactor = state.redactor
        redactor.add_secret_names(result.secrets)
        text = redactor.text
        sid, run_id = result.step_id, state.run_id
        step_row = {
            "run_id": run_id,
            "step_id": sid,
            "status": result.status,
            "attempts": result.attempt,
            "started_at": result.started_at,
            "ended_at": result.ended_at,
            "duration_ms": result.duration_ms,
            "notebook": str(state.workflow.steps[sid].notebook or state.workflow.steps[sid].spec.workflow),
            "executed_notebook": result.executed_notebook,
            "error_type": result.error_type,
            "error_message": text(result.error_message),
            "error_cell": result.error_cell,
            "error_source": text(result.error_source),
            "traceback": text(result.traceback),
        }
        # a workflow step's span is the one its inner steps already named as their parent
        is_workflow = state.workflow.steps[sid].is_workflow
        attempt_span = state.step_spans.setdefault(sid, new_span_id()) if is_workflow else new_span_id()
        spans = [
            {
                "run_id": run_id,
                "span_id": attempt_span,
                "parent_id": state.parent_span(state.workflow.steps[sid]),
                "step_id": sid,
                "name": sid,
                "kind": "step",
                "started_at": result.started_at,
                "ended_at": result.ended_at,
                "status": "ok" if result.ok else "error",
                "attributes": {
                    "attempt": result.attempt,
                    "duration_ms": result.duration_ms,
                    **({"error.type": result.error_type} if result.error_type else {}),
                },
            }
        ]
        for span in result.spans:
            spans.append(
                {
                    "run_id": run_id,
                    "span_id": span.get("span_id") or new_span_id(),
                    "parent_id": span.get("parent_id") or attempt_span,
                    "step_id": sid,
                    "name": str(span.get("name")),
                    "kind": str(span.get("kind") or "custom"),
                    "started_at": ledger_time(span.get("started_at")),
                    "ended_at": ledger_time(span.get("ended_at")),
                    "status": span.get("status") or "ok",
                    "attributes": _span_attributes(redactor, span.get("attributes") or {}),
                }
            )
        outputs = [self._output_row(state, sid, o) for o in result.outputs] if result.ok else []
        return step_row, spans, outputs

    def _output_row(self, state: _RunState, sid: str, out: OutputRecord) -> dict[str, Any]:
        """The output's ledger row; a JSON value (redacted) is also kept as an object, so reuse can check it."""
        value, artifact = out.value, out.artifact
        if out.type != "table":
            value = REDACTED if state.redactor.matches(out.name) else state.redactor.value(value)
            artifact = ref_of(self.store.put_bytes(canonical_bytes({"value": value})))
        return {
            "run_id": state.run_id,
            "step_id": sid,
            "name": out.name,
            "type": out.type,
            "value": value,
            "artifact": artifact,
            "size_bytes": out.size_bytes,
        }

    def _close(self, state: _RunState, run_started: str, failures: list[StepResult], waiting: list[str]) -> RunOutcome:
        statuses = state.statuses
        if any(s == "failed" for s in statuses.values()):
            run_status = "failed"
        elif any(s == "rejected" for s in statuses.values()):
            run_status = "rejected"
        elif waiting:
            run_status = "waiting"
        else:
            run_status = "succeeded"
        ended = utcnow()
        self.ledger.finish_run(
            state.run_id,
            run_status,
            None if run_status == "waiting" else ended,
            {
                "run_id": state.run_id,
                "span_id": state.run_span,
                "parent_id": None,
                "step_id": None,
                "name": state.workflow.name,
                "kind": "run",
                "started_at": run_started,
                "ended_at": ended,
                "status": run_status,
                "attributes": {"params": state.redactor.named(state.params)},
            },
            AuditEvent(state.principal, f"run.{run_status}", state.run_id, {"steps": dict(statuses)}),
            pending=state.pending,
        )
        return RunOutcome(
            run_id=state.run_id,
            status=run_status,
            steps=dict(statuses),
            failures=failures,
            bundle_id=state.lock["bundle_id"],
            waiting=waiting,
            values={f"{sid}.{name}": value for (sid, name), value in state.values.items()},
            reasons=dict(state.routed),
            redactor=state.redactor,
            workflow=state.workflow,
        )
