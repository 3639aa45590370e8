"""Scenarios and verification: kit test, replay, capture, verify."""

from __future__ import annotations

import sys

import click

from kit.cli.base import (
    ENGINE,
    EXECUTOR,
    SCHEDULER,
    Context,
    cli,
    executor_factory,
    pass_context,
    start_engine_early,
    writable,
)
from kit.errors import InvalidInput, KitError


@cli.command("test")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--junit", type=click.Path(dir_okay=False), help="Write JUnit XML here.")
@click.option(
    "--report", "report_file", type=click.Path(dir_okay=False), help="Write the HTML report of this suite's runs here."
)
@click.option("--tag", "tags", multiple=True, help="Only scenarios with this tag (repeatable).")
@click.option("--workflow", default=None, help="Only scenarios of this workflow.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Scenarios run at once (default: the core count), each scenario's chain as one unit; "
    "their steps share as many step workers. Results are reported in file order.",
)
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
    """Run scenarios (default: every scenario under scenarios/) and gate on evals.pass_rate.

    Scenarios run --workers at a time (default: the core count); Ctrl-C cancels them all, each run
    left resumable."""
    from pathlib import Path

    from kit.execution.engines import default_engine

    engine = engine or default_engine("test")
    start_engine_early(engine, executor, scheduler)
    from kit.verification.suite import ScenarioRunner, report_text, run_suite, select_scenarios, write_junit

    roots = [Path(p) for p in paths] or [ctx.project.root / "scenarios"]
    if junit:
        writable(junit, "--junit", ctx.project.home, "xml")
    if report_file:
        writable(report_file, "--report", ctx.project.home, "html")
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
@click.argument("scenarios", nargs=-1, required=True, type=click.Path())
@click.option(
    "--baseline", required=True, metavar="REF", help="A bundle id or prefix, NAME@VERSION, a run id, or git:REV."
)
@click.option("--format", "fmt", type=click.Choice(["table", "md", "json"]), default="table", show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Scenarios replayed at once (default: the core count), each one's two runs as one unit.",
)
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

    from kit.execution.engines import default_engine

    engine = engine or default_engine("replay")
    start_engine_early(engine, executor, scheduler)
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


def nothing_selected(roots, tags, workflow) -> str:
    """Why no scenario was chosen, saying what there is instead."""
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
