"""`kit fsck`: is everything kit keeps still what it was? (DESIGN section 7, integrity)

Every object in `.kit/objects/` is re-hashed against its name; every reference from
the ledger (outputs, LLM calls, the files of the bundles runs used, executed
notebooks) must lead to something that exists; the audit chain and its head must
hold. Each problem is named, with who made the thing that is damaged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kit.base.digests import sha256_file
from kit.ledger.ledger import Ledger
from kit.ledger.objects import ObjectStore


@dataclass
class Report:
    objects: int = 0
    references: int = 0
    notebooks: int = 0
    audit_entries: int = 0
    problems: list[str] = field(default_factory=list)


def check(ledger: Ledger, store: ObjectStore) -> Report:
    report = Report()
    corrupt: set[str] = set()
    for name in store.digests():
        report.objects += 1
        actual = sha256_file(store.path(name))
        if actual != name:
            corrupt.add(name)
            origin = ledger.object_origin(name)
            report.problems.append(
                f"object sha256:{name} is corrupt: its bytes hash to sha256:{actual}"
                + (f" (made by {origin})" if origin else " (nothing in the ledger refers to it)")
            )
    for digest, who in ledger.object_references():
        report.references += 1
        if digest not in corrupt and not store.has(digest):
            report.problems.append(f"{who} refers to object sha256:{digest}, which is missing from {store.root}")
    for row in ledger.executed_notebooks():
        report.notebooks += 1
        if not Path(row["path"]).is_file():
            report.problems.append(
                f"run {row['run_id']}, step {row['step_id']}: its executed notebook {row['path']} is missing"
            )
    report.audit_entries, problem = ledger.verify_audit()
    if problem is not None:
        report.problems.append(f"audit chain broken: {problem.message}")
    failed = sorted(ledger.db.pending_dir.glob("failed/*.json"))
    for path in failed:
        reason = path.with_suffix(".error")
        why = reason.read_text().strip() if reason.is_file() else "unknown"
        report.problems.append(f"a journaled batch could not be applied and waits in {path} ({why})")
    return report
