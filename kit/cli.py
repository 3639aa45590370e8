"""The `kit` command line. Thin: it parses options and calls the layers below.

A user's mistake ends in one clear message and the design's exit code (2 invalid
input, 4 denied), never a traceback: `KitGroup` turns every `KitError` into that, in
one place. Heavy imports stay inside the commands, so the CLI starts fast.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any

import click

from kit.base.display import brief, cell
from kit.base.values import jsonable
from kit.errors import EXIT_INVALID, InvalidInput, KitError


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class KitGroup(click.Group):
    """kit's command group: a `KitError` from any command becomes its message and exit code; an I/O
    fault (a full disk, a file that cannot be read) one line and exit 1. ``KIT_DEBUG=1`` shows tracebacks."""

    def invoke(self, ctx: click.Context):
        import os

        try:
            return super().invoke(ctx)
        except KitError as exc:
            _fail(exc.message, exc.exit_code)
        except OSError as exc:
            if os.environ.get("KIT_DEBUG"):
                raise
            from kit.errors import NoSpace, is_no_space

            if is_no_space(exc):
                _fail(NoSpace.writing(exc.filename or "the disk").message, 1)
            _fail(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), 1)


class EngineType(click.ParamType):
    """An engine's name, checked against the engine registry (kit's own and plugins)."""

    name = "engine"

    def get_metavar(self, param, ctx=None) -> str:
        from kit.execution.engines import ENGINES

        return "[" + "|".join(ENGINES.declared()) + "]"

    def convert(self, value, param, ctx):
        from kit.execution.engines import get_engine

        try:
            return get_engine(value).name
        except KitError as exc:
            self.fail(exc.message, param, ctx)


class Context:
    def __init__(self, project_dir: str | None):
        self.project_dir = project_dir

    @functools.cached_property
    def project(self):
        from kit.spec.project import Project

        return Project.discover(self.project_dir)

    @functools.cached_property
    def ledger(self):
        from kit.ledger.ledger import Ledger

        return Ledger(self.project.ledger_path)


pass_context = click.make_pass_decorator(Context)
ENGINE = click.option(
    "--engine",
    type=EngineType(),
    default=None,
    help="How steps execute. papermill: a fresh kernel per step (exact Jupyter semantics); "
    "warm: a kernel reused per worker, namespace reset per step (fast). "
    "Default: KIT_ENGINE, else the command's own.",
)
FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True
)
EXECUTOR = click.option(
    "--executor",
    type=click.Choice(["local", "dask"]),
    default=None,
    help="Where steps execute: local (worker threads here, the default) or dask (a dask.distributed cluster).",
)
SCHEDULER = click.option(
    "--scheduler", default=None, metavar="ADDRESS", help="The Dask scheduler (default: $KIT_DASK_SCHEDULER)."
)


def executor_factory(executor: str | None, scheduler: str | None):
    """None for the local executor; for dask, a factory connected to the scheduler (exit 2 if it cannot be)."""
    if executor == "local" and scheduler:
        raise InvalidInput("--scheduler is for --executor dask")
    if executor != "dask" and not scheduler:
        return None
    from kit.execution.dask_executor import connect

    return connect(scheduler)


@click.group(cls=KitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--project",
    "project_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="The project's root (default: the nearest folder holding kit.yaml or pyproject.toml).",
)
@click.version_option(package_name="kit", prog_name="kit")
@click.pass_context
def cli(ctx: click.Context, project_dir: str | None) -> None:
    """kit: notebooks as typed workflow steps, run by papermill, recorded in DuckDB."""
    ctx.obj = Context(project_dir)


# ---- kit run -------------------------------------------------------------------


def parse_param_options(pairs: tuple[str, ...], declared: dict[str, Any]) -> dict[str, Any]:
    """`-p NAME=VALUE`: a string parameter takes VALUE as it is; others read it as YAML."""
    import yaml

    params: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise InvalidInput(f"-p {pair!r}: expected NAME=VALUE")
        name, raw = pair.split("=", 1)
        if not name.isidentifier():
            raise InvalidInput(f"-p: parameter name {name!r} is not a valid identifier")
        spec = declared.get(name)
        if spec is not None and spec.type == "string":
            params[name] = raw
            continue
        try:
            params[name] = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            params[name] = raw
    return params


def read_params_file(path: str) -> dict[str, Any]:
    from kit.base.yamlio import load_mapping

    params, doc = load_mapping(path, "parameter names to values")
    for name in params:
        if not isinstance(name, str) or not name.isidentifier():
            raise doc.error((name,), f"parameter name {name!r} is not a valid identifier")
    return params


def report_outcome(ctx: Context, outcome) -> None:
    """What a run or resume prints: the status line, failures, and what an approver must do."""
    counts: dict[str, int] = {}
    for status in outcome.steps.values():
        counts[status] = counts.get(status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    click.echo(f"run {outcome.run_id} {outcome.status} in {outcome.seconds:.1f}s ({summary})")
    for failure in outcome.failures:
        where = f" in cell {failure.error_cell}" if failure.error_cell is not None else ""
        click.echo(f"  step {failure.step_id} failed{where}: {failure.error_type}: {failure.error_message}", err=True)
        if failure.executed_notebook:
            click.echo(f"  executed notebook: {failure.executed_notebook}", err=True)
    if outcome.waiting:
        _explain_waiting(ctx, outcome)
    elif outcome.status != "succeeded":
        click.echo(f"  details: kit show {outcome.run_id}", err=True)


def _explain_waiting(ctx: Context, outcome) -> None:
    """What the approver must look at, and the commands; from the run in memory (the ledger may be busy)."""
    workflow, redactor = outcome.workflow, outcome.redactor
    for sid in outcome.waiting:
        approval = workflow.steps[sid].spec.approval
        click.echo(
            f"\nstep {sid} waits for approval by a {' or '.join(approval.approvers)}"
            + (f" (within {approval.timeout})" if approval.timeout else "")
            + "."
        )
        for shown in approval.show:
            value = redactor.value(outcome.values.get(shown)) if redactor else outcome.values.get(shown)
            click.echo(f"  {shown}: {json.dumps(value, ensure_ascii=False, indent=2)}")
        click.echo(f"  approve: kit approve {outcome.run_id} {sid} --as PRINCIPAL [--comment TEXT]")
        click.echo(f"  reject:  kit approve {outcome.run_id} {sid} --as PRINCIPAL --reject [--comment TEXT]")
        click.echo(f"  then:    kit resume {outcome.run_id}")


@cli.command()
@click.argument("workflow")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="A workflow parameter (repeatable).")
@click.option("--params-file", type=click.Path(dir_okay=False), help="A YAML or JSON file of parameters.")
@click.option("--env", default=None, help="The environment to run in.")
@click.option(
    "--as",
    "as_",
    default=None,
    metavar="PRINCIPAL",
    help="Who the run acts as (default: $KIT_PRINCIPAL, then the OS user).",
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="Steps run at once (default: the core count)."
)
@click.option("--fresh", is_flag=True, help="Run every step; reuse no cached outputs.")
@click.option("--locked", is_flag=True, help="Refuse to run unless workflow.lock matches the files.")
@ENGINE
@EXECUTOR
@SCHEDULER
@click.option(
    "--export-otlp", "otlp", default=None, metavar="URL", help="Then send the run's spans to this OTLP/HTTP URL."
)
@pass_context
def run(
    ctx: Context,
    workflow: str,
    params: tuple[str, ...],
    params_file: str | None,
    env: str | None,
    as_: str | None,
    workers: int | None,
    fresh: bool,
    locked: bool,
    engine: str | None,
    executor: str | None,
    scheduler: str | None,
    otlp: str | None,
) -> None:
    """Run WORKFLOW: a workflow.yaml, a folder holding one, or a workflow's name."""
    from kit.execution.coordinator import Coordinator, RunRequest
    from kit.execution.engines import default_engine
    from kit.spec.policy import resolve_principal
    from kit.store.install import manifest_to_run

    manifest = manifest_to_run(ctx.project, workflow, env, note=lambda m: click.echo(m, err=True))
    wf = ctx.project.load_workflow(manifest)
    for warning in wf.warnings:
        click.echo(f"warning: {warning}", err=True)
    check_lock(wf, locked, ctx.project)
    given = read_params_file(params_file) if params_file else {}
    given.update(parse_param_options(params, wf.spec.params))
    coordinator = Coordinator(ctx.project, executor_factory=executor_factory(executor, scheduler))
    outcome = coordinator.run(
        RunRequest(
            workflow=wf,
            params=given,
            principal=resolve_principal(as_),
            env=env,
            workers=workers,
            fresh=fresh,
            engine=engine or default_engine("run"),
        )
    )
    report_outcome(ctx, outcome)
    if otlp:
        from kit.export.commands import export_after_run

        sys.exit(export_after_run(ctx, outcome, otlp))
    sys.exit(outcome.exit_code)


