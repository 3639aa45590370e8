"""`kit verify`: check one bundle id, record the verdict, and write a verification record (DESIGN section 12).

Nothing unverified gets into a store, so `kit publish` calls `verify` (below) when the
bundle it publishes has no passing verification of its exact id. The checks, on the
workflow's files as they are now:

- scenarios: every scenario of the workflow (under the project's `scenarios/`) passes,
  offline (LLM calls replayed), on this bundle id; there is at least one;
- notebooks: every step notebook has a `parameters` cell and declared outputs;
- paths: no step notebook names a path outside its bundle. A heuristic: the code's
  string literals (and paths quoted inside them, as in SQL) that are absolute or climb
  out with `..`. A path built at run time is not seen;
- secrets: no credential in any file of the bundle (`kit.verification.secret_scan`);
- boundary: generated parameter values end in a clean run or a clean failure
  (`kit.verification.boundary`).

Every scenario and boundary case runs under one environment: `--env`, else the
project's default when the workflow declares it (a scenario's own `env:` is then
overridden, so that a verification is "of this bundle under ENV", as `kit promote`
needs; with no environment at all, a scenario keeps its own). Steps with no timeout get a
default one, so a hang fails the check instead of hanging the verification.

The result is a row of the ledger's `verifications` table (audited as
`bundle.verified` or `bundle.verification_failed`) and a record file,
`.kit/verifications/<bundle_id>/<verification_id>.json`: an in-toto Statement in a DSSE
envelope, signed with `--sign KEY` (`kit.bundles.attestation`).
"""

from __future__ import annotations

import ast
import json
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.base.clock import new_run_id, now
from kit.base.digests import sha256_file
from kit.base.display import brief, shorten
from kit.base.progress import Progress
from kit.errors import InvalidInput, KitError
from kit.spec.manifest import Workflow
from kit.spec.project import Project

CHECKS = ("scenarios", "notebooks", "paths", "secrets", "boundary")
RECORD_PACKAGES = ("papermill", "nbclient", "ipykernel", "duckdb", "pandas", "pyarrow", "jsonschema", "hypothesis")


@dataclass
class Check:
    """One check's verdict: a one-line summary, its problems (one line each), and details for the record."""

    name: str
    passed: bool = True
    summary: str = ""
    problems: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def fail(self, problem: str) -> None:
        self.passed = False
        self.problems.append(problem)


@dataclass
class Verification:
    bundle_id: str
    workflow: str
    version: str
    env: str | None
    passed: bool
    problems: list[str]
    verification_id: str
    record_path: Path
    envelope: dict[str, Any]
    signed: bool
    principal: str = ""
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def verdict(self) -> str:
        return "verified" if self.passed else "failed"


def verify(
    project: Project,
    workflow: Workflow | str | Path,
    env: str | None = None,
    principal: str | None = None,
    sign_key: str | Path | None = None,
    examples: int | None = None,
    progress: bool = False,
) -> Verification:
    """Verify the workflow's bundle as its files are now; record the result and write the record.

    `workflow` is a loaded Workflow or a reference (a manifest, its folder, a name). Bad
    input (an unknown environment, an unusable key, a malformed principal) raises
    InvalidInput before anything runs; a failing check does not raise: `passed` says.
    """
    from kit.bundles import attestation
    from kit.bundles.compose import lock_now
    from kit.execution.coordinator import Coordinator
    from kit.spec.policy import principal_problem, resolve_principal
    from kit.verification.boundary import executor_with_timeout

    t0 = time.perf_counter()
    if not isinstance(workflow, Workflow):
        workflow = project.load_workflow(project.find_workflow(str(workflow)))
    principal = resolve_principal(principal) if principal is None else principal
    if problem := principal_problem(principal):
        raise InvalidInput(f"--as: {problem}")
    if examples is not None and examples < 0:
        raise InvalidInput(f"--examples {examples}: expected 0 or more")
    if sign_key is not None:
        attestation.load_private_key(sign_key)  # an unusable key is refused before the work, not after
    coordinator = Coordinator(project, executor_factory=executor_with_timeout(), progress=False)
    env = coordinator.environment(workflow, env)  # an undeclared --env is refused here
    lock = lock_now(project, workflow)[0]  # with what its store ranges resolve to, as its runs record it
    bundle_id = lock["bundle_id"]

    checks = [
        check_scenarios(project, workflow, env, bundle_id, progress),
        check_notebooks(workflow),
        check_paths(workflow),
        check_secrets(workflow, lock),
        check_boundary(project, coordinator, workflow, env, principal, examples, progress),
    ]
    after = lock_now(project, workflow)[0]["bundle_id"]
    if after != bundle_id:  # the checks saw more than one bundle: none of them is verified
        changed = Check("bundle", summary="the files changed during verification")
        changed.fail(
            f"the workflow's files changed during verification ({bundle_id[:12]} -> {after[:12]}): verify again"
        )
        checks.append(changed)
    verification = record(project, coordinator.ledger, workflow, lock, env, principal, checks, sign_key)
    verification.seconds = time.perf_counter() - t0
    return verification


