"""Exponential backoff with jitter: how long to wait before the next try."""

from __future__ import annotations

import random


def delay(attempt: int, base: float, cap: float | None = None, jitter: float = 0.25) -> float:
    """Seconds to wait after failed try number `attempt` (1, 2, ...): `base` doubled each time,
    capped at `cap`, then stretched by up to `jitter` (a fraction) so retries do not move in step."""
    seconds = base * 2 ** max(attempt - 1, 0)
    if cap is not None:
        seconds = min(seconds, cap)
    return seconds * (1 + random.random() * jitter)
