"""The `kit` command line. Thin: it parses options and calls the layers below.

A user's mistake ends in one clear message and the design's exit code (2 invalid
input, 4 denied), never a traceback. Heavy imports stay inside the commands.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any

import click

from kit.errors import EXIT_INVALID, InvalidInput, KitError


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handle_errors(fn):
    """Turn KitError into its message and exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KitError as exc:
            _fail(exc.message, exc.exit_code)

    return wrapper


class Context:
    def __init__(self, project_dir: str | None):
        self.project_dir = project_dir

    @functools.cached_property
    def project(self):
        from kit.project import Project

        return Project.discover(self.project_dir)

    @functools.cached_property
    def ledger(self):
        from kit.ledger import Ledger

        return Ledger(self.project.ledger_path)


pass_context = click.make_pass_decorator(Context)
ENGINE = click.option("--engine", type=click.Choice(["papermill", "warm"]), default=None,
                      help="papermill: a fresh kernel per step (exact Jupyter semantics); "
                           "warm: a kernel reused per worker, namespace reset per step (fast).")
FORMAT = click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--project", "project_dir", type=click.Path(file_okay=False), default=None,
              help="The project's root (default: the nearest folder holding kit.yaml or pyproject.toml).")
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
    from kit.yamlio import load_yaml

    doc = load_yaml(path)
    if doc.data is None:
        return {}
    if not isinstance(doc.data, dict):
        raise doc.error((), f"expected a mapping of parameter names to values, found {type(doc.data).__name__}")
    for name in doc.data:
        if not isinstance(name, str) or not name.isidentifier():
            raise doc.error((name,), f"parameter name {name!r} is not a valid identifier")
    return doc.data


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
    from kit.manifest import load_workflow

    run = ctx.ledger.rows("SELECT manifest FROM runs WHERE run_id = ?", [outcome.run_id])[0]
    workflow = load_workflow(run["manifest"])
    for sid in outcome.waiting:
        approval = workflow.steps[sid].spec.approval
        click.echo(f"\nstep {sid} waits for approval by a {' or '.join(approval.approvers)}"
                   + (f" (within {approval.timeout})" if approval.timeout else "") + ".")
        for shown in approval.show:
            value = outcome.values.get(shown)
            click.echo(f"  {shown}: {json.dumps(value, ensure_ascii=False, indent=2)}")
        click.echo(f"  approve: kit approve {outcome.run_id} {sid} --as PRINCIPAL [--comment TEXT]")
        click.echo(f"  reject:  kit approve {outcome.run_id} {sid} --as PRINCIPAL --reject [--comment TEXT]")
        click.echo(f"  then:    kit resume {outcome.run_id}")


@cli.command()
@click.argument("workflow")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="A workflow parameter (repeatable).")
@click.option("--params-file", type=click.Path(dir_okay=False), help="A YAML or JSON file of parameters.")
@click.option("--env", default=None, help="The environment to run in.")
@click.option("--as", "as_", default=None, metavar="PRINCIPAL", help="Who the run acts as (default: $KIT_PRINCIPAL, then the OS user).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Steps run at once (default: the core count).")
@click.option("--fresh", is_flag=True, help="Run every step; reuse no cached outputs.")
@click.option("--locked", is_flag=True, help="Refuse to run unless workflow.lock matches the files.")
@ENGINE
@pass_context
@handle_errors
def run(ctx: Context, workflow: str, params: tuple[str, ...], params_file: str | None, env: str | None,
        as_: str | None, workers: int | None, fresh: bool, locked: bool, engine: str | None) -> None:
    """Run WORKFLOW: a workflow.yaml, a folder holding one, or a workflow's name."""
    from kit.manifest import load_workflow
    from kit.runner import Coordinator, RunRequest, resolve_principal

    wf = load_workflow(ctx.project.find_workflow(workflow))
    for warning in wf.warnings:
        click.echo(f"warning: {warning}", err=True)
    check_lock(wf, locked)
    given = read_params_file(params_file) if params_file else {}
    given.update(parse_param_options(params, wf.spec.params))
    coordinator = Coordinator(ctx.project)
    outcome = coordinator.run(RunRequest(workflow=wf, params=given, principal=resolve_principal(as_),
                                         env=env, workers=workers, fresh=fresh, engine=engine or "papermill"))
    report_outcome(ctx, outcome)
    sys.exit(outcome.exit_code)


