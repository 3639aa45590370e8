"""Admission: what a bundle from the store must show before kit uses it (install, run, compose, promote).

Its verification records are checked (each named by its statement's digest, its subject
the bundle id, its file digests the lock's), one of them must have passed, and when
kit.yaml trusts keys (`store: {trust: [keys/team.pub]}`) that one must be signed by one.
The bytes themselves are re-hashed when fetched (`kit.bundles.store`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kit.bundles import attestation
from kit.bundles.store import StoreDamaged, WorkflowStore
from kit.errors import InvalidInput, KitError
from kit.spec.project import Project


class NoVerifiedRecord(StoreDamaged):
    """A bundle in the store without a usable passing verification record (exit 1)."""


def trusted_keys(project: Project) -> list[Path]:
    """The public keys kit.yaml's `store.trust` lists (relative to the project); each must exist."""
    paths = []
    for name in (project.settings.get("store") or {}).get("trust") or []:
        path = (project.root / Path(name).expanduser()).resolve()
        if not path.is_file():
            raise InvalidInput(f"{project.root / 'kit.yaml'}: store.trust: no such key file {path}")
        paths.append(path)
    return paths


def record_passed(envelope: dict[str, Any]) -> bool:
    return (attestation.statement_of(envelope).get("predicate") or {}).get("verdict") == "verified"


def record_env(envelope: dict[str, Any]) -> str | None:
    return (attestation.statement_of(envelope).get("predicate") or {}).get("environment")


def check_record(store: WorkflowStore, lock: dict[str, Any], record_digest: str, envelope: dict[str, Any]) -> None:
    """A record in the store is about this bundle: its name is its statement's digest, its subject is the
    bundle id, and the file digests it names are the lock's. StoreDamaged names what does not match."""
    bundle_id = lock["bundle_id"]
    where = f"store {store.url}: bundles/{bundle_id}/records/{record_digest}.json"
    try:
        actual = attestation.record_digest(envelope)
        stmt = attestation.statement_of(envelope)
        subject = attestation.bundle_id_of(stmt)
        files = attestation.files_of(stmt)
    except (KitError, KeyError, TypeError, AttributeError, ValueError) as exc:  # any shape but the right one
        raise StoreDamaged(f"{where}: malformed verification record: {getattr(exc, 'message', exc)}") from None
    if actual != record_digest:
        raise StoreDamaged(f"{where}: its statement hashes to sha256:{actual}, not to its name: it was altered")
    if subject != bundle_id:
        raise StoreDamaged(f"{where}: its subject is bundle sha256:{subject}, not sha256:{bundle_id}")
    for key, sha in files.items():
        if lock["files"].get(key) != sha:
            raise StoreDamaged(
                f"{where}: file {key}: the record says sha256:{sha}, the lock says sha256:{lock['files'].get(key)}"
            )


def check_records(
    store: WorkflowStore, lock: dict[str, Any], trusted: list[Path], env: str | None = None
) -> list[tuple[str, dict]]:
    """The bundle's verification records in the store, every one checked (`check_record`); those that pass
    (under `env`, when given) and, when kit.yaml trusts keys, are signed by one of them. StoreDamaged when
    none is left, saying why."""
    bundle_id = lock["bundle_id"]
    short = bundle_id[:12]
    records = store.records(bundle_id)
    if not records:
        raise NoVerifiedRecord(f"store {store.url}: bundle {short} has no verification record: it cannot be used")
    good, unsigned = [], []
    for record_digest, envelope in records:
        check_record(store, lock, record_digest, envelope)
        if not record_passed(envelope) or (env is not None and record_env(envelope) != env):
            continue
        if trusted:
            try:
                attestation.check_signature(envelope, [str(p) for p in trusted])
            except KitError as exc:
                unsigned.append(f"record {record_digest[:12]}: {exc.message}")
                continue
        good.append((record_digest, envelope))
    if not good:
        if unsigned:
            raise NoVerifiedRecord(
                f"store {store.url}: no passing record of bundle {short} is signed by a key kit.yaml trusts: "
                + "; ".join(unsigned[:3])
            )
        under = f" under {env}" if env else ""
        raise NoVerifiedRecord(f"store {store.url}: bundle {short} has no passing verification record{under}")
    return good
