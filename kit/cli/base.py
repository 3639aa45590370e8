"""The `kit` command group and what its commands share: the context (project, ledger), the error
path, common options, and how results are printed.

A user's mistake ends in one clear message and the design's exit code (2 invalid input, 4 denied),
never a traceback: `KitGroup` turns every `KitError` into that, in one place. Heavy imports stay
inside the commands, so the CLI starts fast.
"""

from __future__ import annotations

import functools
import json
import sys

import click

from kit.base.display import cell
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
    help="How steps execute. fork: a fresh process per step, forked from a helper that has imported what "
    "the workflow uses (the default); papermill: a fresh kernel per step (exact Jupyter semantics); "
    "warm: a kernel reused per worker, namespace reset per step (for widgets). Default: KIT_ENGINE, else fork.",
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


def start_engine_early(engine: str, executor: str | None, scheduler: str | None) -> None:
    """Start the fork engine's helper before the command reads its workflow, when its steps will fork
    here (not on a Dask cluster): the helper's imports overlap the command's own start."""
    if engine == "fork" and executor != "dask" and not scheduler:
        from kit.execution.fork_engine import prestart

        prestart()


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


def expire_overdue(ctx: Context, run_id: str | None = None) -> None:
    """Approvals past their deadline end their runs `rejected` as soon as a command looks (DESIGN section 6)."""
    from kit.execution.approvals import Approvals

    for run, step in Approvals(ctx.project, ctx.ledger).expire_overdue(run_id):
        click.echo(f"note: the approval {step} of run {run} expired: the run ended rejected", err=True)


#: How a file kit writes begins (`writable`'s `kind`): one that exists and begins otherwise is not overwritten.
OUTPUT_KINDS = {
    "html": ("an HTML report", (b"<!doctype html", b"<html")),
    "xml": ("a JUnit XML file", (b"<?xml", b"<testsuite")),
}


def writable(path: str, option: str, home=None, kind: str | None = None) -> None:
    """Check, before any work, that `path` can be written, so a long command does not end in an I/O error.

    Never a file in kit's own folder (`home`: the ledger, the audit head...), and, with `kind`, never an
    existing file that is not of that kind (a notebook, a CSV): a mistyped path does not destroy it."""
    from pathlib import Path

    target = Path(path)
    if home is not None and target.resolve().is_relative_to(Path(home).resolve()):
        raise InvalidInput(f"{option} {path}: that is inside {home}, kit's own files: write it elsewhere")
    if kind is not None and target.is_file() and target.stat().st_size:
        what, starts = OUTPUT_KINDS[kind]
        with open(target, "rb") as fh:
            begins = fh.read(64).lstrip().lower()
        if not begins.startswith(starts):
            raise InvalidInput(
                f"{option} {path}: the file exists and is not {what}; kit does not overwrite it: "
                "choose another path, or remove it first"
            )
    existed = target.exists()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a"):
            pass
    except OSError as exc:
        raise InvalidInput(f"{option} {path}: cannot write there ({exc.strerror})") from None
    if not existed:
        target.unlink()


def _terminate(signum, frame) -> None:
    """SIGTERM (and SIGHUP: the terminal closed) ends a command the way Ctrl-C does: a run is cancelled
    and left resumable."""
    raise KeyboardInterrupt


def main() -> None:
    import signal

    from kit.base import interrupts

    signal.signal(signal.SIGTERM, _terminate)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # under nohup, a closed terminal is no stop
        signal.signal(signal.SIGHUP, _terminate)
    try:
        cli.main(prog_name="kit", standalone_mode=False)
    except click.exceptions.Abort:
        for sig in interrupts.SIGNALS:  # what was running is cancelled: let the exit finish
            signal.signal(sig, signal.SIG_IGN)
        _fail("interrupted (a run in progress was cancelled; `kit resume RUN` continues it)", 130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(EXIT_INVALID if isinstance(exc, click.UsageError) else exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
