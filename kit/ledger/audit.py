"""The audit trail: an append-only, hash-chained table (DESIGN section 11).

Each row carries the hash of the previous one; `verify` recomputes the chain and
names the first row that was altered, removed or inserted out of order. Entries are
appended inside the same transaction as the event they record (`append_entry`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from kit.base.clock import utcnow

GENESIS = "0" * 64


def entry_hash(prev_hash: str, seq: int, at: str, actor: str, action: str, subject: str, detail: Any) -> str:
    body = json.dumps(
        [prev_hash, seq, at, actor, action, subject, detail],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
        ensure_ascii=False,
    )
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class AuditEvent:
    """Something worth an audit entry: who did what to which subject, and the details."""

    actor: str
    action: str
    subject: str
    detail: dict[str, Any] | None = None

    def op(self) -> tuple:
        """The ledger operation that appends it (seq and hashes are assigned at write time)."""
        return (
            "audit",
            {"actor": self.actor, "action": self.action, "subject": self.subject, "detail": self.detail or {}},
        )


def append_entry(con, entry: dict[str, Any]) -> None:
    """Append one hash-chained audit row; runs inside the writer's locked transaction."""
    last = con.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
    at = utcnow()
    detail = entry.get("detail") or {}
    digest = entry_hash(prev, seq, at, entry["actor"], entry["action"], entry["subject"], detail)
    con.execute(
        "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [seq, at, entry["actor"], entry["action"], entry["subject"], json.dumps(detail, default=str), prev, digest],
    )


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
            return Problem(
                row["seq"],
                f"audit entry {row['seq']} does not follow entry {row['seq'] - 1}: the chain was broken here",
            )
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
