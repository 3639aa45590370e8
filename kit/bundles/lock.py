"""Bundles: an immutable, content-addressed snapshot of a workflow and its files.

A bundle's lock lists the sha256 of every file in the workflow's folder (the manifest,
the notebooks, data, components and environment configs, which the manifest may only
name inside that folder) and the component versions; the bundle id is the
sha256 of the lock as RFC 8785 canonical JSON (DESIGN section 9). Every run snapshots its bundle's
files into the object store, where an unchanged file is stored once, so any past
bundle can be materialized and run again after the files changed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kit.base.digests import digest, sha256_file
from kit.base.paths import OutsideRoot, inside
from kit.errors import InvalidInput, KitError
from kit.ledger.objects import CorruptObject, MissingObject, ObjectStore
from kit.spec.manifest import Workflow

LOCK_NAME = "workflow.lock"


class BundleMismatch(KitError):
    """A bundle's files do not match its lock (exit 1)."""


_SKIP_DIRS = {"__pycache__", ".ipynb_checkpoints", ".kit", ".git"}


def bundle_files(workflow: Workflow) -> list[Path]:
    """Every file of the workflow's folder (not hidden, not caches); a symlink that leads out of the
    folder, cannot be followed, or names a folder is refused (exit 2): a bundle never holds a file from
    outside its folder, nor misses one a step reads through a link."""
    base = workflow.dir.resolve()
    found = []
    for folder, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for name in dirs:
            if (Path(folder) / name).is_symlink():  # os.walk would pass it by, and the bundle miss its files
                raise InvalidInput(
                    f"{Path(folder) / name}: a symlinked folder in the workflow's folder (to "
                    f"{os.readlink(Path(folder) / name)}); a bundle holds only the folder's own files: "
                    "copy the folder in instead"
                )
        for name in sorted(files):
            if name.startswith(".") or name == LOCK_NAME:
                continue
            path = Path(folder) / name
            try:
                inside(base, path)
            except OutsideRoot as exc:
                raise InvalidInput(
                    f"{path}: a symlink in the workflow's folder leads outside it ({exc}); "
                    "a bundle holds only the folder's own files: copy the file in instead"
                ) from None
            found.append(path)
    return found


def compute_lock(workflow: Workflow, resolved: dict[str, Any] | None = None) -> dict[str, Any]:
    """The lock: every file's digest, the component versions, and what the store ranges resolved to
    (`kit.bundles.compose.resolve`), all under the bundle id."""
    base = workflow.dir.resolve()
    files = {path.relative_to(base).as_posix(): sha256_file(path) for path in bundle_files(workflow)}
    lock = {
        "workflow": workflow.name,
        "version": workflow.version,
        "manifest": workflow.path.name,
        "components": {name: c.version for name, c in sorted(workflow.spec.components.items())},
        "files": dict(sorted(files.items())),
    }
    if resolved:
        lock["resolved"] = resolved
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


def write_lock(workflow: Workflow, resolved: dict[str, Any] | None = None) -> tuple[Path, dict[str, Any]]:
    lock = compute_lock(workflow, resolved)
    path = workflow.dir / LOCK_NAME
    path.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    return path, lock


def read_lock(workflow: Workflow) -> dict[str, Any] | None:
    path = workflow.dir / LOCK_NAME
    if not path.is_file():
        return None
    try:
        lock = json.loads(path.read_text())
    except ValueError as exc:
        raise InvalidInput(f"{path}: not a readable lock file: {exc}") from None
    files = lock.get("files") if isinstance(lock, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise InvalidInput(
            f'{path}: malformed lock file: expected {{"files": {{PATH: DIGEST}}, ...}}; write it again: kit lock {workflow.dir}'
        )
    return lock


def stale_files(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What changed between a lock file and the workflow as it is: store ranges that resolve differently now
    (first: they are easy to miss), then added, removed, changed files."""
    changes = changed_resolutions(recorded.get("resolved", {}), current.get("resolved", {}))
    old, new = recorded.get("files", {}), current["files"]
    changes += [f"changed {k}" for k in sorted(old) if k in new and old[k] != new[k]]
    changes += [f"added {k}" for k in sorted(set(new) - set(old))]
    changes += [f"removed {k}" for k in sorted(set(old) - set(new))]
    if recorded.get("components") != current["components"]:
        changes.append("component versions")
    if recorded.get("version") != current["version"]:
        changes.append("workflow version")
    return changes


def changed_resolutions(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What resolves differently now than in a lock: "component prompts: ~=5.7 now resolves to 5.8.0 (locked
    5.7.1), prompt-pack bundle 9f2c... (locked 4be0...)"."""
    changes = []
    for kind in ("components", "steps"):
        old, new = recorded.get(kind, {}), current.get(kind, {})
        for key in sorted(set(old) | set(new)):
            a, b = old.get(key), new.get(key)
            if a is None or b is None:
                changes.append(f"{kind[:-1]} {key}: {'added' if a is None else 'removed'}")
            elif a.get("bundle_id") != b.get("bundle_id"):
                changes.append(
                    f"{kind[:-1]} {key}: {b['range']} now resolves to {b['version']} (locked {a.get('version')}), "
                    f"{b.get('store') or b.get('workflow')} bundle {b['bundle_id'][:12]} "
                    f"(locked {str(a.get('bundle_id'))[:12]})"
                )
    return changes


def materialize(lock: dict[str, Any], store: ObjectStore, root: Path) -> Path:
    """Write a bundle's files out of the object store; returns the path of its manifest.

    Every file's bytes are checked against the lock, whether read from the store now or
    materialized before: a snapshot that does not match is refused, naming the file and
    both digests (a `CorruptObject` or `BundleMismatch`), and nothing of it runs.
    """
    bundle = lock["bundle_id"][:12]
    if bundle_id(lock) != lock["bundle_id"]:
        raise BundleMismatch(f"bundle {bundle}: its lock does not hash to its id (sha256 {bundle_id(lock)})")
    done = root / ".complete"
    if done.exists():
        for key, expected in lock["files"].items():
            path = root / key
            actual = sha256_file(path) if path.is_file() else "missing"
            if actual != expected:
                raise BundleMismatch(
                    f"bundle {bundle}: {path} does not match its lock (sha256:{expected} in the lock, "
                    f"{actual if actual == 'missing' else 'sha256:' + actual} on disk); delete {root} to write it again"
                )
        return root / lock.get("manifest", "workflow.yaml")
    for key, file_digest in lock["files"].items():
        try:
            data = store.read_bytes(file_digest)
        except MissingObject:
            raise BundleMismatch(f"bundle {bundle}: file {key} is missing from the object store") from None
        except CorruptObject as exc:
            raise exc.made_by(f"bundle {bundle} (file {key})") from None
        target = root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    done.write_text(lock["bundle_id"])
    return root / lock.get("manifest", "workflow.yaml")