def check_lock(wf, locked: bool, project) -> None:
    """Warn when workflow.lock is stale; with --locked, refuse (exit 2). A store range that would now
    resolve to another version than the lock says makes it stale too."""
    from kit.bundles import compose
    from kit.bundles.lock import LOCK_NAME, read_lock, stale_files

    recorded = read_lock(wf)
    if recorded is None:
        if locked:
            raise InvalidInput(f"{wf.dir / LOCK_NAME}: no lock file; write one with: kit lock {wf.dir}")
        return
    changes = stale_files(recorded, compose.lock_now(project, wf)[0])
    if not changes:
        return
    message = f"{wf.dir / LOCK_NAME} is stale: " + ", ".join(changes[:8]) + (" ..." if len(changes) > 8 else "")
    if locked:
        raise InvalidInput(message + f"; update it with: kit lock {wf.dir}")
    click.echo(f"warning: {message}", err=True)


@cli.command()
@click.argument("workflow")
@pass_context
def lock(ctx: Context, workflow: str) -> None:
    """Write workflow.lock beside WORKFLOW's manifest: file digests, component versions, bundle id."""
    from kit.bundles import compose
    from kit.bundles.lock import write_lock

    wf = ctx.project.load_workflow(ctx.project.find_workflow(workflow))
    _, resolved, store = compose.lock_now(ctx.project, wf)
    if resolved:  # every range resolved to an exact bundle, fetched and checked
        compose.expand(wf, resolved, ctx.project, store)
    path, lock_data = write_lock(wf, resolved)
    click.echo(f"wrote {path}: bundle {lock_data['bundle_id']} ({len(lock_data['files'])} files)")
    for kind, parts in (resolved or {}).items():
        for key, part in parts.items():
            click.echo(
                f"  {kind[:-1]} {key}: {part.get('store') or part.get('workflow')} {part['range']} -> "
                f"{part['version']} (bundle {part['bundle_id'][:12]})"
            )


