"""Short, one-line renderings of values for messages, tables and reports.

Everything kit prints about a value goes through `shorten` or `brief`, so a 10 MB
parameter is never printed whole and every cut ends the same way.
"""

from __future__ import annotations

import json
import re
from typing import Any

from kit.base.values import jsonable

ELLIPSIS = "…"


def shorten(text: str, limit: int | None) -> str:
    """`text` on one line, cut to `limit` characters (the last one an ellipsis) when longer."""
    text = text.replace("\n", " ")
    if limit and len(text) > limit:
        return text[: max(limit - 1, 0)] + ELLIPSIS
    return text


def brief(value: Any, limit: int | None = 200) -> str:
    """A value as one line of JSON (DataFrames as a preview, other objects by repr), cut to `limit`."""
    try:
        text = json.dumps(jsonable(value), ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return shorten(text, limit)


def cell(value: Any, width: int | None = None) -> str:
    """A value as a table cell: times to the second, floats to a few digits, JSON for the rest."""
    from datetime import datetime

    if value is None:
        text = ""
    elif isinstance(value, datetime):
        text = value.isoformat(sep=" ", timespec="seconds")
    elif isinstance(value, float):
        text = f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"
    elif isinstance(value, (dict, list)):
        return brief(value, width)
    else:
        text = str(value)
    return shorten(text, width)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """Text without terminal colour codes (tracebacks from a kernel carry them)."""
    return _ANSI.sub("", text)
