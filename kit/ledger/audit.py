"""The audit trail: an append-only, hash-chained table (DESIGN section 11).

Each row carries the hash of the previous one; `verify` recomputes the chain and
names the first row that was altered, removed or inserted out of order. The chain's
head (last seq and hash) is also kept outside the table (`.kit/audit.head`, written
by the ledger after each transaction), so removing the newest entries is detected
too, and a new entry never reuses the seq of a removed one. Entries are appended
inside the same transaction as the event they record (`append_entry`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from kit.base.clock import utcnow

GENESIS = "0" * 64

#: The action of the entry written when the chain's head was missing: the entries before it may be short.
HEAD_LOST = "audit.head_lost"


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


def append_entry(con, entry: dict[str, Any], head: dict[str, Any] | None = None) -> dict[str, Any]:
    """Append one hash-chained audit row; runs inside the writer's locked transaction. Returns the
    chain's new head (its seq and hash), to be kept outside the table once the transaction commits.

    It follows the newer of the table's last row and the head kept outside it, so rows
    removed from the end leave a gap that `verify` names, never a reused seq. When there is
    no head but there are rows (the head file deleted or garbled, perhaps with the newest rows),
    it first appends a `HEAD_LOST` entry saying so: the chain carries the doubt, and `verify`
    keeps naming it, instead of the next write making a shortened chain look whole."""
    last = con.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    if head is None and last is not None:
        lost = {
            "table_ended_at": last[0],
            "reason": "the chain's head kept outside the table was missing or unreadable",
        }
        head = _insert(
            con, last[0] + 1, last[1], {"actor": "kit", "action": HEAD_LOST, "subject": "audit", "detail": lost}
        )
    if head is not None and (last is None or head["seq"] > last[0]):
        last = (head["seq"], head["hash"])
    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
    return _insert(con, seq, prev, entry)


def _insert(con, seq: int, prev: str, entry: dict[str, Any]) -> dict[str, Any]:
    at = utcnow()
    detail = entry.get("detail") or {}
    digest = entry_hash(prev, seq, at, entry["actor"], entry["action"], entry["subject"], detail)
    con.execute(
        "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [seq, at, entry["actor"], entry["action"], entry["subject"], json.dumps(detail, default=str), prev, digest],
    )
    return {"seq": seq, "hash": digest}


@dataclass
class Problem:
    seq: int
    message: str


def verify(
    rows: list[dict[str, Any]], head: dict[str, Any] | None = None, head_file: str = "the head file"
) -> Problem | None:
    """The first broken entry of the chain, or None when it is intact. `rows` ordered by seq;
    `head` the chain's head kept outside the table (None: there is none)."""
    prev = GENESIS
    expected_seq = 1
    for row in rows:
        if row["seq"] != expected_seq:
            missing = f"{expected_seq}" if row["seq"] == expected_seq + 1 else f"{expected_seq} to {row['seq'] - 1}"
            return Problem(
                expected_seq,
                f"audit entries {missing} are missing (found {row['seq']} next)"
                if "to" in missing
                else f"audit entry {missing} is missing (found {row['seq']} next)",
            )
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
        if row["action"] == HEAD_LOST:
            return Problem(
                row["seq"],
                f"audit entry {row['seq']} records that {head_file} was missing or unreadable when it was written: "
                f"entries after {detail.get('table_ended_at') if isinstance(detail, dict) else '?'} could have been "
                "removed before it; compare with a backup of the ledger",
            )
        prev = row["hash"]
        expected_seq += 1
    last = rows[-1]["seq"] if rows else 0
    if head is None:
        if rows:
            return Problem(last, f"{head_file} is missing: the newest entries could have been removed unnoticed")
        return None
    if head["seq"] > last:
        gone = f"{last + 1}" if head["seq"] == last + 1 else f"{last + 1} to {head['seq']}"
        word = "entry" if head["seq"] == last + 1 else "entries"
        return Problem(
            last + 1,
            f"audit {word} {gone} {'is' if word == 'entry' else 'are'} missing: the chain's "
            f"head ({head_file}) is at {head['seq']}, the table ends at {last}",
        )
    at_head = next((r for r in rows if r["seq"] == head["seq"]), None)
    if at_head is not None and at_head["hash"] != head["hash"]:
        return Problem(head["seq"], f"audit entry {head['seq']} does not match the chain's head ({head_file})")
    return None
