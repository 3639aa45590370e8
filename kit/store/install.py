"""`kit install NAME@SPEC`, and which bundle `kit run NAME@SPEC` or `kit run NAME --env ENV` runs.

Nothing gets out of the store unchecked: the lock must hash to the bundle id the index
names, a passing verification record must have that id as its subject (signed by a key
kit.yaml trusts, when it lists any), and every file is re-hashed against the lock. A
mismatch is refused naming the file and both digests, and nothing is installed: the files
go to a temporary folder renamed to `.kit/installed/<bundle_id>/` last.

`kit.lock` at the project root is JSON (like `workflow.lock`), one entry per workflow
name: the spec asked for, the version and bundle id it resolved to, the store, when.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.base.clock import utcnow
from kit.base.digests import is_sha256
from kit.bundles.admission import check_records, trusted_keys
from kit.bundles.store import (
    StoreDamaged,
    WorkflowStore,
    check_name,
    configured_url,
    fetched_lock,
    installed_dir,
    open_configured,
    parse_spec,
    parse_version,
    split_ref,
)
from kit.errors import InvalidInput
from kit.ledger.ledger import Ledger
from kit.spec.project import Project
from kit.store.common import record_action

KIT_LOCK = "kit.lock"


def read_kit_lock(project: Project) -> dict[str, Any]:
    path = project.root / KIT_LOCK
    if not path.is_file():
        return {"installed": {}}
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise InvalidInput(f"{path}: not a readable kit.lock (JSON): {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("installed"), dict):
        raise InvalidInput(f'{path}: malformed kit.lock: expected {{"installed": {{NAME: {{...}}}}}}')
    for name, entry in data["installed"].items():
        if not (
            isinstance(entry, dict) and isinstance(entry.get("version"), str) and is_sha256(entry.get("bundle_id"))
        ):
            raise InvalidInput(
                f"{path}: malformed kit.lock: installed.{name} needs a version and a bundle_id (64 hex "
                f"digits); found {json.dumps(entry)[:120]}: kit install it again"
            )
    return data


def write_kit_lock(project: Project, data: dict[str, Any]) -> Path:
    """Written whole through a temporary file, so a killed install never leaves half a kit.lock."""
    path = project.root / KIT_LOCK
    fd, tmp = tempfile.mkstemp(dir=project.root, prefix=".kit.lock.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def fetch_checked(project: Project, store: WorkflowStore, name: str, version: str, bundle_id: str) -> Path:
    """Bring the bundle the index names for `name` at `version` into `.kit/installed/<bundle_id>/`, every check
    passed; its manifest."""
    lock = store.lock_of_version(name, version, bundle_id)  # the lock hashes to the id, and is of this version
    check_records(store, lock, trusted_keys(project))  # = the record's subject, signed when kit.yaml asks
    project.ensure_home()
    return store.fetch(bundle_id, installed_dir(project, bundle_id))  # every file re-hashed


@dataclass
class Installation:
    name: str
    spec: str
    version: str
    bundle_id: str
    path: Path
    changed: bool  # False: this was installed already
    yank: dict[str, Any] | None = None  # the version is yanked (an exact pin installs it anyway)


def install(project: Project, ledger: Ledger, ref: str, given_store: str | None, principal: str) -> Installation:
    name, spec = split_ref(ref)
    store = open_configured(project, given_store)
    version, bundle_id = store.resolve(name, spec)
    known = read_kit_lock(project)
    before = known["installed"].get(name) or {}
    target = installed_dir(project, bundle_id)
    yank = store.yank_of(name, version)
    if before.get("bundle_id") == bundle_id and before.get("spec") == spec and target.is_dir():
        fetched_lock(target, bundle_id)  # still intact
        return Installation(name, spec, version, bundle_id, target, changed=False, yank=yank)
    manifest = fetch_checked(project, store, name, version, bundle_id)
    known["installed"][name] = {
        "spec": spec,
        "version": version,
        "bundle_id": bundle_id,
        "store": store.url,
        "installed_at": utcnow(),
    }
    write_kit_lock(project, known)
    record_action(ledger, "install", store, name, version, bundle_id, principal, info={"spec": spec})
    return Installation(name, spec, version, bundle_id, manifest.parent, changed=True, yank=yank)


def manifest_to_run(project: Project, ref: str, env: str | None, note=print) -> Path:
    """The manifest `kit run REF [--env ENV]` runs: from a store (`note` says which bundle) or the working tree."""
    found = workflow_to_run(project, ref, env)
    if found is None:
        try:
            return project.find_workflow(ref)
        except InvalidInput as exc:
            if env is None or not configured_url(project):
                raise
            raise InvalidInput(f"{exc.message}; and {ref} was never promoted to {env} in {configured_url(project)}")
    manifest, message = found
    note(message)
    return manifest


def workflow_to_run(project: Project, ref: str, env: str | None) -> tuple[Path, str] | None:
    """What `kit run REF` runs when REF names something from a store: the manifest and a note saying which
    bundle. `NAME@SPEC` is the installed bundle kit.lock names; `NAME --env ENV` is the bundle promoted to
    ENV, once a store is configured and NAME was promoted there. None: REF is a workflow of the working tree."""
    if "@" in ref and not Path(ref).exists():
        return _installed(project, ref)
    if env is None or Path(ref).exists() or not configured_url(project):
        return None
    try:
        name = check_name(ref)
    except InvalidInput:
        return None
    store = open_configured(project, None)
    history = store.channel(name, env)
    if not history:
        return None
    live = history[-1]
    bundle_id = live.get("bundle_id") or ""
    target = installed_dir(project, bundle_id)
    if target.is_dir():
        lock = fetched_lock(target, bundle_id)
        if lock.get("workflow") != name:
            raise StoreDamaged(f"{target} holds workflow {lock.get('workflow')!r}, not {name!r}")
        manifest = target / lock.get("manifest", "workflow.yaml")
    else:
        manifest = fetch_checked(project, store, name, str(live.get("version")), bundle_id)
    return manifest, (
        f"running {name} {live.get('version')} (bundle {bundle_id[:12]}), promoted to {env} "
        f"by {live.get('principal')} at {live.get('time')}"
    )


def _installed(project: Project, ref: str) -> tuple[Path, str]:
    name, spec = split_ref(ref)
    wanted = parse_spec(spec)
    entry = read_kit_lock(project)["installed"].get(name)
    if entry is None:
        raise InvalidInput(f"{name} is not installed in {project.root} (kit.lock): kit install {ref}")
    if spec and not wanted.contains(parse_version(entry["version"]), prereleases=True):
        raise InvalidInput(
            f"kit.lock has {name} {entry['version']} (installed as {name}@{entry.get('spec') or '*'}), which does "
            f"not match {spec}: kit install {ref}"
        )
    target = installed_dir(project, entry["bundle_id"])
    if not target.is_dir():
        raise InvalidInput(f"{name} {entry['version']} is in kit.lock but not in {target}: kit install {ref}")
    lock = fetched_lock(target, entry["bundle_id"])
    return target / lock.get("manifest", "workflow.yaml"), (
        f"running {name} {entry['version']} (bundle {entry['bundle_id'][:12]}), installed from {entry.get('store')}"
    )