@cli.command("verify")
@click.argument("workflow")
@click.option("--env", default=None, help="The environment to verify under (default: the project's default_env).")
@click.option(
    "--sign",
    "sign_key",
    default=None,
    metavar="KEY",
    help="Sign the verification record with this ed25519 private key (PEM, e.g. from openssl genpkey).",
)
@click.option(
    "--as", "as_", default=None, metavar="PRINCIPAL", help="Who verifies (default: $KIT_PRINCIPAL, then the OS user)."
)
@click.option(
    "--examples",
    type=click.IntRange(min=0),
    default=None,
    help="Generated boundary cases, beside each parameter's fixed boundary values (default: 12).",
)
@pass_context
def verify_command(
    ctx: Context, workflow: str, env: str | None, sign_key: str | None, as_: str | None, examples: int | None
) -> None:
    """Verify WORKFLOW's bundle as its files are now: scenarios, notebooks, paths, secrets, boundary cases.
    Records the verdict and writes a verification record; exit 0 verified, 1 not."""
    from kit.spec.policy import resolve_principal
    from kit.verification.verify import report_text, verify

    wf = ctx.project.load_workflow(ctx.project.find_workflow(workflow))
    result = verify(
        ctx.project, wf, env=env, principal=resolve_principal(as_), sign_key=sign_key, examples=examples, progress=True
    )
    click.echo(report_text(result))
    sys.exit(0 if result.passed else 1)


