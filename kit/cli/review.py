"""For reviewers: kit report, kit diff."""

from __future__ import annotations

import click

from kit.cli.base import (
    Context,
    cli,
    pass_context,
    writable,
)
from kit.errors import InvalidInput, KitError


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

    writable(out, "-o", ctx.project.home, "html")
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
