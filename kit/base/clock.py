"""The clock and the ids kit hands out: UTC times as the ledger stores them, run and span ids.

Run ids sort by time: the UTC date, time and millisecond, then 64 random bits, so two
runs started in the same millisecond (in one process or many) never share an id.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime


def now() -> datetime:
    """Now in UTC, naive (the ledger's TIMESTAMP columns are naive UTC)."""
    return datetime.now(UTC).replace(tzinfo=None)


def utcnow() -> str:
    """Now, in UTC, as the naive ISO text the ledger's TIMESTAMP columns store."""
    return now().isoformat(sep=" ")


def ledger_time(text: str | None) -> str | None:
    """Any ISO timestamp (kernel spans, papermill cells) as the ledger's naive UTC text; None if unreadable."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(sep=" ")


def new_run_id(at: datetime | None = None) -> str:
    """`YYYYMMDD-HHMMSS-mmm-` and 16 hex digits (64 random bits): sortable by time, unique."""
    at = at or datetime.now(UTC)
    return at.strftime("%Y%m%d-%H%M%S-") + f"{at.microsecond // 1000:03d}-" + os.urandom(8).hex()


def new_span_id() -> str:
    """16 hex digits (64 random bits), as OpenTelemetry span ids are."""
    return os.urandom(8).hex()
