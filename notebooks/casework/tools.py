"""Tools the casework workflow lets a model use (declared under `tools:` in workflow.yaml).

Plain functions over the example's data, read-only and deterministic: the model may call them
from the `draft_note` step (`kit.llm.agent`), within the step's turns and the run principal's
entitlements. Their argument schemas come from the type hints; the docstrings are what the model
reads about each tool.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

DATA = Path(__file__).parent / "data"


def _rows(name: str) -> list[dict]:
    with open(DATA / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def lookup_orders(customer_id: str, limit: int = 5) -> list:
    """The customer's most recent orders, newest first: order id, date, total, shipping status."""
    orders = [r for r in _rows("orders.csv") if r["customer_id"] == customer_id]
    orders.sort(key=lambda r: (r["ordered_at"], r["order_id"]), reverse=True)
    return [
        {
            "order_id": r["order_id"],
            "ordered_at": r["ordered_at"],
            "total": float(r["total"]),
            "shipping_status": r["shipping_status"],
        }
        for r in orders[: max(0, limit)]
    ]


def search_kb(query: str, limit: int = 3) -> list:
    """Past failures in the knowledge base that share the most words with the query: id, title, resolution."""
    words = set(re.findall(r"[a-z]+", query.lower())) - {"a", "an", "the", "of", "to", "and", "from", "in", "on"}
    scored = []
    for r in _rows("kb.csv"):
        text = set(re.findall(r"[a-z]+", f"{r['title']} {r['body']}".lower()))
        score = len(words & text)
        if score:
            scored.append((-score, r["kb_id"], r))
    scored.sort()
    return [{"kb_id": r["kb_id"], "title": r["title"], "resolution": r["resolution"]} for _, _, r in scored[:limit]]
