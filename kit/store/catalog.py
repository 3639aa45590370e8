"""`kit store search` and `kit store show`: finding a workflow in a store, and what is known about it.

Search looks at each workflow's newest version that is not yanked: its name, description
and tags, and its contract (`--takes case_id:string` a parameter, `--gives
decision:object` an output, by name and type). Show lists versions with their bundle,
publisher, yanks, verification records (passing, signed, verdict counts) and the
environments each is live in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kit.bundles.admission import check_record, record_env, record_passed
from kit.bundles.attestation import statement_of
from kit.bundles.store import WorkflowStore, matching_versions, parse_spec, split_ref
from kit.errors import InvalidInput, KitError


def _field(text: str, option: str) -> tuple[str, str | None]:
    name, _, kind = text.partition(":")
    if not name.strip():
        raise InvalidInput(f"{option} {text!r}: expected NAME:TYPE (like case_id:string)")
    return name.strip(), (kind.strip() or None)


def _types(declared: Any) -> set[str] | None:
    if declared is None:
        return None
    return {declared} if isinstance(declared, str) else set(declared)


def _fits(declared: Any, wanted: str | None) -> bool:
    """A declared type fits the type asked for (an undeclared one fits anything; an integer is a number)."""
    types = _types(declared)
    if wanted is None or types is None:
        return True
    return wanted in types or (wanted == "number" and "integer" in types)


def matches(entry: dict[str, Any], text: str, takes: list[str], gives: list[str]) -> bool:
    words = text.lower().split()
    haystack = " ".join([entry.get("name", ""), entry.get("description", ""), *entry.get("tags", [])]).lower()
    if not all(w in haystack for w in words):
        return False
    contract = entry.get("contract") or {}
    params, outputs = contract.get("params") or {}, contract.get("outputs") or {}
    for item in takes:
        name, kind = _field(item, "--takes")
        if name not in params or not _fits(params[name].get("type"), kind):
            return False
    for item in gives:
        name, kind = _field(item, "--gives")
        named = [spec for key, spec in outputs.items() if key == name or key.rsplit(".", 1)[-1] == name]
        if not any(_fits(spec.get("type"), kind) for spec in named):
            return False
    return True


def search(store: WorkflowStore, text: str, takes: list[str], gives: list[str]) -> list[dict[str, Any]]:
    """The newest version (not yanked) of each workflow that matches, as its index entry."""
    for item in takes:
        _field(item, "--takes")
    for item in gives:
        _field(item, "--gives")
    found = []
    for name in store.names():
        usable = [v for v in store.versions(name) if not v.yanked]
        if not usable:
            continue
        entry = store.entry(name, usable[-1].version)
        if entry is not None and matches(entry, text, takes, gives):
            found.append(entry)
    return found


def verdict_counts(envelope: dict[str, Any]) -> dict[str, int]:
    """A verification record's verdicts counted per check: "scenarios pass", "boundary succeeded", ..."""
    checks = (statement_of(envelope).get("predicate") or {}).get("checks") or {}
    counts: dict[str, int] = {}
    for check_name, check in checks.items():
        for value in check.values() if isinstance(check, dict) else []:
            for item in value if isinstance(value, list) else []:
                if isinstance(item, dict) and "verdict" in item:
                    label = f"{check_name} {item['verdict']}"
                    counts[label] = counts.get(label, 0) + 1
    return counts


@dataclass
class VersionFacts:
    version: str
    bundle_id: str
    publisher: str | None
    time: str | None
    description: str
    yank: dict[str, Any] | None
    records: list[dict[str, Any]] = field(default_factory=list)  # digest, env, passed, signed, counts
    live_in: list[str] = field(default_factory=list)


def show(store: WorkflowStore, ref: str) -> list[VersionFacts]:
    name, spec = split_ref(ref)
    wanted = parse_spec(spec)
    versions = store.versions(name)
    if not versions:
        known = ", ".join(store.names()) or "none"
        raise InvalidInput(f"store {store.url} has no workflow {name!r} (it has: {known})")
    chosen = matching_versions(wanted, versions) if spec else versions
    if not chosen:
        listed = ", ".join(v.version for v in versions)
        raise InvalidInput(f"{name}@{spec}: no version matches in store {store.url}; published: {listed}")
    live = {}
    for env in store.environments(name):
        history = store.channel(name, env)
        if history:
            live.setdefault(history[-1].get("bundle_id"), []).append(env)
    facts = []
    for v in reversed(chosen):
        entry = store.entry(name, v.version)
        fact = VersionFacts(
            v.version,
            entry["bundle_id"],
            entry.get("publisher"),
            entry.get("time"),
            entry.get("description", ""),
            store.yank_of(name, v.version) if v.yanked else None,
            live_in=sorted(live.get(entry["bundle_id"], [])),
        )
        lock = store.lock_of(entry["bundle_id"])
        for record_digest, envelope in store.records(entry["bundle_id"]):
            facts_of_record: dict[str, Any] = {"digest": record_digest}
            try:
                check_record(store, lock, record_digest, envelope)
                facts_of_record.update(
                    env=record_env(envelope),
                    passed=record_passed(envelope),
                    signed=bool(envelope.get("signatures")),
                    counts=verdict_counts(envelope),
                )
            except KitError as exc:
                facts_of_record.update(env=None, passed=False, signed=False, counts={}, damaged=exc.message)
            fact.records.append(facts_of_record)
        facts.append(fact)
    return facts
