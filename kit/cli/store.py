"""The store's commands: kit publish, yank, install, promote, promotions, store search and store show.
Like every command they only parse options and print, and import what they need when they run."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from kit.cli.base import cli, format_table, report_outcome

STORE = click.option(
    "--store", "store", default=None, metavar="STORE", help="A folder or fsspec URL (default: kit.yaml's store.url)."
)
AS = click.option(
    "--as", "as_", default=None, metavar="PRINCIPAL", help="Who acts (default: $KIT_PRINCIPAL, then the OS user)."
)
JSON_OR_TABLE = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)


def _principal(as_: str | None) -> str:
    from kit.spec.policy import resolve_principal

    return resolve_principal(as_)


def _short(bundle_id: str | None) -> str:
    return (bundle_id or "")[:12]


@cli.command()
@click.argument("workflow")
@STORE
@AS
@click.option(
    "--sign", "sign_key", default=None, metavar="KEY", help="Sign the verification record with this ed25519 key."
)
@click.pass_obj
def publish(ctx, workflow: str, store: str | None, as_: str | None, sign_key: str | None) -> None:
    """Publish WORKFLOW's bundle to the store, once it passes `kit verify` (run now if it has not)."""
    from kit.store.publish import publish as publish_bundle

    result = publish_bundle(ctx.project, ctx.ledger, workflow, store, _principal(as_), sign_key=sign_key)
    if not result.written:
        click.echo(f"{result.name}@{result.version} is already published as bundle {result.bundle_id}: nothing written")
        return
    if not result.exclusive_known:
        click.echo(f"warning: {result.store}: index files are written by {result.exclusive}", err=True)
    verified = "verified now" if result.verified_now else "verified before"
    click.echo(
        f"published {result.name}@{result.version} (bundle {result.bundle_id}, {verified}) to {result.store}: "
        f"{result.objects} new object(s), record {', '.join(r[:12] for r in result.records)}"
    )


@cli.command()
@click.argument("ref", metavar="NAME@VERSION")
@click.option("--reason", required=True, help="Why the version must not be used (kept in the store).")
@STORE
@AS
@click.pass_obj
def yank(ctx, ref: str, reason: str, store: str | None, as_: str | None) -> None:
    """Hide NAME@VERSION from version ranges (an exact ==VERSION still installs it)."""
    from kit.store.publish import describe_yank
    from kit.store.publish import yank as yank_version

    click.echo(describe_yank(yank_version(ctx.project, ctx.ledger, ref, reason, store, _principal(as_))))


@cli.command()
@click.argument("ref", metavar="NAME@SPEC")
@STORE
@AS
@click.pass_obj
def install(ctx, ref: str, store: str | None, as_: str | None) -> None:
    """Install the newest version matching SPEC (~=1.3, >=1.2,<2, ==1.3.0), every file checked, into
    .kit/installed/; kit.lock records it. `kit run NAME@SPEC` runs it."""
    from kit.store.install import install as install_bundle

    result = install_bundle(ctx.project, ctx.ledger, ref, store, _principal(as_))
    if result.yank:
        click.echo(f"warning: {result.name} {result.version} is yanked: {result.yank.get('reason')}", err=True)
    if not result.changed:
        click.echo(
            f"{result.name} {result.version} (bundle {_short(result.bundle_id)}) is installed already: nothing changed"
        )
        return
    click.echo(f"installed {result.name} {result.version} (bundle {result.bundle_id}) into {result.path}")
    click.echo(f"  run it: kit run {result.name}@{result.spec or '==' + result.version}")


@cli.command()
@click.argument("ref", metavar="NAME@VERSION")
@click.option("--to", "env", required=True, metavar="ENV", help="The environment to promote to.")
@STORE
@AS
@click.pass_obj
def promote(ctx, ref: str, env: str, store: str | None, as_: str | None) -> None:
    """Promote a published NAME@VERSION to ENV (needs promote:ENV, a passing verification under ENV, and an
    approval when the workflow's environments.ENV.approval asks); rollback is promoting an older version."""
    from kit.store.promote import promote as promote_version

    result = promote_version(ctx.project, ctx.ledger, ref, env, _principal(as_), store)
    if result.outcome is not None:
        click.echo(f"the promotion of {result.name} {result.version} to {env} waits for an approval")
        report_outcome(ctx, result.outcome)
        click.echo(f"  the promotion is appended when `kit resume {result.outcome.run_id}` ends the approved run")
        sys.exit(result.outcome.exit_code)
    entry = result.entry
    was = f" (was {result.previous['version']})" if result.previous else ""
    click.echo(
        f"promoted {result.name} {result.version} (bundle {_short(result.bundle_id)}) to {env}{was}: "
        f"channel entry {entry['seq']}, hash {entry['hash'][:12]}"
    )


