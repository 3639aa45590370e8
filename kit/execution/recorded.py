"""Outputs read back from the ledger, checked against their objects (DESIGN section 7, integrity).

Every output a step recorded has an object: a table's Parquet file, or the JSON value
as ``{"value": ...}``. When kit reuses outputs (a cache hit, a resumed run's inputs),
each object is re-hashed, and a JSON value is used only when the ledger's copy equals
the object's; a mismatch is a `CorruptObject` or `TamperedOutput` naming the object
and the run and step that made it.
"""

from __future__ import annotations

import json
from typing import Any

from kit.base.digests import canonical_json
from kit.errors import KitError
from kit.ledger.ledger import Ledger
from kit.ledger.objects import CorruptObject, MissingObject, ObjectStore


class TamperedOutput(KitError):
    """An output's value in the ledger differs from its object."""


def recorded_values(ledger: Ledger, store: ObjectStore, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Output name -> the value a downstream step receives (an artifact reference for a table), each checked."""
    values = {}
    for out in rows:
        made_by = f"run {out['run_id']}, step {out['step_id']} (output {out['name']})"
        try:
            if out["type"] == "table":
                store.verified_path(out["artifact"])
                values[out["name"]] = out["artifact"]
                continue
            value = out["value"]
            if out.get("artifact"):
                kept = json.loads(store.read_bytes(out["artifact"]))["value"]
                if canonical_json(kept) != canonical_json(value):
                    raise TamperedOutput(
                        f"{made_by}: the value in the ledger differs from its object {out['artifact']}: "
                        "the ledger was changed by hand"
                    )
                value = kept
            values[out["name"]] = value
        except CorruptObject as exc:
            raise exc.made_by(made_by) from None
        except MissingObject as exc:
            raise MissingObject(f"{exc.message}; it was made by {made_by}") from None
    return values
