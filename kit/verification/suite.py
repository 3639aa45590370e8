"""The scenario suite: scenarios run as regression tests (`kit test`, and the pytest plugin).

Each scenario runs its workflow with its parameters, environment and principal;
every expectation is checked by its comparator and recorded in the ledger's
`comparisons` table; `evals.pass_rate` gates each workflow's suite. An invalid
scenario file is reported (exit 2) without affecting the others.

Scenarios run concurrently, `workers` at a time (default: the core count), each
scenario's chain as one unit, on threads of this process: one coordinator (one
ledger, written by this process only, its transactions serialized by the ledger's
per-process guard) drives them all, and their steps share one pool of `workers`
step threads. Results are reported in the order of the files, whatever order the
scenarios finish in. Ctrl-C (or SIGTERM) cancels every running scenario: each run
ends `cancelled` and stays resumable, and the scenarios not yet started do not start.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.base.clock import utcnow
from kit.base.display import brief
from kit.base.progress import Progress
from kit.base.values import jsonable
from kit.errors import EXIT_FAILED, EXIT_INVALID, EXIT_OK, InvalidInput, KitError
from kit.execution.coordinator import Coordinator, RunRequest
from kit.execution.engines import default_engine
from kit.execution.environment import LLMSettings, task_environment
from kit.spec.manifest import Workflow
from kit.spec.policy import resolve_principal
from kit.spec.project import Project
from kit.spec.scenario import Expectation, Scenario, discover, validate_against
from kit.verification.comparators import Outcome, evaluate
from kit.verification.scenarios import compare_context, load_scenario


@dataclass
class ScenarioResult:
    path: Path
    scenario: Scenario | None = None
    workflow: str | None = None
    run_id: str | None = None
    run_status: str | None = None
    checks: list[tuple[Expectation, Outcome]] = field(default_factory=list)
    invalid: str | None = None  # why the scenario could not be run
    seconds: float = 0.0
    values: dict[str, Any] = field(default_factory=dict)  # the run's outputs, "STEP.OUTPUT" -> value or ref
    bundle_id: str | None = None

    @property
    def passed(self) -> bool:
        """Every expectation holds, and the run did not fail (a run waiting at an approval may pass)."""
        return self.invalid is None and self.run_status != "failed" and all(o.passed for _, o in self.checks)

    @property
    def name(self) -> str:
        return self.scenario.id if self.scenario else str(self.path)

    def failures(self) -> list[tuple[Expectation, Outcome]]:
        return [(e, o) for e, o in self.checks if not o.passed]


@dataclass
class WorkflowGate:
    workflow: str
    passed: int
    total: int
    pass_rate: float

    @property
    def holds(self) -> bool:
        return self.total == 0 or self.passed / self.total >= self.pass_rate - 1e-12


@dataclass
class SuiteResult:
    results: list[ScenarioResult]
    gates: list[WorkflowGate]

    @property
    def exit_code(self) -> int:
        if any(r.invalid for r in self.results):
            return EXIT_INVALID
        if not all(g.holds for g in self.gates):
            return EXIT_FAILED
        return EXIT_OK


class ScenarioRunner:
    """Runs scenarios of one project; loads each workflow once."""

    def __init__(self, project: Project, workers: int | None = None, engine: str | None = None, command: str = "test"):
        self.project = project
        self.coordinator = Coordinator(project, progress=False)
        #: scenarios run at once, and the steps of all of them at once (one shared pool of step threads)
        self.workers = workers or os.cpu_count() or 1
        self.engine = engine or default_engine(command)
        self._workflows: dict[str, Workflow] = {}
        self._loading = threading.Lock()

    def workflow(self, name: str) -> Workflow:
        with self._loading:  # scenarios of one workflow, in parallel, load it once
            if name not in self._workflows:
                path = self.project.find_workflow_by_name(name)
                if path is None:
                    raise InvalidInput(f"no workflow named {name!r} under {self.project.root}")
                self._workflows[name] = self.project.load_workflow(path)
            return self._workflows[name]

    def map(self, work, paths: list[Path], progress: Progress | None = None) -> list:
        """`work(path)` for every path, `self.workers` at a time; the results in the order of `paths`.

        A scenario's failure is its result; an exception (a baseline that cannot be had) is raised once
        every scenario has ended. Ctrl-C or SIGTERM (in the calling, main thread) cancels the running
        scenarios (their runs end `cancelled`, resumable) and starts no more; then it is raised."""
        from concurrent.futures import ThreadPoolExecutor

        coordinator = self.coordinator
        coordinator.cancelled.clear()

        def one(path: Path):
            if coordinator.cancelled.is_set():
                return None
            result = work(path)
            if progress is not None:
                progress.advance(getattr(result, "name", "") or "", passed=getattr(result, "passed", None))
            return result

        try:
            if self.workers <= 1 or len(paths) <= 1:
                return [one(path) for path in paths]
            pool = ThreadPoolExecutor(max_workers=min(self.workers, len(paths)), thread_name_prefix="kit-scenario")
            futures = [pool.submit(one, path) for path in paths]
            try:
                for future in futures:
                    future.exception()  # waits; interruptible by Ctrl-C here, in the main thread
            except KeyboardInterrupt:
                from kit.base import interrupts
                from kit.execution import engines

                with interrupts.held():  # a second Ctrl-C must not cut the cancellation short
                    coordinator.cancelled.set()
                    for future in futures:
                        future.cancel()
                    engines.cancel_running()
                    pool.shutdown(wait=True)
                raise
            pool.shutdown(wait=True)
            return [future.result() for future in futures]
        finally:
            imports_done()  # whoever runs scenarios (kit test, kit verify) ends no import midway

    def llm_settings(self, scenario: Scenario) -> LLMSettings:
        """Scenarios replay their recorded LLM calls unless they (or $KIT_LLM_MODE) say otherwise."""
        mode = scenario.llm_mode or os.environ.get("KIT_LLM_MODE") or "replay"
        return LLMSettings(mode=mode, recordings=scenario.recordings_path)

    def prepare(self, path: Path) -> tuple[Scenario, Workflow]:
        """Load and check a scenario against its workflow; InvalidInput when it cannot run."""
        scenario = load_scenario(path)
        try:
            workflow = self.workflow(scenario.workflow)
        except InvalidInput as exc:
            raise InvalidInput(f"{scenario.where()}: workflow {scenario.workflow!r}: {exc.message}") from None
        validate_against(scenario, {sid: set(s.spec.outputs) for sid, s in workflow.steps.items()})
        return scenario, workflow

    def run(self, path: Path, workflow: Workflow | None = None, baseline_of: str | None = None) -> ScenarioResult:
        """Run one scenario, on its current workflow or on `workflow` (a baseline bundle)."""
        t0 = time.perf_counter()
        result = ScenarioResult(path=path)
        try:
            scenario, current = self.prepare(path)
            result.scenario = scenario
        except KitError as exc:
            result.invalid = exc.message
            result.seconds = time.perf_counter() - t0
            return result
        workflow = workflow or current
        if any(e.comparator == "table" for e in scenario.expect):
            _import_pandas_meanwhile()
        try:
            outcome = self.coordinator.run(
                RunRequest(
                    workflow=workflow,
                    params=scenario.resolved_params(),
                    principal=resolve_principal(scenario.principal),
                    approvals=dict(scenario.approve),
                    env=scenario.env,
                    workers=self.workers,
                    engine=self.engine,
                    scenario_id=scenario.id,
                    baseline_of=baseline_of,
                    llm=self.llm_settings(scenario),
                )
            )
        except KitError as exc:  # its parameters, environment or principal do not fit the workflow
            result.invalid = f"{scenario.where()}: {exc.message}"
            result.seconds = time.perf_counter() - t0
            return result
        result.workflow = workflow.name
        if self.llm_settings(scenario).mode == "record" and scenario.recordings_path is not None:
            from kit.kernel.recordings import write_recordings
            from kit.verification.capture import llm_calls

            write_recordings(
                llm_calls(self.coordinator.ledger, self.coordinator.store, outcome.run_id), scenario.recordings_path
            )
        result.run_id, result.run_status = outcome.run_id, outcome.status
        result.values, result.bundle_id = outcome.values, outcome.bundle_id
        ctx = compare_context(scenario, load_table=self._load_table, **self.services(scenario, workflow))
        failed_steps = {f.step_id: f for f in outcome.failures}
        redactor = outcome.redactor
        for expectation in scenario.expect:
            if expectation.on_status:
                check = status_check(expectation, outcome)
            else:
                check = evaluate(expectation, outcome.values, ctx)
            failure = failed_steps.get(expectation.step)
            if expectation.on_status:
                pass
            elif failure and expectation.output_key not in outcome.values:
                check.detail += f" (step {expectation.step} failed: {failure.error_type}: {failure.error_message})"
            elif expectation.output_key not in outcome.values and outcome.steps.get(expectation.step) == "skipped":
                why = outcome.reasons.get(expectation.step) or (
                    "an upstream step failed"
                    if failed_steps
                    else "it comes after an approval gate; scenario runs stop there unless `approve:` decides it"
                )
                check.detail += f" (step {expectation.step} was skipped: {why})"
            if redactor is not None:  # what kit prints and keeps of a comparison holds no secret (DESIGN 11)
                check.expected = redactor.value(jsonable(check.expected))
                check.actual = redactor.value(jsonable(check.actual))
                check.detail = redactor.text(check.detail) or ""
            result.checks.append((expectation, check))
        self._record(result, outcome.bundle_id)
        result.seconds = time.perf_counter() - t0
        return result

    def services(self, scenario: Scenario, workflow: Workflow) -> dict[str, Any]:
        """Services for the scenario's comparators: a judge (kit.judge) when an expectation asks for one.

        The judge uses the model config, LLM mode and recordings the scenario's run had, so its
        verdicts are recorded with the run's calls and replayed with them.
        """
        if not any(e.comparator == "judge" for e in scenario.expect):
            return {}
        from kit.verification.comparators.judge import Judge

        try:
            env = task_environment(workflow, scenario.env, self.llm_settings(scenario))
        except KitError as exc:  # a broken model config fails the judged expectations only
            return {"judge": Judge.unavailable(f"cannot configure the model: {exc.message}", scenario=scenario.path)}
        return {"judge": Judge.from_environment(env, scenario=scenario.path)}

    def _load_table(self, ref: Any):
        import pandas as pd

        from kit.ledger.objects import CorruptObject

        if isinstance(ref, str) and ref.startswith("artifact:sha256:"):
            try:
                return pd.read_parquet(self.coordinator.store.verified_path(ref))
            except CorruptObject as exc:
                raise exc.made_by(self.coordinator.ledger.object_origin(ref)) from None
        from kit.kernel.api import load

        return load(ref)

    def _record(self, result: ScenarioResult, bundle_id: str) -> None:
        now = utcnow()
        rows = [
            {
                "run_id": result.run_id,
                "scenario_id": result.scenario.id,
                "bundle_id": bundle_id,
                "expectation": e.key,
                "comparator": e.comparator,
                "expected": jsonable(o.expected),
                "actual": jsonable(o.actual),
                "verdict": o.verdict,
                "detail": o.detail,
                "scenario_file": str(result.path),
                "line": e.line,
                "recorded_at": now,
            }
            for e, o in result.checks
        ]
        self.coordinator.ledger.record_comparisons(rows)


_DID = {
    "succeeded": "it succeeded",
    "cached": "it succeeded (its outputs reused)",
    "failed": "it failed",
    "skipped": "it was skipped",
    "approved": "it was approved",
    "rejected": "it was rejected",
    "waiting": "it is waiting for approval",
    "cancelled": "it was cancelled",
    "pending": "it never started",
    "running": "it never finished",
}


def status_check(expectation: Expectation, outcome) -> Outcome:
    """`STEP: {status: skipped}` against what the step did in the run (`succeeded` holds for `cached` too)."""
    expected = expectation.spec["status"]
    actual = outcome.steps.get(expectation.step, "pending")
    holds = actual == expected or (expected == "succeeded" and actual == "cached")
    if holds:
        return Outcome("pass", f"step {expectation.step} {actual}", expected=expected, actual=actual)
    did = _DID.get(actual, f"it ended {actual}")
    if actual == "skipped":
        failed = {f.step_id for f in outcome.failures}
        why = outcome.reasons.get(expectation.step) or ("an upstream step failed" if failed else "")
        did += f": {why}" if why else ""
    elif actual == "failed":
        failure = next((f for f in outcome.failures if f.step_id == expectation.step), None)
        did += f": {failure.error_type}: {failure.error_message}" if failure else ""
    return Outcome(
        "fail", f"step {expectation.step} was expected {expected}, but {did}", expected=expected, actual=actual
    )


_PANDAS_ONCE = threading.Lock()  # taken once, by the first scenario that needs pandas, and kept
_PANDAS_THREADS: list[threading.Thread] = []


def _import_pandas_meanwhile() -> None:
    """Import pandas (≈ 0.4 s) on a thread of its own while the scenario's run goes on: its table
    expectations need it once the run is done, and the run waits on the ledger and on its steps."""
    import sys

    if "pandas" in sys.modules or not _PANDAS_ONCE.acquire(blocking=False):
        return

    def load() -> None:
        try:
            import pandas  # noqa: F401
        except ImportError:  # the comparator says so when it needs it
            pass

    thread = threading.Thread(target=load, name="kit-import-pandas", daemon=True)
    _PANDAS_THREADS.append(thread)
    thread.start()


def imports_done() -> None:
    """Let an import begun on a thread end before the suite does (an interpreter exiting mid-import
    can fail in odd ways)."""
    for thread in _PANDAS_THREADS:
        thread.join()


def select_scenarios(paths: Iterable[Path], tags: Iterable[str] = (), workflow: str | None = None) -> list[Path]:
    """Scenario files under `paths`, filtered by tag and workflow (unreadable files are kept: they report)."""
    tags = set(tags)
    chosen = []
    for path in discover(paths):
        if tags or workflow:
            try:
                scenario = load_scenario(path)
            except KitError:
                chosen.append(path)
                continue
            if tags and not tags & set(scenario.tags):
                continue
            if workflow and scenario.workflow != workflow:
                continue
        chosen.append(path)
    return chosen


def run_suite(runner: ScenarioRunner, paths: list[Path], progress: bool = False) -> SuiteResult:
    """Every scenario of `paths` (`runner.workers` at a time), then each workflow's `evals.pass_rate` gate;
    results in the order of `paths`."""
    shown = Progress(len(paths), "scenarios run", enabled=None if progress else False)
    try:
        results = runner.map(runner.run, paths, shown)
    finally:
        shown.close()
    gates: dict[str, WorkflowGate] = {}
    for result in results:
        if result.workflow is None:
            continue
        if result.workflow not in gates:
            rate = float(runner.workflow(result.workflow).spec.evals.get("pass_rate", 1.0))
            gates[result.workflow] = WorkflowGate(result.workflow, 0, 0, rate)
        gates[result.workflow].total += 1
        gates[result.workflow].passed += int(result.passed)
    return SuiteResult(results, list(gates.values()))


# ---- reporting -----------------------------------------------------------------


def explain(expectation: Expectation, outcome: Outcome, where: str) -> str:
    """Expected and actual side by side, then the comparator's explanation."""
    lines = [
        f"  {expectation.key}  [{expectation.comparator}] {outcome.verdict}  ({where})",
        f"    expected: {brief(outcome.expected, 300)}",
        f"    actual:   {brief(outcome.actual, 300)}",
    ]
    if outcome.detail:
        lines += ["    " + line for line in outcome.detail.splitlines()]
    return "\n".join(lines)


