"""`kit publish` and `kit yank`: putting a verified bundle into the store, and hiding a version from ranges.

Nothing unverified gets in: a bundle is published only with a passing verification of its
exact id, which `kit publish` runs when the ledger has none. A published `NAME@VERSION` is
immutable: the same bundle again writes nothing and succeeds; another bundle is refused
(exit 2) naming both ids, and of two publishers racing for one version the index's
exclusive write lets exactly one win. Objects go first, then the lock and records, the
index entry last: an interrupted publish leaves nothing a reader can see.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.bundles.admission import check_record
from kit.bundles.compose import lock_now
from kit.bundles.store import (
    VersionTaken,
    WorkflowStore,
    check_name,
    open_configured,
    parse_version,
    split_ref,
    store_time,
)
from kit.errors import InvalidInput, KitError
from kit.ledger.ledger import Ledger
from kit.spec import contracts
from kit.spec.manifest import Workflow
from kit.spec.project import Project
from kit.store.common import record_action


@dataclass
class Publication:
    name: str
    version: str
    bundle_id: str
    store: str
    written: bool  # False: this bundle was published under this version already
    objects: int = 0  # objects written now (the others were in the store)
    records: list[str] = field(default_factory=list)
    verified_now: bool = False
    exclusive: str = ""  # how the store creates index files (see WorkflowStore.exclusive)
    exclusive_known: bool = True


def contract_of(workflow: Workflow) -> dict[str, Any]:
    """What a workflow takes and gives, with types: how `kit store search --takes/--gives` finds it."""
    params = {
        name: {
            "type": spec.type,
            "required": spec.required,
            **({"description": spec.description} if spec.description else {}),
            **({"default": spec.default} if not spec.required else {}),
        }
        for name, spec in workflow.spec.params.items()
    }
    outputs = {}
    for step_id in workflow.order:
        for name, spec in workflow.steps[step_id].spec.outputs.items():
            types = contracts.json_types_of(spec)
            outputs[f"{step_id}.{name}"] = {
                "type": sorted(types)[0] if types and len(types) == 1 else (sorted(types) if types else None),
                **({"schema": spec} if isinstance(spec, dict) else {}),
            }
    return {"params": params, "outputs": outputs}


def recorded_verification(ledger: Ledger, bundle_id: str, env: str | None, signed: bool = False):
    """(record digest, record bytes) of the ledger's latest passing verification of exactly `bundle_id` (under
    `env`, when given; signed, when asked), when its record file is still there and unchanged; else None."""
    import json

    from kit.bundles.attestation import record_digest

    row = ledger.verification_of(bundle_id, env=env)
    if row is None or (signed and not row.get("signed")):
        return None
    path = Path(row.get("record_path") or "")
    try:
        data = path.read_bytes()
        found = record_digest(json.loads(data))
    except (OSError, ValueError, KitError):
        return None
    return (found, data) if found == row.get("record_digest") else None


def verified_record(
    project: Project, ledger: Ledger, workflow: Workflow, bundle_id: str, principal: str, sign_key, env=None
) -> tuple[str, bytes, bool]:
    """A passing verification record of exactly `bundle_id` (under `env`, when given): (digest, bytes, whether
    `kit verify` ran now). The ledger's is used when there is one (signed, when a key is given); else it runs."""
    found = recorded_verification(ledger, bundle_id, env, signed=sign_key is not None)
    if found is not None:
        return (*found, False)
    from kit.verification.verify import verify

    result = verify(project, workflow, env=env, principal=principal, sign_key=sign_key)
    if result.bundle_id != bundle_id:
        raise KitError(
            f"the workflow changed while it was being verified (bundle {bundle_id[:12]} -> {result.bundle_id[:12]})"
        )
    if not result.passed:
        problems = "; ".join(str(p) for p in result.problems[:3]) or "see kit verify"
        more = f" (and {len(result.problems) - 3} more)" if len(result.problems) > 3 else ""
        where = f" under {env}" if env else ""
        raise KitError(
            f"{workflow.name} {workflow.version} (bundle {bundle_id[:12]}) is not verified{where}: {problems}{more}"
        )
    from kit.bundles.attestation import record_digest

    return record_digest(result.envelope), Path(result.record_path).read_bytes(), True


