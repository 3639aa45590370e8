"""Running workflows: kit run, lock, resume, approve."""

from __future__ import annotations

import sys
from typing import Any

import click

from kit.cli.base import (
    ENGINE,
    EXECUTOR,
    SCHEDULER,
    Context,
    cli,
    executor_factory,
    pass_context,
    report_outcome,
    start_engine_early,
)
from kit.errors import InvalidInput


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
    from kit.execution.engines import default_engine

    engine = engine or default_engine("run")
    start_engine_early(engine, executor, scheduler)
    from kit.execution.coordinator import Coordinator, RunRequest
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
            engine=engine,
        )
    )
    report_outcome(ctx, outcome)
    if otlp:
        from kit.cli.export import export_after_run

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
    from kit.cli.store import after_resume

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