def after_resume(ctx, run_id: str) -> None:
    """`kit resume` of an approved promotion gate appends its promotion."""
    from kit.store.promote import finish_promotion

    entry = finish_promotion(ctx.ledger, run_id)
    if entry is not None:
        click.echo(
            f"promoted {entry.get('version')} (bundle {_short(entry.get('bundle_id'))}), approved by "
            f"{entry.get('approved_by')}: channel entry {entry['seq']}"
        )


@cli.command()
@click.argument("name")
@click.option("--env", default=None, help="Only this environment.")
@click.option(
    "--at", "at", default=None, metavar="TIME", help="Say what was live at TIME (ISO 8601, UTC unless it says)."
)
@STORE
@JSON_OR_TABLE
@click.pass_obj
def promotions(ctx, name: str, env: str | None, at: str | None, store: str | None, fmt: str) -> None:
    """NAME's promotion history per environment, and what is live (now, or at TIME)."""
    from kit.store.promote import promotions as read_history

    history = read_history(ctx.project, name, env, at, store)
    if fmt == "json":
        click.echo(json.dumps({"entries": history.entries, "live": history.live, "at": at}, indent=2))
        return
    rows = [
        (e, h["seq"], h["time"], h["version"], _short(h["bundle_id"]), h["principal"], h.get("approved_by") or "")
        for e, entries in history.entries.items()
        for h in entries
    ]
    click.echo(format_table(["env", "seq", "time", "version", "bundle", "by", "approved by"], rows))
    when = f"at {at}" if at else "now"
    for each, live in history.live.items():
        what = f"{live['version']} (bundle {_short(live['bundle_id'])})" if live else "nothing"
        click.echo(f"live in {each} {when}: {what}")


@cli.group("store")
def store_group() -> None:
    """Find workflows in a store and what is known about them."""


@store_group.command("search")
@click.argument("text", required=False, default="")
@click.option("--takes", multiple=True, metavar="NAME:TYPE", help="Takes a parameter NAME of TYPE (repeatable).")
@click.option("--gives", multiple=True, metavar="NAME:TYPE", help="Gives an output NAME of TYPE (repeatable).")
@STORE
@JSON_OR_TABLE
@click.pass_obj
def store_search(ctx, text: str, takes: tuple[str, ...], gives: tuple[str, ...], store: str | None, fmt: str) -> None:
    """Workflows whose name, description or tags hold TEXT, and whose contract takes and gives what is asked."""
    from kit.bundles.store import open_configured
    from kit.store.catalog import search

    found = search(open_configured(ctx.project, store), text, list(takes), list(gives))
    if fmt == "json":
        click.echo(json.dumps(found, indent=2))
        return
    if not found:
        click.echo("no workflow matches")
        return
    rows = [
        (e["name"], e["version"], ", ".join(e.get("tags", [])), _takes_gives(e), e.get("description", ""))
        for e in found
    ]
    click.echo(format_table(["name", "version", "tags", "takes -> gives", "description"], rows))


def _takes_gives(entry: dict[str, Any]) -> str:
    contract = entry.get("contract") or {}
    takes = ", ".join(f"{k}:{v.get('type') or 'any'}" for k, v in (contract.get("params") or {}).items())
    gives = ", ".join(f"{k}:{v.get('type') or 'any'}" for k, v in (contract.get("outputs") or {}).items())
    return f"{takes} -> {gives}"


@store_group.command("show")
@click.argument("ref", metavar="NAME[@SPEC]")
@STORE
@JSON_OR_TABLE
@click.pass_obj
def store_show(ctx, ref: str, store: str | None, fmt: str) -> None:
    """NAME's versions (those matching SPEC): bundle, publisher, yanks, verification records and their verdict
    counts, and the environments each is live in."""
    from dataclasses import asdict

    from kit.bundles.store import open_configured
    from kit.store.catalog import show

    facts = show(open_configured(ctx.project, store), ref)
    if fmt == "json":
        click.echo(json.dumps([asdict(f) for f in facts], indent=2))
        return
    for f in facts:
        live = f"  live in {', '.join(f.live_in)}" if f.live_in else ""
        click.echo(f"{f.version}  bundle {_short(f.bundle_id)}  by {f.publisher} at {f.time}{live}")
        if f.yank:
            click.echo(f"  yanked by {f.yank.get('principal')} at {f.yank.get('time')}: {f.yank.get('reason')}")
        for r in f.records:
            if r.get("damaged"):
                click.echo(f"  DAMAGED record {r['digest'][:12]}: {r['damaged']}")
                continue
            counts = ", ".join(f"{n} {label}" for label, n in sorted(r["counts"].items())) or "no verdicts"
            status = "verified" if r["passed"] else "NOT verified"
            click.echo(
                f"  {status}{' under ' + r['env'] if r['env'] else ''}{' (signed)' if r['signed'] else ''}: {counts}"
                f"  record {r['digest'][:12]}"
            )
        if not f.records:
            click.echo("  no verification record")
