"""`kit gc`: delete runs older than their workflow's retention, and reclaim their space.

A run is kept, whatever its age, while a scenario file names it (`source.run`), while
another run's cached steps use its outputs, while a publication or promotion refers to it
(the runs of the verification that let a bundle into a store or an environment, and a
promotion's approval run), or while it is still running or waiting for a person (a
scenario run left waiting by an older kit is collected). Bundles that stores refer to
keep their files (`Ledger.referenced_objects`); installed bundles are never collected. Its ledger
rows, its executed notebooks and the objects nothing else refers to any more are
deleted; each deleted run is appended to the audit trail (DESIGN section 11). The
audit table itself is never touched.

gc also removes what interrupted writers left behind (temporary objects, journal and
spool files, half-written bundles): all of it when no run is being driven, and only
what is older than an hour while one is.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from kit.base import clock
from kit.errors import InvalidInput, KitError
from kit.ledger.audit import AuditEvent
from kit.ledger.ledger import Ledger
from kit.ledger.objects import ObjectStore
from kit.spec.policy import parse_duration
from kit.spec.project import Project


@dataclass
class Collection:
    runs: list[str] = field(default_factory=list)
    kept_for_scenarios: list[str] = field(default_factory=list)
    kept_for_cache: list[str] = field(default_factory=list)
    kept_for_store: list[str] = field(default_factory=list)  # evidence of a publication or promotion
    temporary: int = 0  # leftover temporary files removed
    objects: int = 0
    bytes_freed: int = 0


def _retention(manifest: str | None) -> float | None:
    """Seconds of `policy.retention.runs` in a run's manifest, when it can still be read."""
    if not manifest or not Path(manifest).is_file():
        return None
    from kit.spec.manifest import load_workflow

    try:
        runs = load_workflow(manifest).spec.policy.retention.get("runs")
    except KitError:
        return None
    return parse_duration(runs) if runs else None


def _scenario_runs(project: Project) -> set[str]:
    from kit.spec.scenario import discover, load_scenario

    root = project.root / "scenarios"
    found = set()
    for path in discover([root]) if root.is_dir() else []:
        try:
            source = load_scenario(path).source or {}
        except KitError:
            continue
        if source.get("run"):
            found.add(str(source["run"]))
    return found


def _store_runs(ledger: Ledger) -> set[str]:
    """Runs a publication or promotion refers to: the approval runs of promotions, and the scenario and
    boundary runs of the verifications that let a bundle into a store or an environment."""
    import base64
    import json

    keep: set[str] = set()
    if not ledger.exists:
        return keep
    published: dict[str, set[str | None]] = {}
    for action in ledger.store_actions():
        if action["action"] not in ("publish", "promote", "promote.requested"):
            continue
        if (action.get("info") or {}).get("run_id"):
            keep.add(action["info"]["run_id"])
        published.setdefault(action["bundle_id"], {None}).add(action.get("env"))
    for bundle_id, envs in published.items():
        for env in envs:
            row = ledger.verification_of(bundle_id, env=env)
            try:
                envelope = json.loads(Path(row["record_path"]).read_text()) if row else {}
                checks = json.loads(base64.b64decode(envelope["payload"]))["predicate"]["checks"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            for check in checks.values():
                for items in check.values() if isinstance(check, dict) else []:
                    for item in items if isinstance(items, list) else []:
                        if isinstance(item, dict) and item.get("run_id"):
                            keep.add(item["run_id"])
    return keep


def collect(project: Project, actor: str, older_than: str | None = None, dry_run: bool = False) -> Collection:
    ledger = Ledger(project.ledger_path)
    store = ObjectStore(project.objects_dir)
    try:
        override = parse_duration(older_than) if older_than else None
    except ValueError as exc:
        raise InvalidInput(f"--older-than: {exc}") from None
    now = clock.now()
    protected = _scenario_runs(project)
    evidence = _store_runs(ledger)
    result = Collection()
    limits: dict[str, float | None] = {}
    for run in ledger.runs_for_retention():
        if run["started_at"] is None or run["status"] == "running":
            continue
        if run["status"] == "waiting" and run["scenario_id"] is None:
            continue
        manifest = run["manifest"]
        if manifest not in limits:
            limits[manifest] = _retention(manifest)
        limit = override if override is not None else limits[manifest]
        if limit is None or now - run["started_at"] <= timedelta(seconds=limit):
            continue
        if run["run_id"] in protected:
            result.kept_for_scenarios.append(run["run_id"])
            continue
        if run["run_id"] in evidence:
            result.kept_for_store.append(run["run_id"])
            continue
        result.runs.append(run["run_id"])
    while True:  # a run whose outputs a kept run's cached steps use is kept too
        used = ledger.cache_origins(result.runs) & set(result.runs)
        if not used:
            break
        result.runs = [r for r in result.runs if r not in used]
        result.kept_for_cache.extend(sorted(used))
    if not dry_run:
        result.temporary = sweep_temporary(project, store)
    if dry_run or not result.runs:
        return result

    ledger.delete_runs(
        result.runs, [AuditEvent(actor, "run.deleted", run_id, {"reason": "retention"}) for run_id in result.runs]
    )
    for run_id in result.runs:
        shutil.rmtree(project.runs_dir / run_id, ignore_errors=True)
    result.objects, result.bytes_freed = _sweep_objects(ledger, store)
    ledger.checkpoint()  # gives the freed pages back (VACUUM does not)
    return result


def _sweep_objects(ledger: Ledger, store: ObjectStore) -> tuple[int, int]:
    """Delete objects no remaining output, LLM call or bundle of a remaining run refers to."""
    keep = ledger.referenced_objects()
    count = freed = 0
    if not store.root.is_dir():
        return 0, 0
    for folder in store.root.iterdir():
        if not folder.is_dir() or len(folder.name) != 2:
            continue
        for path in folder.iterdir():
            if folder.name + path.name not in keep:
                freed += path.stat().st_size
                path.unlink()
                count += 1
    return count, freed


def sweep_temporary(project: Project, store: ObjectStore) -> int:
    """Remove what interrupted writers left: temporary objects, journal and spool files, half-written
    bundles. All of it when no run is being driven now; else only what is older than an hour."""
    import time

    from kit.ledger.driver import RunDriver

    runs_dir = project.runs_dir
    active = runs_dir.is_dir() and any(
        RunDriver(runs_dir, run.name).busy() for run in runs_dir.iterdir() if (run / "driver.lock").exists()
    )
    cutoff = time.time() - 3600 if active else float("inf")
    leftovers = list(store.temporary_files())
    leftovers += list((project.home / "pending").glob(".tmp-*"))
    leftovers += list(project.home.glob("*.tmp"))
    leftovers += list((project.home / "installed").glob(".tmp-*"))  # installs interrupted before their rename
    if runs_dir.is_dir():
        leftovers += [spool for run in runs_dir.iterdir() for spool in (run / ".spool").glob("*")]
    bundles = project.home / "bundles"
    if bundles.is_dir():
        leftovers += [b for b in bundles.iterdir() if b.is_dir() and not (b / ".complete").exists()]
    removed = 0
    for path in leftovers:
        try:
            if path.stat().st_mtime > cutoff:
                continue
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            removed += 1
        except OSError:
            continue
    return removed