def record(
    project: Project,
    ledger,
    workflow: Workflow,
    lock: dict[str, Any],
    env: str | None,
    principal: str,
    checks: list[Check],
    sign_key: str | Path | None,
) -> Verification:
    """The verdict of `checks` as a record file (an in-toto statement in a DSSE envelope, signed when a key is
    given) and a `verifications` row with its audit entry; the row names the file, so the file comes first."""
    from kit.bundles import attestation
    from kit.ledger.audit import AuditEvent

    bundle_id = lock["bundle_id"]
    problems = [p for c in checks for p in c.problems]
    passed = not problems
    moment = now()
    verification_id = new_run_id()
    predicate = {
        "verdict": "verified" if passed else "failed",
        "problems": problems,
        "workflow": {
            "name": workflow.name,
            "version": workflow.version,
            "manifest": lock["manifest"],
            "components": lock["components"],
        },
        "bundle_id": bundle_id,
        "verification_id": verification_id,
        "environment": env,
        "principal": principal,
        "verified_at": moment.isoformat(timespec="milliseconds") + "Z",
        "evals": workflow.spec.evals,
        "checks": {
            c.name: {"passed": c.passed, "summary": c.summary, "problems": c.problems, **c.details} for c in checks
        },
        "runtime": runtime(project.root),
    }
    envelope = attestation.envelope(attestation.statement(attestation.subject_of(lock), predicate), sign_key)
    record_path = project.home / "verifications" / bundle_id / f"{verification_id}.json"
    write_record(record_path, envelope)
    digest = attestation.record_digest(envelope)
    signed = bool(envelope["signatures"])
    row = {
        "verification_id": verification_id,
        "bundle_id": bundle_id,
        "workflow": workflow.name,
        "version": workflow.version,
        "env": env,
        "principal": principal,
        "verdict": predicate["verdict"],
        "checks": {c.name: {"passed": c.passed, "summary": c.summary, "problems": c.problems} for c in checks},
        "record_digest": digest,
        "record_path": str(record_path),
        "signed": signed,
        "verified_at": moment.isoformat(sep=" "),
    }
    detail = {
        "workflow": workflow.name,
        "version": workflow.version,
        "env": env,
        "verification_id": verification_id,
        "record_digest": digest,
        "problems": len(problems),
    }
    action = "bundle.verified" if passed else "bundle.verification_failed"
    ledger.record_verification(row, AuditEvent(principal, action, bundle_id, detail))
    return Verification(
        bundle_id=bundle_id,
        workflow=workflow.name,
        version=workflow.version,
        env=env,
        passed=passed,
        problems=problems,
        verification_id=verification_id,
        record_path=record_path,
        envelope=envelope,
        signed=signed,
        principal=principal,
        checks=checks,
    )


def write_record(path: Path, envelope: dict[str, Any]) -> None:
    """The record, whole or not at all (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(envelope, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def runtime(root: Path) -> dict[str, Any]:
    """kit, Python and package versions, and the git commit: what ran the checks."""
    from importlib import metadata

    from kit.execution.provenance import provenance

    packages = {}
    for name in RECORD_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        **provenance(root),
        "python_implementation": platform.python_implementation(),
        "platform": sys.platform,
        "packages": packages,
    }


# ---- scenarios -----------------------------------------------------------------


def scenario_paths(project: Project, workflow: Workflow) -> tuple[list[Path], list[str]]:
    """The workflow's scenario files under `scenarios/`, and a problem for each unreadable one that names it."""
    from kit.spec.project import declared_name
    from kit.spec.scenario import discover
    from kit.verification.scenarios import load_scenario

    folder = project.root / "scenarios"
    if not folder.is_dir():
        return [], []
    paths, problems = [], []
    for path in discover([folder]):
        try:
            scenario = load_scenario(path, root=project.root)
        except KitError as exc:
            if declared_name(path) == workflow.name:
                problems.append(f"scenario {path}: invalid: {exc.message.splitlines()[0]}")
            continue
        if scenario.workflow == workflow.name:
            paths.append(path)
    return paths, problems


