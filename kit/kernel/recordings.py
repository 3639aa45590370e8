"""Recordings of LLM calls: the canonical request, its key, and the JSON-lines files that hold them.

A recording is ``{"key", "request", "response"}``. The request is canonical
(`canonical_request`: provider, model, messages, tools, sampling parameters) and its
key is the sha256 of its RFC 8785 canonical JSON, so ``temperature: 0`` and
``temperature: 0.0`` are the same request. Replay serves a response by key; a miss
shows how the request differs from the nearest recording (`nearest_diff`).

Read in the kernel (replay), written by the coordinator (`kit capture`, record mode),
and by the judge. Standard library and rfc8785 only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kit.base.digests import digest
from kit.base.jsonl import append_jsonl, read_jsonl

MAX_DIFF_LINES = 40


class RecordingError(ValueError):
    """A request that cannot be recorded: messages of the wrong shape, values that are not JSON."""


def _jsonable(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise RecordingError(f"kit.llm: {what} must be JSON values: {exc}") from None


def canonical_request(provider: str, model: str, messages: Any, params: dict | None = None) -> dict:
    """The request as recorded and keyed: provider, model, messages, tools and sampling params."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if not isinstance(messages, (list, tuple)) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages
    ):
        raise RecordingError(
            "kit.llm: messages must be a list of {'role': ..., 'content': ...} dicts (or one string), "
            f"got {messages!r:.200}"
        )
    params = {k: v for k, v in (params or {}).items() if v is not None}
    tools = params.pop("tools", None)
    return {
        "provider": str(provider),
        "model": str(model),
        "messages": _jsonable(list(messages), "messages"),
        "tools": _jsonable(tools, "tools"),
        "params": _jsonable(params, "sampling parameters"),
    }


def request_key(request: dict) -> str:
    """sha256 (hex) of the RFC 8785 canonical JSON of provider, model, messages, tools and params."""
    core = {k: request.get(k) for k in ("provider", "model", "messages", "tools", "params")}
    core["params"] = core["params"] or {}
    return digest(core)


_cache: dict[str, tuple[tuple[int, int], dict[str, dict]]] = {}


def load_recordings(path: str | os.PathLike | None) -> dict[str, dict]:
    """Recordings by key (empty when `path` is None or absent). Keys are recomputed from the
    request, so a file written before a change of canonical form still replays."""
    if not path:
        return {}
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return {}
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _cache.get(str(path))
    if cached and cached[0] == stamp:
        return cached[1]
    found: dict[str, dict] = {}
    for record in read_jsonl(path):
        if isinstance(record.get("request"), dict) and isinstance(record.get("response"), dict):
            found.setdefault(request_key(record["request"]), record)
    _cache[str(path)] = (stamp, found)
    return found


def write_recordings(calls: list[dict], path: str | os.PathLike) -> int:
    """Append the calls as recordings (key, request, response) to `path`, once per key; the number written."""
    path = Path(path)
    seen = set(load_recordings(path))
    records = []
    for call in calls:
        request, response = call.get("request"), call.get("response")
        if not isinstance(request, dict) or not isinstance(response, dict):
            continue
        key = request_key(request)
        if key in seen:
            continue
        seen.add(key)
        records.append({"key": key, "request": request, "response": response})
    if not records:
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    return append_jsonl(path, records, sort_keys=True, ensure_ascii=False)


def _pretty(request: dict) -> str:
    """The request as JSON, with message text broken into lines so a diff shows where it differs."""
    import textwrap

    lines = []
    for line in json.dumps(request, sort_keys=True, indent=2, ensure_ascii=False).splitlines():
        stripped = line.lstrip()
        if len(line) <= 100 or not stripped.startswith('"content": "'):
            lines.append(line)
            continue
        indent = " " * (len(line) - len(stripped))
        body = stripped[len('"content": ') :]
        lines.append(f'{indent}"content":')
        lines += textwrap.wrap(
            body,
            88,
            initial_indent=indent + "  ",
            subsequent_indent=indent + "  ",
            break_on_hyphens=False,
            drop_whitespace=False,
        )
    return "\n".join(lines)


def nearest_diff(
    request: dict, recordings: dict[str, dict], max_lines: int = MAX_DIFF_LINES
) -> tuple[str, float, list[str]]:
    """The recording nearest to `request`: its key, the similarity, and a unified diff (- recorded, + requested)."""
    import difflib

    mine = _pretty(request)
    candidates = []
    for rkey, record in recordings.items():
        text = _pretty(record["request"])
        candidates.append((difflib.SequenceMatcher(None, mine, text, autojunk=False).quick_ratio(), rkey, text))
    candidates.sort(key=lambda c: c[0], reverse=True)
    best_key, best_text, best_ratio = "", "", -1.0
    for _, rkey, text in candidates[:20]:  # the exact ratio on the most promising only
        ratio = difflib.SequenceMatcher(None, mine, text, autojunk=False).ratio()
        if ratio > best_ratio:
            best_key, best_text, best_ratio = rkey, text, ratio
    diff = list(
        difflib.unified_diff(best_text.splitlines(), mine.splitlines(), "recorded", "requested", n=2, lineterm="")
    )
    shown = [line if len(line) <= 240 else line[:237] + "..." for line in diff[:max_lines]]
    if len(diff) > max_lines:
        shown.append(f"... ({len(diff) - max_lines} more diff lines)")
    return best_key, best_ratio, shown
