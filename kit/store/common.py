"""What every store command shares: how a store action is recorded (the ledger row and its audit entry)."""

from __future__ import annotations

from typing import Any

from kit.base.clock import utcnow
from kit.bundles.store import WorkflowStore
from kit.ledger.audit import AuditEvent
from kit.ledger.ledger import Ledger


def record_action(
    ledger: Ledger,
    action: str,
    store: WorkflowStore,
    name: str,
    version: str | None,
    bundle_id: str | None,
    principal: str,
    env: str | None = None,
    info: dict[str, Any] | None = None,
) -> None:
    """A store action in the ledger's `store_actions`, with its audit entry (`store.<action>`)."""
    row = {
        "action": action,
        "store": store.url,
        "name": name,
        "version": version,
        "bundle_id": bundle_id,
        "env": env,
        "principal": principal,
        "info": info or {},
        "at": utcnow(),
    }
    subject = f"{name}@{version}" if version else name
    detail = {"store": store.url, "bundle_id": bundle_id, "env": env, **(info or {})}
    ledger.record_store_action(row, AuditEvent(principal, f"store.{action}", subject, detail))
