"""Bundles: an immutable, content-addressed snapshot of a workflow and its files.

A bundle's lock lists the sha256 of every file the workflow uses (manifest,
notebooks, component and environment config files) and the component versions;
the bundle id is the sha256 of the canonical lock (DESIGN section 9). Every run
snapshots its bundle's files into the object store, where an unchanged file is
stored once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from kit.manifest import Workflow
from kit.objects import ObjectStore, sha256_file


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _files_under(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and ".ipynb_checkpoints" not in p.parts)
    return []


def bundle_files(workflow: Workflow) -> list[Path]:
    """Every file the workflow depends on, manifest first."""
    base = workflow.dir
    files = [workflow.path]
    files += [step.notebook for step in workflow.steps.values() if step.notebook is not None]
    for component in workflow.spec.components.values():
        files += _files_under(base / component.path)
    for environment in workflow.spec.environments.values():
        if environment.config:
            files += _files_under(base / environment.config)
    seen, unique = set(), []
    for path in files:
        resolved = path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            unique.append(resolved)
    return unique


def compute_lock(workflow: Workflow) -> dict[str, Any]:
    base = workflow.dir
    files = {}
    for path in bundle_files(workflow):
        try:
            key = path.relative_to(base).as_posix()
        except ValueError:
            key = path.as_posix()
        files[key] = sha256_file(path)
    lock = {
        "workflow": workflow.name,
        "version": workflow.version,
        "components": {name: c.version for name, c in sorted(workflow.spec.components.items())},
        "files": dict(sorted(files.items())),
    }
    lock["bundle_id"] = bundle_id(lock)
    return lock


def bundle_id(lock: dict[str, Any]) -> str:
    body = {k: v for k, v in lock.items() if k != "bundle_id"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def snapshot(workflow: Workflow, lock: dict[str, Any], store: ObjectStore) -> None:
    """Copy the bundle's files into the object store; files already there are not read again."""
    for key, digest in lock["files"].items():
        if not store.has(digest):
            path = Path(key) if Path(key).is_absolute() else workflow.dir / key
            store.put_file(path)
