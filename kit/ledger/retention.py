"""`kit gc`: delete runs older than their workflow's retention, and reclaim their space.

A run is kept, whatever its age, while a scenario file names it (`source.run`), or
while it is still running or waiting. Its ledger rows, its executed notebooks and
the objects nothing else refers to any more are deleted; each deleted run is
appended to the audit trail (DESIGN section 11). The audit table itself is never
touched.
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


def collect(project: Project, actor: str, older_than: str | None = None, dry_run: bool = False) -> Collection:
    ledger = Ledger(project.ledger_path)
    store = ObjectStore(project.objects_dir)
    try:
        override = parse_duration(older_than) if older_than else None
    except ValueError as exc:
        raise InvalidInput(f"--older-than: {exc}") from None
    now = clock.now()
    protected = _scenario_runs(project)
    result = Collection()
    limits: dict[str, float | None] = {}
    for run in ledger.runs_for_retention():
        if run["status"] in ("running", "waiting") or run["started_at"] is None:
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
        result.runs.append(run["run_id"])
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