def check_lock(wf, locked: bool) -> None:
    """Warn when workflow.lock is stale; with --locked, refuse (exit 2)."""
    from kit.bundle import LOCK_NAME, compute_lock, read_lock, stale_files

    recorded = read_lock(wf)
    if recorded is None:
        if locked:
            raise InvalidInput(f"{wf.dir / LOCK_NAME}: no lock file; write one with: kit lock {wf.dir}")
        return
    changes = stale_files(recorded, compute_lock(wf))
    if not changes:
        return
    message = f"{wf.dir / LOCK_NAME} is stale: " + ", ".join(changes[:8]) + (" ..." if len(changes) > 8 else "")
    if locked:
        raise InvalidInput(message + f"; update it with: kit lock {wf.dir}")
    click.echo(f"warning: {message}", err=True)


@cli.command()
@click.argument("workflow")
@pass_context
@handle_errors
def lock(ctx: Context, workflow: str) -> None:
    """Write workflow.lock beside WORKFLOW's manifest: file digests, component versions, bundle id."""
    from kit.bundle import write_lock
    from kit.manifest import load_workflow

    wf = load_workflow(ctx.project.find_workflow(workflow))
    path, lock_data = write_lock(wf)
    click.echo(f"wrote {path}: bundle {lock_data['bundle_id']} ({len(lock_data['files'])} files)")


@cli.command()
@click.argument("scenarios", nargs=-1, required=True, type=click.Path())
@click.option("--baseline", required=True, metavar="REF",
              help="A bundle id or prefix, NAME@VERSION, a run id, or git:REV.")
@click.option("--format", "fmt", type=click.Choice(["table", "md", "json"]), default="table", show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=None)
@ENGINE
@pass_context
@handle_errors
def replay(ctx: Context, scenarios: tuple[str, ...], baseline: str, fmt: str, workers: int | None,
           engine: str | None) -> None:
    """Run SCENARIOS on the baseline bundle and on the current one; report what changed."""
    from pathlib import Path

    from kit import replay as rp
    from kit.scenario import discover
    from kit.testing import ScenarioRunner

    paths = discover([Path(p) for p in scenarios])
    if not paths:
        raise InvalidInput(f"no scenario files found in {', '.join(scenarios)}")
    runner = ScenarioRunner(ctx.project, workers=workers, engine=engine)
    results = [rp.replay_scenario(runner, path, baseline) for path in paths]
    render = {"table": rp.as_table, "md": rp.as_markdown, "json": rp.as_json}[fmt]
    click.echo(render(results, baseline))
    sys.exit(rp.exit_code(results))


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Give again a parameter that was redacted (repeatable).")
@click.option("--as", "as_", default=None, metavar="PRINCIPAL", help="Who resumes (recorded in the audit trail).")
@click.option("--workers", type=click.IntRange(min=1), default=None)
@click.option("--fresh", is_flag=True, help="Reuse no cached outputs for the steps still to run.")
@pass_context
@handle_errors
def resume(ctx: Context, run_ref: str, params: tuple[str, ...], as_: str | None, workers: int | None, fresh: bool) -> None:
    """Continue a failed, interrupted or waiting RUN; no completed step runs again."""
    from kit.runner import Coordinator, resolve_principal

    run_id = resolve_run(ctx.ledger, run_ref)
    given = parse_param_options(params, {})
    outcome = Coordinator(ctx.project).resume(run_id, resolve_principal(as_), params=given, workers=workers, fresh=fresh)
    if not outcome.steps:
        click.echo(f"run {run_id} already succeeded: nothing to resume")
        return
    report_outcome(ctx, outcome)
    sys.exit(outcome.exit_code)


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.argument("step")
@click.option("--as", "as_", default=None, metavar="PRINCIPAL", help="Who decides (default: $KIT_PRINCIPAL, then the OS user).")
@click.option("--reject", is_flag=True, help="Reject instead of approve: the run ends rejected.")
@click.option("--comment", default=None)
@pass_context
@handle_errors
def approve(ctx: Context, run_ref: str, step: str, as_: str | None, reject: bool, comment: str | None) -> None:
    """Approve (or --reject) the approval STEP of a waiting RUN."""
    from kit.runner import Coordinator, resolve_principal

    run_id = resolve_run(ctx.ledger, run_ref)
    principal = resolve_principal(as_)
    decision = Coordinator(ctx.project).approve(run_id, step, principal, reject=reject, comment=comment)
    click.echo(f"{step} {decision} by {principal} in run {run_id}")
    click.echo(f"  continue: kit resume {run_id}")


