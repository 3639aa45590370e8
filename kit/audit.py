"""The audit trail: an append-only, hash-chained table (DESIGN section 11).

Each row carries the hash of the previous one; `verify` recomputes the chain and
names the first row that was altered, removed or inserted out of order. Rows are
appended by the ledger inside the same transaction as the event they record.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64


def entry_hash(prev_hash: str, seq: int, at: str, actor: str, action: str, subject: str, detail: Any) -> str:
    body = json.dumps([prev_hash, seq, at, actor, action, subject, detail], sort_keys=True,
                      separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def event(actor: str, action: str, subject: str, detail: Any = None) -> tuple:
    """A ledger operation that appends one audit entry (seq and hashes are assigned at write time)."""
    return ("audit", {"actor": actor, "action": action, "subject": subject, "detail": detail or {}})


@dataclass
class Problem:
    seq: int
    message: str


def verify(rows: list[dict[str, Any]]) -> Problem | None:
    """The first broken entry of the chain, or None when it is intact. `rows` ordered by seq."""
    prev = GENESIS
    expected_seq = 1
    for row in rows:
        if row["seq"] != expected_seq:
            return Problem(expected_seq, f"audit entry {expected_seq} is missing (found {row['seq']} next)")
        if row["prev_hash"] != prev:
            return Problem(row["seq"], f"audit entry {row['seq']} does not follow entry {row['seq'] - 1}: the chain was broken here")
        detail = row["detail"]
        if isinstance(detail, str):
            try:
                detail = json.loads(detail)
            except ValueError:
                pass
        at = row["at"].isoformat(sep=" ") if hasattr(row["at"], "isoformat") else str(row["at"])
        digest = entry_hash(row["prev_hash"], row["seq"], at, row["actor"], row["action"], row["subject"], detail)
        if digest != row["hash"]:
            return Problem(row["seq"], f"audit entry {row['seq']} ({row['action']} {row['subject']}) was altered")
        prev = row["hash"]
        expected_seq += 1
    return None