def report_text(suite: SuiteResult) -> str:
    out = []
    for result in suite.results:
        if result.invalid:
            out.append(f"INVALID {result.path}\n  {result.invalid}")
        elif not result.passed:
            out.append(f"FAIL {result.name}  (run {result.run_id}, {result.run_status})")
            if result.run_status == "failed":
                out.append(f"  the run failed: kit show {result.run_id}")
            for expectation, outcome in result.failures():
                out.append(explain(expectation, outcome, result.scenario.where(expectation)))
    out.append("")
    for gate in suite.gates:
        verdict = "ok" if gate.holds else "FAILED"
        out.append(
            f"{gate.workflow}: {gate.passed}/{gate.total} scenarios passed "
            f"(pass_rate {gate.pass_rate:g} required): {verdict}"
        )
    invalid = sum(1 for r in suite.results if r.invalid)
    if invalid:
        out.append(f"{invalid} invalid scenario file(s)")
    passed = sum(1 for r in suite.results if r.passed)
    failed = len(suite.results) - passed - invalid
    out.append(f"{passed} passed, {failed} failed" + (f", {invalid} error" if invalid else ""))
    return "\n".join(out)


def write_junit(suite: SuiteResult, path: Path) -> None:
    """JUnit XML: a testsuite per workflow, a testcase per scenario."""
    import xml.etree.ElementTree as ET

    root = ET.Element("testsuites", name="kit")
    by_suite: dict[str, list[ScenarioResult]] = {}
    for result in suite.results:
        by_suite.setdefault(result.workflow or "invalid", []).append(result)
    for name, results in by_suite.items():
        failures = sum(1 for r in results if not r.invalid and not r.passed)
        errors = sum(1 for r in results if r.invalid)
        ts = ET.SubElement(
            root,
            "testsuite",
            name=name,
            tests=str(len(results)),
            failures=str(failures),
            errors=str(errors),
            time=f"{sum(r.seconds for r in results):.3f}",
        )
        for result in results:
            case = ET.SubElement(
                ts, "testcase", classname=name, name=result.name, file=str(result.path), time=f"{result.seconds:.3f}"
            )
            if result.invalid:
                ET.SubElement(
                    case, "error", message=result.invalid.splitlines()[0], type="InvalidScenario"
                ).text = result.invalid
            elif not result.passed:
                fails = result.failures()
                message = "; ".join(f"{e.key}: {o.verdict}" for e, o in fails)
                text = "\n".join(explain(e, o, result.scenario.where(e)) for e, o in fails)
                ET.SubElement(case, "failure", message=message, type="ScenarioFailed").text = text
            if result.run_id:
                props = ET.SubElement(case, "properties")
                ET.SubElement(props, "property", name="run_id", value=result.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