def publish(
    project: Project,
    ledger: Ledger,
    workflow_ref: str,
    store_url: str | None,
    principal: str,
    sign_key: str | None = None,
) -> Publication:
    workflow = project.load_workflow(project.find_workflow(workflow_ref))
    name, version = check_name(workflow.name), workflow.version
    parse_version(version)
    lock = lock_now(project, workflow)[0]  # a composed workflow is published with its ranges pinned
    bundle_id = lock["bundle_id"]
    store = open_configured(project, store_url)
    result = Publication(
        name, version, bundle_id, store.url, False, exclusive=store.exclusive, exclusive_known=store.exclusive_known
    )
    if _already(store, name, version, bundle_id):
        return result
    digest_, record, result.verified_now = verified_record(project, ledger, workflow, bundle_id, principal, sign_key)
    records = {digest_: record}
    for env in workflow.spec.environments:  # the verifications under each environment too: records accumulate
        found = recorded_verification(ledger, bundle_id, env)
        if found is not None:
            records.setdefault(*found)

    base = workflow.dir.resolve()
    for key, file_digest in lock["files"].items():  # 1. objects
        result.objects += store.put_file(base / key, file_digest)
    store.put_lock(lock)  # 2. the lock and the record
    store.lock_of(bundle_id)  # read back: a damaged lock already there is not published over
    for record_digest, data in records.items():
        check_record(store, lock, record_digest, json.loads(data))  # never publish a record of another bundle
        store.put_record(bundle_id, record_digest, data)
        result.records.append(record_digest)
    entry = {  # 3. the index entry, exclusively, last
        "name": name,
        "version": version,
        "bundle_id": bundle_id,
        "description": workflow.spec.description,
        "tags": list(workflow.spec.tags),
        "contract": contract_of(workflow),
        "publisher": principal,
        "time": store_time(),
        "records": result.records,
        "kit_version": _kit_version(),
    }
    if not store.add_entry(entry):  # another publisher got there first: same bundle (fine) or VersionTaken
        if _already(store, name, version, bundle_id):
            return result
        raise KitError(f"store {store.url}: index/{name}/{version}.json exists but cannot be read")
    result.written = True
    record_action(
        ledger,
        "publish",
        store,
        name,
        version,
        bundle_id,
        principal,
        info={"records": result.records, "objects_written": result.objects},
    )
    return result


def _already(store: WorkflowStore, name: str, version: str, bundle_id: str) -> bool:
    """True when this bundle is published under `version`; VersionTaken when another bundle is."""
    found = store.published(name, version)
    if found is None:
        return False
    spelled, entry = found
    if entry["bundle_id"] == bundle_id:
        return True
    raise VersionTaken(
        f"{name}@{spelled} is published in {store.url} with bundle {entry['bundle_id']}; this workflow is bundle "
        f"{bundle_id}: a published version never changes, so give the workflow a new version"
    )


def _kit_version() -> str:
    from kit import __version__

    return __version__


@dataclass
class Yank:
    name: str
    version: str
    bundle_id: str
    written: bool
    yank: dict[str, Any]


def yank(project: Project, ledger: Ledger, ref: str, reason: str, store_url: str | None, principal: str) -> Yank:
    """Hide NAME@VERSION from ranges (an exact `==` still installs it); yanking twice writes nothing."""
    name, spec = split_ref(ref)
    version = spec.removeprefix("===").removeprefix("==").strip()
    if not version or any(ch in version for ch in "<>~=!,*"):
        raise InvalidInput(f"kit yank {ref}: name one version, as NAME@VERSION")
    if not reason.strip():
        raise InvalidInput("kit yank: --reason must say why")
    store = open_configured(project, store_url)
    spelled, entry = store.require_published(name, version)
    info = {"name": name, "version": spelled, "bundle_id": entry["bundle_id"], "reason": reason, "principal": principal}
    info["time"] = store_time()
    written = store.yank(name, spelled, info)
    if not written:
        return Yank(name, spelled, entry["bundle_id"], False, store.yank_of(name, spelled) or {})
    record_action(ledger, "yank", store, name, spelled, entry["bundle_id"], principal, info={"reason": reason})
    return Yank(name, spelled, entry["bundle_id"], True, info)


def describe_yank(result: Yank) -> str:
    if result.written:
        return f"yanked {result.name}@{result.version}: ranges skip it now; =={result.version} still installs it"
    return (
        f"{result.name}@{result.version} was already yanked by {result.yank.get('principal')} at "
        f"{result.yank.get('time')}: {json.dumps(result.yank.get('reason'))}; nothing written"
    )
