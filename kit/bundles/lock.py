"""Bundles: an immutable, content-addressed snapshot of a workflow and its files.

A bundle's lock lists the sha256 of every file the workflow uses (the manifest, the
notebooks, everything else in the workflow's folder such as data, and component and
environment config files elsewhere) and the component versions; the bundle id is the
sha256 of the lock as RFC 8785 canonical JSON (DESIGN section 9). Every run snapshots its bundle's
files into the object store, where an unchanged file is stored once, so any past
bundle can be materialized and run again after the files changed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kit.base.canonical import digest
from kit.errors import InvalidInput
from kit.ledger.objects import ObjectStore, sha256_file
from kit.spec.manifest import Workflow

LOCK_NAME = "workflow.lock"
_SKIP_DIRS = {"__pycache__", ".ipynb_checkpoints", ".kit", ".git"}


def _files_under(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        found = []
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
            found += [Path(root) / f for f in sorted(files) if not f.startswith(".") and f != LOCK_NAME]
        return found
    return []


def bundle_files(workflow: Workflow) -> list[Path]:
    """Every file the workflow depends on: its folder, and component and config paths elsewhere."""
    base = workflow.dir
    files = _files_under(base)
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
    files = {Path(os.path.relpath(path, base)).as_posix(): sha256_file(path) for path in bundle_files(workflow)}
    lock = {
        "workflow": workflow.name,
        "version": workflow.version,
        "manifest": workflow.path.name,
        "components": {name: c.version for name, c in sorted(workflow.spec.components.items())},
        "files": dict(sorted(files.items())),
    }
    lock["bundle_id"] = bundle_id(lock)
    return lock


def bundle_id(lock: dict[str, Any]) -> str:
    body = {k: v for k, v in lock.items() if k != "bundle_id"}
    return digest(body)


def snapshot(workflow: Workflow, lock: dict[str, Any], store: ObjectStore) -> None:
    """Copy the bundle's files into the object store; files already there are not read again."""
    for key, file_digest in lock["files"].items():
        if not store.has(file_digest):
            store.put_file(workflow.dir / key)


def write_lock(workflow: Workflow) -> tuple[Path, dict[str, Any]]:
    lock = compute_lock(workflow)
    path = workflow.dir / LOCK_NAME
    path.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    return path, lock


def read_lock(workflow: Workflow) -> dict[str, Any] | None:
    path = workflow.dir / LOCK_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise InvalidInput(f"{path}: not a readable lock file: {exc}") from None


def stale_files(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What changed between a lock file and the workflow as it is: added, removed, changed files."""
    old, new = recorded.get("files", {}), current["files"]
    changes = [f"changed {k}" for k in sorted(old) if k in new and old[k] != new[k]]
    changes += [f"added {k}" for k in sorted(set(new) - set(old))]
    changes += [f"removed {k}" for k in sorted(set(old) - set(new))]
    if recorded.get("components") != current["components"]:
        changes.append("component versions")
    if recorded.get("version") != current["version"]:
        changes.append("workflow version")
    return changes


def materialize(lock: dict[str, Any], store: ObjectStore, root: Path) -> Path:
    """Write a bundle's files out of the object store; returns the path of its manifest.

    Files outside the workflow's folder (``../config/x.yaml``) keep their place
    relative to it, so the manifest's relative paths still resolve.
    """
    ups = max((k.count("../") for k in lock["files"]), default=0)
    base = root.joinpath(*(["up"] * ups)) if ups else root
    done = root / ".complete"
    if not done.exists():
        for key, digest in lock["files"].items():
            if not store.has(digest):
                raise InvalidInput(f"bundle {lock['bundle_id'][:12]}: file {key} is missing from the object store")
            target = (base / key).resolve()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(store.read_bytes(digest))
        done.write_text(lock["bundle_id"])
    return base / lock.get("manifest", "workflow.yaml")
