"""JSON lines: one JSON object a line (spools, recordings, journals).

Readers skip blank lines and a torn line (a writer killed mid-line), so a file
that was being appended to when something died still reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file; [] when it does not exist."""
    records = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    records.append(record)
    except FileNotFoundError:
        return []
    return records


def append_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]], **dumps: Any) -> int:
    """Append records as lines, starting on a fresh line if the file's last one is torn; the count."""
    lines = [json.dumps(r, default=str, **dumps) for r in records]
    if not lines:
        return 0
    path = Path(path)
    prefix = ""
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                prefix = "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(prefix + "\n".join(lines) + "\n")
    return len(lines)