def _runner(project: Project, workflow: Workflow, env: str | None):
    """A scenario runner that runs every scenario on `workflow` as loaded (this bundle), under `env`, offline."""
    from kit.execution.environment import LLMSettings, model_config
    from kit.verification.boundary import executor_with_timeout
    from kit.verification.suite import ScenarioRunner

    provider = model_config(workflow, env).get("provider")

    class BundleRunner(ScenarioRunner):
        def workflow(self, name: str) -> Workflow:
            return workflow if name == workflow.name else super().workflow(name)

        def prepare(self, path: Path):
            """The scenario under the verification's environment, when there is one (else under its own)."""
            scenario, wf = super().prepare(path)
            return (scenario.model_copy(update={"env": env}) if env is not None else scenario), wf

        def llm_settings(self, scenario) -> LLMSettings:
            """Replayed; live only for the offline, deterministic fake provider when there is nothing to replay."""
            recordings = scenario.recordings_path
            if provider == "fake" and (recordings is None or not recordings.is_file()):
                return LLMSettings(mode="live", recordings=None)
            return LLMSettings(mode="replay", recordings=recordings)

    runner = BundleRunner(project, command="test")
    runner.coordinator.executor_factory = executor_with_timeout()
    return runner


def check_scenarios(project: Project, workflow: Workflow, env: str | None, bundle_id: str, progress: bool) -> Check:
    check = Check("scenarios")
    paths, unreadable = scenario_paths(project, workflow)
    for problem in unreadable:
        check.fail(problem)
    if not paths and not unreadable:
        check.fail(
            f"no scenarios: the workflow {workflow.name} has none under {project.root / 'scenarios'} "
            f"(write one from a run with: kit capture RUN -o scenarios/{workflow.name}/NAME.yaml)"
        )
    runner = _runner(project, workflow, env)
    shown = Progress(len(paths), "scenarios run", enabled=None if progress else False)
    records = []
    for result in runner.map(runner.run, paths, shown):  # as `kit test`: a scenario a core at once
        records.append(_scenario_record(runner, result, project.root))
        if result.invalid:
            check.fail(f"scenario {result.name}: invalid: {result.invalid.splitlines()[0]}")
            continue
        if result.bundle_id != bundle_id:
            check.fail(
                f"scenario {result.name}: ran on bundle {str(result.bundle_id)[:12]}, not {bundle_id[:12]} "
                "(the files changed meanwhile)"
            )
        if not result.passed:
            check.fail(f"scenario {result.name}: {_why_failed(result, runner.coordinator.ledger)}")
    shown.close()
    passed = sum(1 for r in records if r["verdict"] == "pass")
    check.summary = f"{passed}/{len(paths)} scenarios passed" + (
        f", {len(unreadable)} unreadable" if unreadable else ""
    )
    check.details = {"scenarios": records}
    return check


def _why_failed(result, ledger) -> str:
    """One line: the step that failed the run, else the first failing expectation, expected beside actual."""
    failures = result.failures()
    if result.run_status == "failed":
        failed = next((s for s in ledger.steps(result.run_id) if s["status"] == "failed"), None)
        if failed is not None:
            message = shorten((failed["error_message"] or "").strip(), 160)
            return f"the run failed: step {failed['step_id']}: {failed['error_type']}: {message} (kit show {result.run_id})"
    if not failures:
        return f"the run ended {result.run_status} (kit show {result.run_id})"
    expectation, outcome = failures[0]
    more = f" (and {len(failures) - 1} more failing expectation(s))" if len(failures) > 1 else ""
    return (
        f"{expectation.key} [{expectation.comparator}] {outcome.verdict}: expected {brief(outcome.expected, 80)}, "
        f"actual {brief(outcome.actual, 80)} ({result.scenario.where(expectation)}){more}"
    )


def _scenario_record(runner, result, root: Path) -> dict[str, Any]:
    """A scenario's verdict for the record: its run and bundle, LLM mode and recording digest, each expectation."""
    scenario = result.scenario
    path = Path(result.path).resolve()
    record: dict[str, Any] = {
        "scenario": result.name,
        "file": path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path),
        "verdict": "pass" if result.passed else ("invalid" if result.invalid else "fail"),
        "run_id": result.run_id,
        "run_status": result.run_status,
        "bundle_id": result.bundle_id,
    }
    if result.invalid:
        record["invalid"] = result.invalid
        return record
    recordings = scenario.recordings_path
    settings = runner.llm_settings(scenario)
    record["env"] = scenario.env
    record["llm_mode"] = settings.mode
    record["recordings"] = (
        {"path": scenario.recordings, "sha256": sha256_file(recordings) if recordings.is_file() else None}
        if recordings is not None
        else None
    )
    record["expectations"] = [
        {
            "key": e.key,
            "comparator": e.comparator,
            "settings": e.spec,
            "verdict": o.verdict,
            **({"detail": shorten(o.detail, 300)} if not o.passed and o.detail else {}),
        }
        for e, o in result.checks
    ]
    return record


