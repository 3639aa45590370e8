"""Looking into the ledger: kit runs, show, sql, audit, fsck, gc."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from kit.base.display import brief, cell
from kit.base.values import jsonable
from kit.cli.base import (
    FORMAT,
    Context,
    cli,
    emit,
    expire_overdue,
    format_table,
    pass_context,
)


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
    with ledger.reading():  # one connection for every read (an expired approval's write closes it first)
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
