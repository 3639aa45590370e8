"""Digests: sha256 of files and bytes, and of JSON values in canonical form.

Canonical JSON is RFC 8785 (the JSON Canonicalization Scheme). Keys that must not
depend on how a value was spelled (recording keys, cache keys, bundle ids) hash this
text: `0` and `0.0` are the same number here, key order and whitespace do not count.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

_SAFE_INTEGER = 2**53 - 1


def _safe(value: Any) -> Any:
    """RFC 8785 numbers are IEEE doubles: integers beyond 2**53 are kept exact as decimal text."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, int):
        return value if -_SAFE_INTEGER <= value <= _SAFE_INTEGER else str(value)
    if isinstance(value, dict):
        return {str(k): _safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_safe(v) for v in value]
    return value


def canonical_bytes(value: Any) -> bytes:
    """The RFC 8785 serialization of a JSON value; ValueError for what JSON cannot hold (NaN, sets)."""
    import rfc8785

    try:
        return rfc8785.dumps(_safe(value))
    except (rfc8785.CanonicalizationError, TypeError) as exc:
        raise ValueError(f"not canonical JSON: {exc}") from None


def canonical_json(value: Any) -> str:
    return canonical_bytes(value).decode("utf-8")


def digest(value: Any) -> str:
    """sha256 (hex) of the canonical JSON of `value`."""
    return hashlib.sha256(canonical_bytes(value)).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes, read in chunks."""
    hasher = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def is_sha256(text: Any) -> bool:
    """Whether `text` is a sha256 hex digest as kit writes them (64 lowercase hex digits)."""
    return isinstance(text, str) and len(text) == 64 and all(c in "0123456789abcdef" for c in text)
