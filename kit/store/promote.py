"""`kit promote NAME@VERSION --to ENV` and `kit promotions NAME`: which bundle an environment runs.

A promotion needs the entitlement `promote:ENV` (a denial exits 4 and is audited), a
passing verification of that bundle id under ENV's configuration (run now on the fetched
bundle when the ledger has none), and, when the workflow's `environments.ENV.approval`
asks for one, an approval. It is appended to the store's hash-chained
`channels/NAME/ENV.jsonl` and to the audit trail. Rollback is promoting an older version.

A pending promotion is a run of a tiny workflow whose one step, `promotion`, is an
approval gate (written under `.kit/promotions/`): `kit approve RUN promotion --as Q` decides
it with the usual policy (approver roles, four eyes, deadlines, finality) and `kit resume
RUN` ends it, appending the promotion when the gate was approved (`finish_promotion`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kit.bundles.admission import NoVerifiedRecord, check_record, check_records, trusted_keys
from kit.bundles.store import NoMatch, WorkflowStore, check_name, live_at, open_configured, parse_time, split_ref
from kit.errors import InvalidInput, PermissionDenied
from kit.ledger.audit import AuditEvent
from kit.ledger.ledger import Ledger
from kit.spec.project import Project
from kit.store.common import record_action
from kit.store.install import fetch_checked
from kit.store.publish import recorded_verification, verified_record

GATE_STEP = "promotion"


@dataclass
class Promotion:
    name: str
    version: str
    bundle_id: str
    env: str
    entry: dict[str, Any] | None = None  # the channel entry, once appended
    outcome: Any = None  # the gate run's outcome, while it waits for approval
    verified_now: bool = False
    previous: dict[str, Any] | None = None  # what was live before


def promote(project: Project, ledger: Ledger, ref: str, env: str, principal: str, given_store: str | None) -> Promotion:
    name, spec = split_ref(ref)
    version = spec.removeprefix("==").strip()
    if not version or any(ch in version for ch in "<>~=!,*"):
        raise InvalidInput(f"kit promote {ref}: name one version, as NAME@VERSION (rollback is promoting an older one)")
    check_name(env, "environment")
    needed = f"promote:{env}"
    if project.access.missing(principal, [needed]):
        roles = ", ".join(sorted(project.access.roles_of(principal))) or "no roles"
        message = f"{principal!r} ({roles}) may not promote to {env}: it needs the entitlement {needed}"
        ledger.audit(
            AuditEvent(principal, "store.promote.denied", f"{name}@{version}", {"env": env, "reason": message})
        )
        raise PermissionDenied(message)

    store = open_configured(project, given_store)
    version, index_entry = store.require_published(name, version)
    yank = store.yank_of(name, version)
    if yank is not None:
        raise InvalidInput(f"{name}@{version} is yanked ({yank.get('reason')}): a yanked version is not promoted")
    bundle_id = index_entry["bundle_id"]
    workflow = project.load_workflow(fetch_checked(project, store, name, version, bundle_id))
    declared = workflow.spec.environments
    if declared and env not in declared:
        raise InvalidInput(
            f"{name} {version} declares no environment {env!r} (its environments: {', '.join(declared)})"
        )

    record_digest, verified_now = _verification_under(project, ledger, store, workflow, bundle_id, env, principal)
    result = Promotion(name, version, bundle_id, env, verified_now=verified_now)
    history = store.channel(name, env)
    result.previous = history[-1] if history else None
    fields = {"version": version, "bundle_id": bundle_id, "principal": principal, "verification": record_digest}

    approval = declared[env].approval if env in declared else None
    if approval is None:
        result.entry = _append(ledger, store, name, env, fields)
        return result
    result.outcome = _start_gate(project, ledger, store, name, env, fields, approval)
    return result


def _verification_under(project, ledger, store, workflow, bundle_id: str, env: str, principal: str) -> tuple[str, bool]:
    """The digest of a passing verification of `bundle_id` under `env`: the ledger's, else one the store holds
    (checked, and signed by a trusted key when kit.yaml lists any), else `kit verify --env ENV` runs now on
    the fetched bundle. The record goes into the store (records accumulate); whether verify ran now."""
    import json

    found = recorded_verification(ledger, bundle_id, env)
    verified_now = False
    if found is not None:
        digest_, data = found
    else:
        try:  # the lock was checked against the index by fetch_checked already
            return check_records(store, store.lock_of(bundle_id), trusted_keys(project), env=env)[0][0], False
        except NoVerifiedRecord:
            digest_, data, verified_now = verified_record(project, ledger, workflow, bundle_id, principal, None, env)
    check_record(store, store.lock_of(bundle_id), digest_, json.loads(data))
    store.put_record(bundle_id, digest_, data)
    return digest_, verified_now


def _append(ledger: Ledger, store: WorkflowStore, name: str, env: str, fields: dict[str, Any], **info: Any) -> dict:
    entry = store.append_channel(name, env, fields)
    record_action(
        ledger,
        "promote",
        store,
        name,
        fields["version"],
        fields["bundle_id"],
        fields["principal"],
        env=env,
        info={"seq": entry["seq"], "hash": entry["hash"], "verification": fields["verification"], **info},
    )
    return entry


def _start_gate(project: Project, ledger: Ledger, store: WorkflowStore, name: str, env: str, fields, approval):
    """Run the promotion's approval gate: a tiny workflow, so approving and resuming work as for any run."""
    import yaml

    from kit.base.clock import new_run_id
    from kit.execution.coordinator import Coordinator, RunRequest

    folder = project.home / "promotions" / f"{name}-{env}-{fields['version']}-{new_run_id()}"
    folder.mkdir(parents=True)
    gate = {"approvers": list(approval.approvers), "show": []}
    if approval.timeout:
        gate["timeout"] = approval.timeout
    manifest = {
        "workflow": f"promote-{name}-{env}",
        "version": fields["version"],
        "description": f"promote {name} {fields['version']} (bundle {fields['bundle_id'][:12]}) to {env}",
        "steps": {GATE_STEP: {"approval": gate}},
    }
    (folder / "workflow.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    workflow = project.load_workflow(folder / "workflow.yaml")  # an approval nobody could give is refused here
    outcome = Coordinator(project, progress=False).run(
        RunRequest(workflow=workflow, params={}, principal=fields["principal"])
    )
    record_action(
        ledger,
        "promote.requested",
        store,
        name,
        fields["version"],
        fields["bundle_id"],
        fields["principal"],
        env=env,
        info={"run_id": outcome.run_id, "verification": fields["verification"]},
    )
    return outcome


def finish_promotion(ledger: Ledger, run_id: str) -> dict[str, Any] | None:
    """After `kit resume RUN`: when RUN is an approved promotion gate whose promotion is not appended yet,
    append it (the promoter as principal, the approver in the entry); the entry, else None."""
    if not ledger.exists:
        return None
    actions = [a for a in ledger.store_actions() if (a.get("info") or {}).get("run_id") == run_id]
    request = next((a for a in actions if a["action"] == "promote.requested"), None)
    if request is None or any(a["action"] == "promote" for a in actions):
        return None
    run = ledger.run(run_id)
    decision = ledger.decision(run_id, GATE_STEP)
    if run is None or run["status"] != "succeeded" or decision is None or decision["decision"] != "approved":
        return None
    store = WorkflowStore.open(request["store"])
    fields = {
        "version": request["version"],
        "bundle_id": request["bundle_id"],
        "principal": request["principal"],
        "verification": request["info"]["verification"],
        "approved_by": decision["principal"],
    }
    return _append(ledger, store, request["name"], request["env"], fields, run_id=run_id)


@dataclass
class History:
    name: str
    store: str
    entries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # env -> its channel, oldest first
    live: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # env -> live entry (at --at, or now)


def promotions(project: Project, name: str, env: str | None, at: str | None, given_store: str | None) -> History:
    check_name(name)
    moment = None
    if at is not None:
        try:
            moment = parse_time(at)
        except ValueError:
            raise InvalidInput(f"--at {at!r}: expected an ISO 8601 time, like 2026-11-27T10:00:00Z") from None
    store = open_configured(project, given_store)
    envs = [check_name(env, "environment")] if env else store.environments(name)
    result = History(name, store.url)
    for each in envs:
        history = store.channel(name, each)
        result.entries[each] = history
        result.live[each] = live_at(history, moment) if moment is not None else (history[-1] if history else None)
    if not any(result.entries.values()):
        where = f" to {env}" if env else ""
        raise NoMatch(f"{name} was never promoted{where} in {store.url}")
    return result