@cli.command()
@click.argument("scenarios", nargs=-1, required=True, type=click.Path())
@click.option(
    "--baseline", required=True, metavar="REF", help="A bundle id or prefix, NAME@VERSION, a run id, or git:REV."
)
@click.option("--format", "fmt", type=click.Choice(["table", "md", "json"]), default="table", show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=None)
@ENGINE
@EXECUTOR
@SCHEDULER
@pass_context
def replay(
    ctx: Context,
    scenarios: tuple[str, ...],
    baseline: str,
    fmt: str,
    workers: int | None,
    engine: str | None,
    executor: str | None,
    scheduler: str | None,
) -> None:
    """Run SCENARIOS on the baseline bundle and on the current one; report what changed."""
    from pathlib import Path

    from kit.spec.scenario import discover
    from kit.verification import replay as rp
    from kit.verification.suite import ScenarioRunner

    paths = discover([Path(p) for p in scenarios])
    if not paths:
        raise InvalidInput(f"no scenario files found in {', '.join(scenarios)}")
    runner = ScenarioRunner(ctx.project, workers=workers, engine=engine, command="replay")
    runner.coordinator.executor_factory = executor_factory(executor, scheduler) or runner.coordinator.executor_factory
    results = rp.replay_all(runner, paths, baseline)
    render = {"table": rp.as_table, "md": rp.as_markdown, "json": rp.as_json}[fmt]
    click.echo(render(results, baseline))
    sys.exit(rp.exit_code(results))


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="Give again a parameter that was redacted (repeatable).",
)
@click.option("--as", "as_", default=None, metavar="PRINCIPAL", help="Who resumes (recorded in the audit trail).")
@click.option("--workers", type=click.IntRange(min=1), default=None)
@click.option("--fresh", is_flag=True, help="Reuse no cached outputs for the steps still to run.")
@EXECUTOR
@SCHEDULER
@pass_context
def resume(
    ctx: Context,
    run_ref: str,
    params: tuple[str, ...],
    as_: str | None,
    workers: int | None,
    fresh: bool,
    executor: str | None,
    scheduler: str | None,
) -> None:
    """Continue a failed, interrupted or waiting RUN; no completed step runs again."""
    from kit.execution.coordinator import Coordinator
    from kit.spec.policy import resolve_principal

    run_id = ctx.ledger.resolve_run(run_ref)
    given = parse_param_options(params, {})
    outcome = Coordinator(ctx.project, executor_factory=executor_factory(executor, scheduler)).resume(
        run_id, resolve_principal(as_), params=given, workers=workers, fresh=fresh
    )
    from kit.store.commands import after_resume

    if not outcome.steps:
        click.echo(f"run {run_id} already succeeded: nothing to resume")
        after_resume(ctx, run_id)
        return
    report_outcome(ctx, outcome)
    after_resume(ctx, run_id)  # an approved promotion gate: its promotion is appended now
    sys.exit(outcome.exit_code)


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.argument("step")
@click.option(
    "--as", "as_", default=None, metavar="PRINCIPAL", help="Who decides (default: $KIT_PRINCIPAL, then the OS user)."
)
@click.option("--reject", is_flag=True, help="Reject instead of approve: the run ends rejected.")
@click.option("--comment", default=None)
@pass_context
def approve(ctx: Context, run_ref: str, step: str, as_: str | None, reject: bool, comment: str | None) -> None:
    """Approve (or --reject) the approval STEP of a waiting RUN."""
    from kit.execution.coordinator import Coordinator
    from kit.spec.policy import resolve_principal

    run_id = ctx.ledger.resolve_run(run_ref)
    principal = resolve_principal(as_)
    decision = Coordinator(ctx.project).approve(run_id, step, principal, reject=reject, comment=comment)
    click.echo(f"{step} {decision} by {principal} in run {run_id}")
    if decision == "approved":
        click.echo(f"  continue: kit resume {run_id}")
    else:
        click.echo(f"  run {run_id} ended rejected; the steps after {step} were skipped")


@cli.command()
@click.option(
    "--older-than",
    default=None,
    metavar="DURATION",
    help="Delete runs older than this (e.g. 30d), instead of each workflow's policy.retention.runs.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be deleted, delete nothing.")