@cli.command()
@click.option("--older-than", default=None, metavar="DURATION",
              help="Delete runs older than this (e.g. 30d), instead of each workflow's policy.retention.runs.")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted, delete nothing.")
@click.option("--as", "as_", default=None, metavar="PRINCIPAL", help="Who collects (recorded in the audit trail).")
@pass_context
@handle_errors
def gc(ctx: Context, older_than: str | None, dry_run: bool, as_: str | None) -> None:
    """Delete runs past their retention (never one a scenario names) and reclaim their space."""
    from kit.gc import collect
    from kit.runner import resolve_principal

    result = collect(ctx.project, resolve_principal(as_), older_than=older_than, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {len(result.runs)} run(s)" + (f": {', '.join(result.runs)}" if result.runs else ""))
    if result.kept_for_scenarios:
        click.echo(f"kept {len(result.kept_for_scenarios)} run(s) that scenarios name: {', '.join(result.kept_for_scenarios)}")
    if not dry_run and result.runs:
        click.echo(f"removed {result.objects} object(s), {result.bytes_freed / 1e6:.1f} MB")


@cli.group()
def audit() -> None:
    """The hash-chained audit trail."""


@audit.command("verify")
@pass_context
@handle_errors
def audit_verify(ctx: Context) -> None:
    """Check the audit chain; exit 1 naming the first altered or removed entry."""
    from kit.audit import verify

    rows = ctx.ledger.rows("SELECT * FROM audit ORDER BY seq")
    problem = verify(rows)
    if problem:
        click.echo(f"audit chain broken: {problem.message}", err=True)
        sys.exit(1)
    click.echo(f"audit chain intact: {len(rows)} entries")


@audit.command("list")
@FORMAT
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@pass_context
@handle_errors
def audit_list(ctx: Context, fmt: str, limit: int) -> None:
    """The latest audit entries."""
    columns, rows = ctx.ledger.query(
        f"SELECT seq, \"at\", actor, action, subject, detail FROM audit ORDER BY seq DESC LIMIT {int(limit)}")
    emit(columns, rows, fmt)


# ---- looking at runs -----------------------------------------------------------


def _cell(value: Any, width: int | None = None) -> str:
    from datetime import datetime

    if value is None:
        text = ""
    elif isinstance(value, datetime):
        text = value.isoformat(sep=" ", timespec="seconds")
    elif isinstance(value, float):
        text = f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False, default=str)
    else:
        text = str(value)
    text = text.replace("\n", " ")
    if width and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def format_table(columns: list[str], rows: list[tuple], max_width: int = 60) -> str:
    cells = [[_cell(v, max_width) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    out = [line(columns), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _jsonable(value: Any) -> Any:
    from datetime import date, datetime
    from decimal import Decimal

    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return value


def emit(columns: list[str], rows: list[tuple], fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps([dict(zip(columns, _jsonable(list(r)))) for r in rows], indent=2))
    elif fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(v) if not isinstance(v, (int, float)) else v for v in row])
    else:
        click.echo(format_table(columns, rows))




@cli.command()
@FORMAT
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--workflow", default=None, help="Only runs of this workflow.")
@click.option("--status", default=None, help="Only runs with this status.")
@pass_context
@handle_errors
def runs(ctx: Context, fmt: str, limit: int, workflow: str | None, status: str | None) -> None:
    """List recent runs, newest first."""
    where, args = [], []
    if workflow:
        where.append("r.workflow = ?")
        args.append(workflow)
    if status:
        where.append("r.status = ?")
        args.append(status)
    sql = f"""
        SELECT r.run_id, r.workflow, r.version, r.status, r.principal, r.env, r.started_at,
               round(epoch(r.ended_at) - epoch(r.started_at), 2) AS seconds,
               count(s.step_id) FILTER (WHERE s.status IN ('succeeded', 'cached')) || '/' || count(s.step_id) AS steps,
               r.scenario_id
        FROM runs r LEFT JOIN steps s USING (run_id)
        {'WHERE ' + ' AND '.join(where) if where else ''}
        GROUP BY ALL ORDER BY r.run_id DESC LIMIT {int(limit)}"""
    columns, rows = ctx.ledger.query(sql, args)
    emit(columns, rows, fmt)


def resolve_run(ledger, ref: str) -> str:
    """A run id from a full id, a unique prefix, or `last`."""
    if ref == "last":
        _, rows = ledger.query("SELECT run_id FROM runs ORDER BY run_id DESC LIMIT 1")
    else:
        _, rows = ledger.query("SELECT run_id FROM runs WHERE starts_with(run_id, ?) ORDER BY run_id LIMIT 3", [ref])
    if not rows:
        from kit.errors import NotFound

        raise NotFound(f"no run {ref!r} in {ledger.path}")
    if len(rows) > 1:
        raise InvalidInput(f"run {ref!r} is ambiguous: it starts {', '.join(r[0] for r in rows)}, ...")
    return rows[0][0]


def _brief(output: dict[str, Any]) -> str:
    if output["type"] == "table":
        return f"table, {output['size_bytes']} bytes, {output['artifact'][:24]}…"
    return _cell(json.dumps(output["value"], ensure_ascii=False), 70)


@cli.command()
@click.argument("run_ref", metavar="RUN")
@FORMAT
@pass_context
@handle_errors
def show(ctx: Context, run_ref: str, fmt: str) -> None:
    """Show a run: its steps, statuses, durations, outputs, and any error with its failing cell."""
    ledger = ctx.ledger
    run_id = resolve_run(ledger, run_ref)
    run_row = ledger.rows("SELECT * FROM runs WHERE run_id = ?", [run_id])[0]
    steps = ledger.rows("SELECT * FROM steps WHERE run_id = ? ORDER BY started_at NULLS LAST, step_id", [run_id])
    outputs = ledger.rows("SELECT * FROM outputs WHERE run_id = ? ORDER BY step_id, name", [run_id])
    if fmt == "json":
        click.echo(json.dumps(_jsonable({"run": run_row, "steps": steps, "outputs": outputs}), indent=2))
        return
    if fmt == "csv":
        columns = ["step_id", "status", "attempts", "duration_ms", "error_type", "error_message"]
        emit(columns, [tuple(s[c] for c in columns) for s in steps], "csv")
        return
    seconds = ""
    if run_row["ended_at"] and run_row["started_at"]:
        seconds = f" in {(run_row['ended_at'] - run_row['started_at']).total_seconds():.1f}s"
    click.echo(f"run {run_id}: {run_row['status']}{seconds}")
    click.echo(f"  workflow  {run_row['workflow']} {run_row['version']}  bundle {(run_row['bundle_id'] or '')[:12]}")
    click.echo(f"  as        {run_row['principal']}  env {run_row['env'] or '-'}  engine {run_row['engine']} ({run_row['isolation']})")
    click.echo(f"  params    {json.dumps(run_row['params'], ensure_ascii=False)}")
    click.echo(f"  started   {_cell(run_row['started_at'])}  git {(run_row['git_commit'] or '-')[:12]}")
    if run_row["scenario_id"]:
        click.echo(f"  scenario  {run_row['scenario_id']}")
    by_step: dict[str, list[str]] = {}
    for out in outputs:
        by_step.setdefault(out["step_id"], []).append(f"{out['name']}: {_brief(out)}")
    click.echo("")
    rows = [(s["step_id"], s["status"], s["attempts"], s["duration_ms"], "; ".join(by_step.get(s["step_id"], [])))
            for s in steps]
    click.echo(format_table(["step", "status", "attempts", "ms", "outputs"], rows, max_width=90))
    for s in steps:
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
@handle_errors
def sql(ctx: Context, query: str, fmt: str) -> None:
    """Run a read-only SQL QUERY against the ledger."""
    columns, rows = ctx.ledger.user_query(query)
    emit(columns, rows, fmt)


# ---- scenarios -----------------------------------------------------------------


@cli.command("test")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--junit", type=click.Path(dir_okay=False), help="Write JUnit XML here.")
@click.option("--tag", "tags", multiple=True, help="Only scenarios with this tag (repeatable).")
@click.option("--workflow", default=None, help="Only scenarios of this workflow.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Steps run at once within a scenario.")
@ENGINE
@pass_context
@handle_errors
def test_command(ctx: Context, paths: tuple[str, ...], junit: str | None, tags: tuple[str, ...],
                 workflow: str | None, workers: int | None, engine: str | None) -> None:
    """Run scenarios (default: every scenario under scenarios/) and gate on evals.pass_rate."""
    from pathlib import Path

    from kit.testing import ScenarioRunner, SuiteProgress, report_text, run_suite, select, write_junit

    roots = [Path(p) for p in paths] or [ctx.project.root / "scenarios"]
    chosen = select(roots, tags, workflow)
    if not chosen:
        raise InvalidInput(f"no scenario files found under {', '.join(str(r) for r in roots)}")
    suite = run_suite(ScenarioRunner(ctx.project, workers=workers, engine=engine), chosen, progress=SuiteProgress())
    click.echo(report_text(suite))
    if junit:
        write_junit(suite, Path(junit))
        click.echo(f"JUnit XML: {junit}")
    sys.exit(suite.exit_code)


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--expect", "expects", multiple=True, metavar="STEP.OUTPUT[.PATH]",
              help="An output to expect (repeatable; default: every output of the run).")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False), help="The scenario file to write.")
