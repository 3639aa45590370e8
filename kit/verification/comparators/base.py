"""What every comparator shares: the `Outcome` of a check, the `CompareContext` it runs in,
the `Comparator` base class plugins subclass, and JSON equality with the first difference.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.base.display import brief
from kit.base.values import is_number, json_type, jsonable

VERDICTS = ("pass", "fail", "error")


@dataclass
class Outcome:
    """The result of checking one expectation: verdict, why, expected and actual."""

    verdict: str
    detail: str = ""
    expected: Any = None
    actual: Any = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, got {self.verdict!r}")

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "detail": self.detail,
            "expected": jsonable(self.expected),
            "actual": jsonable(self.actual),
        }


def _default_load_table(ref: Any):
    from kit.kernel.api import load

    return load(ref)


@dataclass
class CompareContext:
    """What a comparator may need besides the spec and the actual value.

    - ``base_dir``: the scenario file's folder; relative files in specs resolve here.
    - ``root``: the project; a file a spec names must lie inside it (symlinks followed).
    - ``load_table(ref)``: turns an actual table output (an artifact reference or a
      path) into a DataFrame; the engine passes its own; the default is ``kit.load``.
    - ``services``: named services for comparators that need more (an LLM client, a
      recording store); empty unless the engine provides them.
    """

    base_dir: Path = field(default_factory=Path.cwd)
    load_table: Callable[[Any], Any] = _default_load_table
    services: dict[str, Any] = field(default_factory=dict)
    root: Path | None = None

    def resolve(self, relative: str | Path) -> Path:
        """A file a spec names, relative to the scenario; ValueError when it leads out of the project."""
        from kit.base.paths import inside

        p = Path(relative)
        p = p if p.is_absolute() else Path(self.base_dir) / p
        return inside(self.root, p) if self.root is not None else p


class Comparator:
    """Base class of comparators; see the module docstring for the plugin interface."""

    #: The key used in scenario files.
    name: str = ""
    #: The other keys allowed in a spec beside the comparator key.
    options: frozenset[str] = frozenset()

    def check_spec(self, spec: dict, ctx: CompareContext) -> None:
        """Validate a spec at load time; raise ``ValueError(message)`` when it is wrong."""

    def compare(self, spec: dict, actual: Any, ctx: CompareContext) -> Outcome:  # pragma: no cover - abstract
        raise NotImplementedError

    def expected(self, spec: dict, ctx: CompareContext) -> Any:
        """A JSON-able rendering of what is expected."""
        if set(spec) == {self.name}:
            return jsonable(spec[self.name])
        return jsonable(spec)

    def __repr__(self) -> str:
        return f"<comparator {self.name}>"


def verdict(ok: bool, detail: str, expected: Any, actual: Any) -> Outcome:
    return Outcome("pass" if ok else "fail", "" if ok else detail, jsonable(expected), jsonable(actual))


def json_equal(a: Any, b: Any) -> bool:
    """Deep equality with JSON semantics: 1 == 1.0, but true != 1; key order ignored."""
    return first_difference(a, b, ()) is None


def first_difference(expected: Any, actual: Any, path: tuple) -> tuple[tuple, str] | None:
    """The path of the first difference and what differs there, or None when equal."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        if type(expected) is bool and type(actual) is bool and expected == actual:
            return None
        if isinstance(expected, bool) and isinstance(actual, bool):
            return path, f"expected {brief(expected)}, got {brief(actual)}"
        return path, f"expected {json_type(expected)} {brief(expected)}, got {json_type(actual)} {brief(actual)}"
    if is_number(expected) and is_number(actual):
        if expected == actual or (
            isinstance(expected, float) and isinstance(actual, float) and math.isnan(expected) and math.isnan(actual)
        ):
            return None
        return path, f"expected {brief(expected)}, got {brief(actual)}"
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        missing = [k for k in expected if k not in actual]
        if missing:
            return path, f"missing key {brief(missing[0])}"
        extra = [k for k in actual if k not in expected]
        for k in expected:
            diff = first_difference(expected[k], actual[k], path + (k,))
            if diff:
                return diff
        if extra:
            return path, f"unexpected key {brief(extra[0])}"
        return None
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        for i, (e, a) in enumerate(zip(expected, actual)):
            diff = first_difference(e, a, path + (i,))
            if diff:
                return diff
        if len(expected) != len(actual):
            return path, f"expected {len(expected)} items, got {len(actual)}"
        return None
    if type(expected) is not type(actual) and json_type(expected) != json_type(actual):
        return path, f"expected {json_type(expected)} {brief(expected)}, got {json_type(actual)} {brief(actual)}"
    if expected == actual:
        return None
    return path, f"expected {brief(expected)}, got {brief(actual)}"


def _pretty(value: Any) -> list[str]:
    return json.dumps(jsonable(value), indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def unified_diff(expected: Any, actual: Any, max_lines: int = 60) -> str:
    lines = list(difflib.unified_diff(_pretty(expected), _pretty(actual), "expected", "actual", lineterm=""))
    if len(lines) > max_lines:
        lines = lines[:max_lines] + [f"... ({len(lines) - max_lines} more diff lines)"]
    return "\n".join(lines)