@click.option("--as", "as_", default=None, metavar="PRINCIPAL", help="Who collects (recorded in the audit trail).")
@pass_context
def gc(ctx: Context, older_than: str | None, dry_run: bool, as_: str | None) -> None:
    """Delete runs past their retention (never one a scenario names) and reclaim their space."""
    from kit.ledger.retention import collect
    from kit.spec.policy import resolve_principal

    result = collect(ctx.project, resolve_principal(as_), older_than=older_than, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {len(result.runs)} run(s)" + (f": {', '.join(result.runs)}" if result.runs else ""))
    if result.kept_for_scenarios:
        click.echo(
            f"kept {len(result.kept_for_scenarios)} run(s) that scenarios name: {', '.join(result.kept_for_scenarios)}"
        )
    if result.kept_for_store:
        click.echo(
            f"kept {len(result.kept_for_store)} run(s) that publications and promotions refer to: "
            + ", ".join(result.kept_for_store)
        )
    if result.kept_for_cache:
        click.echo(
            f"kept {len(result.kept_for_cache)} run(s) whose outputs cached steps use: {', '.join(result.kept_for_cache)}"
        )
    if result.temporary:
        click.echo(f"removed {result.temporary} leftover temporary file(s)")
    if not dry_run and result.runs:
        click.echo(f"removed {result.objects} object(s), {result.bytes_freed / 1e6:.1f} MB")


@cli.command()
@pass_context
def fsck(ctx: Context) -> None:
    """Check every object's digest, every reference from the ledger, and the audit chain; exit 1 naming each problem."""
    from kit.ledger.fsck import check
    from kit.ledger.objects import ObjectStore

    report = check(ctx.ledger, ObjectStore(ctx.project.objects_dir))
    for problem in report.problems:
        click.echo(f"problem: {problem}", err=True)
    summary = (
        f"{report.objects} objects, {report.references} references, {report.notebooks} executed notebooks, "
        f"{report.audit_entries} audit entries"
    )
    if report.problems:
        click.echo(f"kit fsck: {len(report.problems)} problem(s) in {summary}", err=True)
        sys.exit(1)
    click.echo(f"kit fsck: all is well ({summary})")


@cli.group()
def audit() -> None:
    """The hash-chained audit trail."""


@audit.command("verify")
@pass_context
def audit_verify(ctx: Context) -> None:
    """Check the audit chain (and its head kept outside the ledger); exit 1 naming the first broken entry."""
    count, problem = ctx.ledger.verify_audit()
    if problem:
        click.echo(f"audit chain broken: {problem.message}", err=True)
        sys.exit(1)
    click.echo(f"audit chain intact: {count} entries")


@audit.command("list")
@FORMAT
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@pass_context
def audit_list(ctx: Context, fmt: str, limit: int) -> None:
    """The latest audit entries."""
    columns, rows = ctx.ledger.latest_audit(limit)
    emit(columns, rows, fmt)


# ---- looking at runs -----------------------------------------------------------


def format_table(columns: list[str], rows: list[tuple], max_width: int = 60) -> str:
    cells = [[cell(v, max_width) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    out = [line(columns), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def emit(columns: list[str], rows: list[tuple], fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps([dict(zip(columns, jsonable(list(r)))) for r in rows], indent=2))
    elif fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([cell(v) if not isinstance(v, (int, float)) else v for v in row])
    else:
        click.echo(format_table(columns, rows))


@cli.command()
@FORMAT
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--workflow", default=None, help="Only runs of this workflow.")
@click.option(
    "--status",
    default=None,
    type=click.Choice(["running", "succeeded", "failed", "waiting", "rejected", "cancelled"]),
    help="Only runs with this status.",
)
@pass_context
def runs(ctx: Context, fmt: str, limit: int, workflow: str | None, status: str | None) -> None:
    """List recent runs, newest first."""
    expire_overdue(ctx)
    columns, rows = ctx.ledger.list_runs(workflow=workflow, status=status, limit=limit)
    if not rows and fmt == "table":
        click.echo("no runs" + (" matching" if workflow or status else "") + f" in {ctx.ledger.path}")
        return
    emit(columns, rows, fmt)


def expire_overdue(ctx: Context, run_id: str | None = None) -> None:
    """Approvals past their deadline end their runs `rejected` as soon as a command looks (DESIGN section 6)."""
    from kit.execution.approvals import Approvals

    for run, step in Approvals(ctx.project, ctx.ledger).expire_overdue(run_id):
        click.echo(f"note: the approval {step} of run {run} expired: the run ended rejected", err=True)


def _brief(output: dict[str, Any]) -> str:
    if output["type"] == "table":
        return f"table, {output['size_bytes']} bytes, {output['artifact'][:24]}…"
    return brief(output["value"], 70)


@cli.command()
@click.argument("run_ref", metavar="RUN")
@FORMAT
@pass_context
def show(ctx: Context, run_ref: str, fmt: str) -> None:
    """Show a run: its steps, statuses, durations, outputs, and any error with its failing cell."""
    ledger = ctx.ledger
    run_id = ledger.resolve_run(run_ref)
    expire_overdue(ctx, run_id)
    run_row = ledger.run(run_id)
    steps = ledger.steps(run_id)
    outputs = ledger.outputs(run_id)
    if fmt == "json":
        click.echo(json.dumps(jsonable({"run": run_row, "steps": steps, "outputs": outputs}), indent=2))
        return
    if fmt == "csv":
        columns = ["step_id", "status", "attempts", "duration_ms", "error_type", "error_message", "reason"]
        emit(columns, [tuple(s.get(c) for c in columns) for s in steps], "csv")
        return
    seconds = ""
    if run_row["ended_at"] and run_row["started_at"]:
        seconds = f" in {(run_row['ended_at'] - run_row['started_at']).total_seconds():.1f}s"
    click.echo(f"run {run_id}: {run_row['status']}{seconds}")
    click.echo(f"  workflow  {run_row['workflow']} {run_row['version']}  bundle {(run_row['bundle_id'] or '')[:12]}")
    click.echo(
        f"  as        {run_row['principal']}  env {run_row['env'] or '-'}  engine {run_row['engine']} ({run_row['isolation']})"
        f"  executor {run_row.get('executor') or 'local'}"
    )
    click.echo(f"  params    {brief(run_row['params'], 300)}")
    click.echo(f"  started   {cell(run_row['started_at'])}  git {(run_row['git_commit'] or '-')[:12]}")
    if run_row["scenario_id"]:
        click.echo(f"  scenario  {run_row['scenario_id']}")
    by_step: dict[str, list[str]] = {}
    for out in outputs:
        by_step.setdefault(out["step_id"], []).append(f"{out['name']}: {_brief(out)}")
    click.echo("")
    rows = [
        (
            s["step_id"],
            s["status"],
            s["attempts"],
            s["duration_ms"],
            "; ".join(by_step.get(s["step_id"], [])) or (s.get("reason") or ""),
        )
        for s in steps
    ]
    click.echo(format_table(["step", "status", "attempts", "ms", "outputs (or why not)"], rows, max_width=90))
    for s in steps:
        if s["status"] == "skipped" and s.get("reason"):  # whole, as the table may cut it
            click.echo(f"\nstep {s['step_id']} skipped{' by rule' if s.get('routed') else ''}: {s['reason']}")
        if s["status"] == "failed":
            click.echo(f"\nstep {s['step_id']} failed: {s['error_type']}: {s['error_message']}")
            if s["error_cell"] is not None:
                click.echo(f"  failing cell {s['error_cell']}:")
                for line in (s["error_source"] or "").splitlines()[:15]:
                    click.echo(f"    | {line}")
            if s["executed_notebook"]:
                click.echo(f"  executed notebook: {s['executed_notebook']}")


@cli.command()
@click.argument("query")
@FORMAT
@pass_context
def sql(ctx: Context, query: str, fmt: str) -> None:
    """Run a read-only SQL QUERY against the ledger."""
    columns, rows = ctx.ledger.user_query(query)
    emit(columns, rows, fmt)


@cli.command()
@click.argument("refs", nargs=-1, metavar="RUN | --scenarios [PATH...]")
@click.option(
    "--scenarios", "of_scenarios", is_flag=True, help="Report on scenarios (those under PATH..., default: all run)."
)
@click.option(
    "--last", default=10, show_default=True, type=click.IntRange(min=1), help="Runs per scenario in the matrix."
)
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False), help="The HTML file to write.")
@pass_context
def report(ctx: Context, refs: tuple[str, ...], of_scenarios: bool, last: int, out: str) -> None:
    """Write one self-contained HTML report of RUN, or of scenarios' latest runs, from the ledger alone."""
    from kit.review.report import run_report, scenarios_report, write_report

    writable(out, "-o")
    if of_scenarios:
        chosen = scenario_ids(refs) if refs else None
        if chosen == []:
            raise InvalidInput(f"no scenario files found in {', '.join(refs)}")
        html = scenarios_report(ctx.project, ctx.ledger, chosen, last=last)
    elif len(refs) == 1:
        html = run_report(ctx.project, ctx.ledger, ctx.ledger.resolve_run(refs[0]), last=last)
    else:
        raise InvalidInput("kit report: give one RUN, or --scenarios [PATH...]")
    size = write_report(out, html)
    click.echo(f"wrote {out} ({size / 1e3:.0f} kB)")


def scenario_ids(paths: tuple[str, ...]) -> list[str]:
    """The ids of the scenario files under `paths`; a file that cannot be read is skipped with a warning."""
    from pathlib import Path

    from kit.spec.scenario import discover, load_scenario

    ids = []
    for path in discover([Path(p) for p in paths]):
        try:
            ids.append(load_scenario(path).id)
        except KitError as exc:
            click.echo(f"warning: skipped {path}: {exc.message}", err=True)
    return ids


@cli.command()
@click.argument("run_a", metavar="RUN_A")
@click.argument("run_b", metavar="RUN_B")
@click.argument("step", required=False)
@click.option("--format", "fmt", type=click.Choice(["text", "html"]), default="text", show_default=True)
@pass_context
def diff(ctx: Context, run_a: str, run_b: str, step: str | None, fmt: str) -> None:
    """What changed from RUN_A to RUN_B: parameters, outputs, bundle files, executed notebooks (only STEP's
    outputs and notebook when given). Exit 0 whatever changed."""
    from kit.review.diff import as_html, as_text, diff_runs

    first, second = ctx.ledger.resolve_run(run_a), ctx.ledger.resolve_run(run_b)
    changes = diff_runs(ctx.project, ctx.ledger, first, second, step)
    click.echo(as_html(changes) if fmt == "html" else as_text(changes), nl=False)


# ---- scenarios -----------------------------------------------------------------


@cli.command("test")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--junit", type=click.Path(dir_okay=False), help="Write JUnit XML here.")
@click.option(
    "--report", "report_file", type=click.Path(dir_okay=False), help="Write the HTML report of this suite's runs here."
)
@click.option("--tag", "tags", multiple=True, help="Only scenarios with this tag (repeatable).")
@click.option("--workflow", default=None, help="Only scenarios of this workflow.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Steps run at once within a scenario.")
@ENGINE
@EXECUTOR
@SCHEDULER
@pass_context
def test_command(
    ctx: Context,
    paths: tuple[str, ...],
    junit: str | None,
    report_file: str | None,
    tags: tuple[str, ...],
    workflow: str | None,
    workers: int | None,
    engine: str | None,
    executor: str | None,
    scheduler: str | None,
) -> None:
    """Run scenarios (default: every scenario under scenarios/) and gate on evals.pass_rate."""
    from pathlib import Path

    from kit.verification.suite import ScenarioRunner, report_text, run_suite, select_scenarios, write_junit

    roots = [Path(p) for p in paths] or [ctx.project.root / "scenarios"]
    if junit:
        writable(junit, "--junit")
    if report_file:
        writable(report_file, "--report")
    chosen = select_scenarios(roots, tags, workflow)
    if not chosen:
        raise InvalidInput(nothing_selected(roots, tags, workflow))
    runner = ScenarioRunner(ctx.project, workers=workers, engine=engine)
    runner.coordinator.executor_factory = executor_factory(executor, scheduler) or runner.coordinator.executor_factory
    suite = run_suite(runner, chosen, progress=True)
    click.echo(report_text(suite))
    if junit:
        write_junit(suite, Path(junit))
        click.echo(f"JUnit XML: {junit}")
    if report_file:
        from kit.review.report import scenarios_report, write_report

        html = scenarios_report(
            ctx.project,
            ctx.ledger,
            run_ids=[r.run_id for r in suite.results if r.run_id],
            invalid=[(str(r.path), r.invalid) for r in suite.results if r.invalid],
        )
        write_report(report_file, html)
        click.echo(f"report: {report_file}")
    sys.exit(suite.exit_code)


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.option(
    "--expect",
    "expects",
    multiple=True,
    metavar="STEP.OUTPUT[.PATH]",
    help="An output to expect (repeatable; default: every output of the run).",
)
@click.option(
    "-o", "--output", "out", required=True, type=click.Path(dir_okay=False), help="The scenario file to write."
)
@click.option("--name", default=None, help="The scenario's id (default: WORKFLOW/FILE-STEM).")
@click.option("--description", default=None)
@click.option("--note", default=None, help="Why this case matters, kept in source.note.")
@click.option("--tag", "tags", multiple=True)
@click.option(
    "--as", "as_", default=None, metavar="PRINCIPAL", help="Who captures (default: $KIT_PRINCIPAL, then the OS user)."
)
@click.option("--force", is_flag=True, help="Overwrite the scenario file if it exists.")
@pass_context
def capture(
    ctx: Context,
    run_ref: str,
    expects: tuple[str, ...],
    out: str,
    name: str | None,
    description: str | None,
    note: str | None,
    tags: tuple[str, ...],
    as_: str | None,
    force: bool,
) -> None:
    """Write a scenario from RUN: its parameters, and its actual outputs as expectations."""
    from pathlib import Path

    from kit.ledger.objects import ObjectStore
    from kit.spec.policy import resolve_principal
    from kit.verification.capture import capture as capture_run

    if Path(out).exists() and not force:
        raise InvalidInput(f"-o {out}: the file exists; pass --force to overwrite it")
    run_id = ctx.ledger.resolve_run(run_ref)
    path = capture_run(
        ctx.ledger,
        ObjectStore(ctx.project.objects_dir),
        run_id,
        list(expects),
        Path(out),
        captured_by=resolve_principal(as_),
        name=name,
        description=description,
        note=note,
        tags=list(tags),
    )
    click.echo(f"wrote {path}")


def writable(path: str, option: str) -> None:
    """Check, before any work, that `path` can be written, so a long command does not end in an I/O error."""
    from pathlib import Path

    target = Path(path)
    existed = target.exists()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a"):
            pass
    except OSError as exc:
        raise InvalidInput(f"{option} {path}: cannot write there ({exc.strerror})") from None
    if not existed:
        target.unlink()


def nothing_selected(roots, tags, workflow) -> str:
    """Why no scenario was chosen, saying what there is instead."""
    from kit.errors import KitError
    from kit.spec.scenario import discover, load_scenario

    where = ", ".join(str(r) for r in roots)
    found = discover([r for r in roots if r.exists()])
    if not found:
        return f"no scenario files found under {where}"
    known_tags, known_workflows = set(), set()
    for path in found:
        try:
            scenario = load_scenario(path)
        except KitError:
            continue
        known_tags.update(scenario.tags)
        known_workflows.add(scenario.workflow)
    if workflow and workflow not in known_workflows:
        return (
            f"no scenario under {where} is of workflow {workflow!r} (workflows: {', '.join(sorted(known_workflows))})"
        )
    return (
        f"no scenario under {where} has the tag {' or '.join(map(repr, tags))}"
        + (f" in workflow {workflow!r}" if workflow else "")
        + f" (tags used: {', '.join(sorted(known_tags)) or 'none'})"
    )


from kit.store.commands import add_commands as _add_store_commands  # noqa: E402

_add_store_commands(cli)  # publish, yank, install, promote, promotions, store search/show

from kit.export.commands import add_commands as _add_export_commands  # noqa: E402

_add_export_commands(cli)  # export otlp


def _terminate(signum, frame) -> None:
    """SIGTERM ends a command the way Ctrl-C does: a run is cancelled and left resumable."""
    raise KeyboardInterrupt


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    try:
        cli.main(prog_name="kit", standalone_mode=False)
    except click.exceptions.Abort:
        _fail("interrupted (a run in progress was cancelled; `kit resume RUN` continues it)", 130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(EXIT_INVALID if isinstance(exc, click.UsageError) else exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
