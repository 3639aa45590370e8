"""`kit export otlp`, and the export `kit run --export-otlp URL` does once the run has ended.

opentelemetry is imported only when a command sends something, so the CLI starts without it.
"""

from __future__ import annotations

import click

from kit.cli.base import cli
from kit.errors import EXIT_FAILED, InvalidInput, KitError


def _headers(pairs: tuple[str, ...]) -> dict[str, str] | None:
    headers = {}
    for pair in pairs:
        if "=" not in pair:
            raise InvalidInput(f"--header {pair!r}: expected NAME=VALUE")
        name, value = pair.split("=", 1)
        headers[name.strip()] = value
    return headers or None


def _export(ctx, run_ids: list[str], endpoint: str, with_content: bool, timeout: float | None, headers) -> None:
    from kit.export.otlp import export_runs
    from kit.ledger.objects import ObjectStore

    done = export_runs(
        ctx.ledger,
        ObjectStore(ctx.project.objects_dir),
        run_ids,
        endpoint,
        with_content=with_content,
        timeout=timeout,
        headers=headers,
    )
    for warning in done.warnings:
        click.echo(f"warning: {warning}", err=True)
    content = " with message content (redacted)" if with_content else ""
    click.echo(f"exported {done.spans} span(s) of {len(done.runs)} run(s){content} to {done.endpoint}")


@cli.group("export")
def export() -> None:
    """Send runs to other systems (OpenTelemetry)."""


@export.command("otlp")
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@click.option("--endpoint", required=True, metavar="URL", help="An OTLP/HTTP receiver (no path: /v1/traces).")
@click.option("--with-content", is_flag=True, help="Send LLM messages too (redacted); by default only references.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Seconds to wait for the receiver (default: $OTEL_EXPORTER_OTLP_TRACES_TIMEOUT, else 10).",
)
@click.option("--header", "headers", multiple=True, metavar="NAME=VALUE", help="An HTTP header (repeatable).")
@click.pass_obj
def otlp(ctx, runs: tuple[str, ...], endpoint: str, with_content: bool, timeout: float | None, headers) -> None:
    """Send RUN's spans (a run id, a prefix, or `last`) as OpenTelemetry traces, one trace per run."""
    from kit.export.otlp import traces_url

    traces_url(endpoint)  # a malformed URL is refused before the ledger is read
    run_ids = list(dict.fromkeys(ctx.ledger.resolve_run(ref) for ref in runs))
    _export(ctx, run_ids, endpoint, with_content, timeout, _headers(headers))


def export_after_run(ctx, outcome, endpoint: str) -> int:
    """`kit run --export-otlp URL`: the run is recorded whatever happens here; the exit code is the run's,
    or 1 when the run succeeded but its spans could not be sent."""
    try:
        _export(ctx, [outcome.run_id], endpoint, False, None, None)
    except KitError as exc:
        click.echo(f"error: {exc.message} (run {outcome.run_id} is recorded as {outcome.status})", err=True)
        return outcome.exit_code or EXIT_FAILED
    return outcome.exit_code