@click.option("--name", default=None, help="The scenario's id (default: WORKFLOW/FILE-STEM).")
@click.option("--description", default=None)
@click.option("--note", default=None, help="Why this case matters, kept in source.note.")
@click.option("--tag", "tags", multiple=True)
@click.option("--as", "as_", default=None, metavar="PRINCIPAL", help="Who captures (default: $KIT_PRINCIPAL, then the OS user).")
@pass_context
@handle_errors
def capture(ctx: Context, run_ref: str, expects: tuple[str, ...], out: str, name: str | None,
            description: str | None, note: str | None, tags: tuple[str, ...], as_: str | None) -> None:
    """Write a scenario from RUN: its parameters, and its actual outputs as expectations."""
    from pathlib import Path

    from kit.capture import capture as capture_run
    from kit.objects import ObjectStore
    from kit.runner import resolve_principal

    run_id = resolve_run(ctx.ledger, run_ref)
    path = capture_run(ctx.ledger, ObjectStore(ctx.project.objects_dir), run_id, list(expects), Path(out),
                       captured_by=resolve_principal(as_), name=name, description=description, note=note,
                       tags=list(tags))
    click.echo(f"wrote {path}")


def main() -> None:
    try:
        cli.main(prog_name="kit", standalone_mode=False)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(EXIT_INVALID if isinstance(exc, click.UsageError) else exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KitError as exc:
        _fail(exc.message, exc.exit_code)


if __name__ == "__main__":
    main()