# ---- notebooks and paths -------------------------------------------------------


def _notebook(path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        return json.load(fh)


def _code_cells(nb: dict[str, Any]) -> list[tuple[int, str]]:
    """(cell number from 1, source) of each code cell."""
    out = []
    for index, cell in enumerate(nb.get("cells") or [], start=1):
        if isinstance(cell, dict) and cell.get("cell_type") == "code":
            source = cell.get("source", "")
            out.append((index, "".join(source) if isinstance(source, list) else str(source)))
    return out


def check_notebooks(workflow: Workflow) -> Check:
    """Every step notebook has a `parameters` cell and declares outputs (an approval step has neither)."""
    from kit.spec.notebooks import parameters_cell_index

    check = Check("notebooks")
    steps = [s for s in workflow.steps.values() if s.notebook is not None]
    for step in steps:
        try:
            nb = _notebook(step.notebook)
        except (OSError, ValueError) as exc:
            check.fail(f"step {step.id}: {step.notebook.name}: not a readable notebook: {exc}")
            continue
        if parameters_cell_index(nb) is None:
            check.fail(f"step {step.id}: {step.notebook.name} has no cell tagged 'parameters'")
        if not step.spec.outputs:
            check.fail(
                f"step {step.id}: declares no outputs (declare what it produces under steps.{step.id}.outputs, "
                "so its results are typed and recorded)"
            )
    check.summary = f"{len(steps)} step notebook(s) checked"
    return check


_MAGIC = re.compile(r"^\s*[%!]")
_QUOTED = re.compile(r"""'([^'\s]+)'|"([^"\s]+)\"""")
_WINDOWS_ABSOLUTE = re.compile(r"^[A-Za-z]:[\\/]")


def outside_bundle(literal: str) -> str | None:
    """Why a string literal looks like a path outside the bundle (absolute, or climbing with `..`), or None."""
    candidates = [literal] + [a or b for a, b in _QUOTED.findall(literal)]
    for text in candidates:
        if not text or any(c.isspace() for c in text) or "://" in text:
            continue
        if (text.startswith("/") and len(text) > 1 and not text.startswith("//")) or _WINDOWS_ABSOLUTE.match(text):
            return f"{text!r} is an absolute path"
        if text == "~" or text.startswith(("~/", "\\\\")):
            return f"{text!r} is outside the bundle"
        if ".." in re.split(r"[\\/]", text):
            return f"{text!r} climbs out with '..'"
    return None


def path_literals(source: str) -> list[tuple[int, str]]:
    """(line, literal) of every string constant in a cell's code; IPython magics and shell lines are skipped."""
    code = "\n".join("" if _MAGIC.match(line) else line for line in source.splitlines())
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return [(number, a or b) for number, line in enumerate(code.splitlines(), 1) for a, b in _QUOTED.findall(line)]
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def check_paths(workflow: Workflow) -> Check:
    """No step notebook names a path outside its bundle (a heuristic over string literals)."""
    check = Check("paths")
    count = 0
    for step in workflow.steps.values():
        if step.notebook is None:
            continue
        try:
            cells = _code_cells(_notebook(step.notebook))
        except (OSError, ValueError):
            continue  # the notebooks check names it
        for index, source in cells:
            for line, literal in path_literals(source):
                count += 1
                why = outside_bundle(literal)
                if why:
                    check.fail(
                        f"step {step.id}: {step.notebook.name}: cell {index}, line {line}: {why}: "
                        "a step reads only files of its bundle (relative to its notebook's folder)"
                    )
    check.summary = f"{count} string literal(s) checked (a heuristic: paths built at run time are not seen)"
    return check


# ---- secrets -------------------------------------------------------------------


def check_secrets(workflow: Workflow, lock: dict[str, Any]) -> Check:
    from kit.execution.environment import model_config
    from kit.verification.secret_scan import scan_bundle, secret_names

    check = Check("secrets")
    configs = []
    for env in [None, *workflow.spec.environments]:
        try:
            configs.append(model_config(workflow, env))
        except KitError:
            continue  # a broken model config fails its runs; it is no secret
    notebooks = [s.notebook for s in workflow.steps.values() if s.notebook is not None]
    names = secret_names(notebooks, configs)
    findings = scan_bundle(workflow.dir, list(lock["files"]), names)
    for finding in findings:
        check.fail(f"secret in the bundle: {finding} (remove it; read secrets at run time with kit.secret)")
    checked = [n for n in names if os.environ.get(n)]
    check.summary = f"{len(lock['files'])} file(s) scanned" + (
        f", the values of {', '.join('$' + n for n in checked)} looked for" if checked else ""
    )
    check.details = {"files": len(lock["files"]), "env_names": names, "env_values_checked": checked}
    return check


# ---- boundary cases ------------------------------------------------------------


def base_params(project: Project, workflow: Workflow) -> tuple[dict[str, Any], str | None, list[str]]:
    """A working set of parameters to vary one at a time, and who the runs act as: the first scenario's
    (known to work, by someone allowed to run the workflow), else the defaults and a plain value. Also the
    values the scenario read from the environment (`{env: NAME}`): secrets, to keep out of the record."""
    from kit.verification.boundary import plain_value
    from kit.verification.scenarios import load_scenario

    given: dict[str, Any] = {}
    principal, secrets = None, []
    for path in scenario_paths(project, workflow)[0]:
        try:
            scenario = load_scenario(path, root=project.root)
            given = scenario.resolved_params()
        except KitError:
            continue
        principal = scenario.principal
        secrets = [given[k] for k, v in scenario.params.items() if isinstance(v, dict) and set(v) == {"env"}]
        break
    base = {}
    for name, spec in workflow.spec.params.items():
        if name in given:
            base[name] = given[name]
        elif not spec.required:
            base[name] = spec.default
        else:
            base[name] = plain_value(spec)
    return base, principal, secrets


def check_boundary(
    project: Project,
    coordinator,
    workflow: Workflow,
    env: str | None,
    principal: str,
    examples: int | None,
    progress: bool,
) -> Check:
    from kit.execution.engines import default_engine
    from kit.execution.environment import model_config
    from kit.spec.policy import Redactor
    from kit.verification.boundary import BoundaryCheck

    check = Check("boundary")
    base, runs_as, secrets = base_params(project, workflow)
    redactor = Redactor(workflow.spec.policy.redact)
    redactor.add_secrets(secrets + redactor.secret_values_of(base))
    llm_mode = "live" if model_config(workflow, env).get("provider") == "fake" else "replay"
    boundary = BoundaryCheck(
        coordinator,
        workflow,
        env,
        runs_as or principal,
        base,
        engine=default_engine("test"),
        llm_mode=llm_mode,
        examples=examples,
        progress=progress,
        storage=project.home / "hypothesis",
        redactor=redactor,
    )
    result = boundary.run()
    if problem := result.problem():
        check.fail(problem)
    counts: dict[str, int] = {}
    for case in result.cases:
        counts[case.verdict] = counts.get(case.verdict, 0) + 1
    if not workflow.spec.params:
        check.summary = "no declared parameters: nothing to vary"
    else:
        check.summary = f"{len(result.cases)} case(s): " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
        if result.shrink_cut:
            check.summary += " (shrinking stopped at its budget)"
    check.details = {
        "settings": result.settings,
        "cases": [c.record() for c in result.cases],
        "failing_case": result.failure.record() if result.failure else None,
    }
    return check


# ---- what `kit verify` prints --------------------------------------------------


def report_text(verification: Verification) -> str:
    lines = [
        f"verify {verification.workflow} {verification.version}  bundle {verification.bundle_id[:12]}  "
        f"env {verification.env or '-'}  as {verification.principal}"
    ]
    for check in verification.checks:
        lines.append(f"  {check.name:<10} {'ok' if check.passed else 'FAILED':<7} {check.summary}")
    if verification.problems:
        lines.append("")
        lines += [f"  - {p}" for p in verification.problems]
    lines.append("")
    signed = " (signed)" if verification.signed else ""
    lines.append(f"record: {verification.record_path}{signed}")
    verdict = "verified" if verification.passed else f"NOT verified: {len(verification.problems)} problem(s)"
    lines.append(
        f"{verification.workflow} {verification.version} ({verification.bundle_id[:12]}) {verdict} "
        f"in {verification.seconds:.1f}s"
    )
    return "\n".join(lines)
