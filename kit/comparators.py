"""Comparators: how a scenario's expectation is checked against a run's actual output.

A scenario file (DESIGN section 8) maps ``STEP.OUTPUT[.path]`` to a spec naming
exactly one comparator, plus the options that comparator accepts::

    recommend.decision.confidence: {approx: 0.8, abs: 0.1}
    fetch_case.payload: {table: expected/C-1042-payload.csv, ignore_order: true}

Every check ends in an :class:`Outcome`: a ``verdict`` (``pass``, ``fail`` or
``error``), a human ``detail`` saying why, and JSON-able renderings of what was
``expected`` and what was ``actual``. ``fail`` means the output differs from what
was expected; ``error`` means the check itself could not run (a broken expected
file, a comparator that raised). A comparator never crashes its caller:
:func:`evaluate` and :func:`run_comparator` turn exceptions into ``error``.

Built-ins: ``equals``, ``approx``, ``contains``, ``matches``, ``one_of``,
``schema``, ``table``, and ``judge`` (a model grades the output against a rubric; see kit.judge).

Writing a comparator plugin
---------------------------
Subclass :class:`Comparator`::

    # my_package/comparators.py
    from kit.comparators import Comparator, Outcome

    class EvenComparator(Comparator):
        name = "even"                          # the key used in scenario files
        options = frozenset({"note"})          # other keys allowed beside it

        def check_spec(self, spec, ctx):
            # called when the scenario file is loaded; raise ValueError(message)
            # for a bad spec and kit reports it with the file and line
            if not isinstance(spec["even"], bool):
                raise ValueError("even: expected true or false")

        def compare(self, spec, actual, ctx):
            ok = isinstance(actual, int) and (actual % 2 == 0) == spec["even"]
            return Outcome("pass" if ok else "fail",
                           "" if ok else f"{actual!r} is not {'even' if spec['even'] else 'odd'}",
                           expected=spec["even"], actual=actual)

and register it under the entry point group ``kit.comparators`` in the
package's ``pyproject.toml``; the entry point's name is the key used in
scenario files::

    [project.entry-points."kit.comparators"]
    even = "my_package.comparators:EvenComparator"

The entry point may name a Comparator subclass (instantiated without
arguments) or an instance. Plugins are discovered lazily, once per process, on
the first lookup; built-in names cannot be overridden. A plugin that fails to
import is left out of :func:`available` and naming it in a scenario reports the
import error. :func:`register` adds one programmatically (in a notebook, a
conftest).

The interface in short:

- ``name``: the scenario key; ``options``: the other keys allowed in the spec.
- ``check_spec(spec, ctx)``: validate the spec (the whole dict as written) at load
  time; raise ``ValueError``. ``ctx.base_dir`` is the scenario file's folder.
- ``compare(spec, actual, ctx) -> Outcome``: ``actual`` is the output value at
  the expectation's path: a JSON value, or for a table output whatever the engine
  gives (a reference string, a DataFrame); ``ctx.load_table(ref)`` turns a
  reference into a DataFrame.
- ``expected(spec, ctx)``: the JSON-able rendering of what is expected (by default
  the comparator key's value, or the whole spec when it has options).
"""

from __future__ import annotations

import difflib
import json
import math
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from kit.errors import InvalidInput

__all__ = [
    "Outcome",
    "CompareContext",
    "Comparator",
    "get_comparator",
    "available",
    "register",
    "reset_registry",
    "resolve_spec",
    "run_comparator",
    "evaluate",
    "jsonable",
    "ENTRY_POINT_GROUP",
    "VERDICTS",
]

ENTRY_POINT_GROUP = "kit.comparators"
VERDICTS = ("pass", "fail", "error")


# --------------------------------------------------------------------------- outcome


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
    from kit.api import load

    return load(ref)


@dataclass
class CompareContext:
    """What a comparator may need besides the spec and the actual value.

    - ``base_dir``: the scenario file's folder; relative files in specs resolve here.
    - ``load_table(ref)``: turns an actual table output (an artifact reference or a
      path) into a DataFrame; the engine passes its own; the default is ``kit.load``.
    - ``services``: named services for comparators that need more (an LLM client, a
      recording store); empty unless the engine provides them.
    """

    base_dir: Path = field(default_factory=Path.cwd)
    load_table: Callable[[Any], Any] = _default_load_table
    services: dict[str, Any] = field(default_factory=dict)

    def resolve(self, relative: str | Path) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else Path(self.base_dir) / p


# --------------------------------------------------------------------------- helpers


def jsonable(value: Any, _depth: int = 0) -> Any:
    """A JSON-able rendering of `value`: numpy scalars become Python, a DataFrame a preview."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if _depth > 50:
        return repr(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [jsonable(v, _depth + 1) for v in items]
    if _is_dataframe(value):
        return table_preview(value)
    if isinstance(value, Path):
        return str(value)
    mod = type(value).__module__
    if mod.startswith("numpy"):
        if hasattr(value, "tolist"):
            return jsonable(value.tolist(), _depth + 1)
    if mod.startswith("pandas"):
        if type(value).__name__ == "Series":
            return jsonable(value.tolist(), _depth + 1)
        if hasattr(value, "isoformat"):
            return value.isoformat()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return repr(value)


def _is_dataframe(value: Any) -> bool:
    return type(value).__module__.startswith("pandas") and type(value).__name__ == "DataFrame"


def _show(value: Any, limit: int = 200) -> str:
    """A short one-line rendering of a value for a detail message."""
    try:
        text = json.dumps(jsonable(value), ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return type(value).__module__.startswith("numpy") and hasattr(value, "dtype") and value.dtype.kind in "iuf"


def _json_path(parts: Iterable[Any]) -> str:
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if re.fullmatch(r"[A-Za-z_]\w*", str(p)) else f"[{json.dumps(str(p))}]")
    return out


def _json_equal(a: Any, b: Any) -> bool:
    """Deep equality with JSON semantics: 1 == 1.0, but true != 1; key order ignored."""
    return _first_difference(a, b, ()) is None


def _first_difference(expected: Any, actual: Any, path: tuple) -> tuple[tuple, str] | None:
    """The path of the first difference and what differs there, or None when equal."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        if type(expected) is bool and type(actual) is bool and expected == actual:
            return None
        if isinstance(expected, bool) and isinstance(actual, bool):
            return path, f"expected {_show(expected)}, got {_show(actual)}"
        return path, f"expected {_type_name(expected)} {_show(expected)}, got {_type_name(actual)} {_show(actual)}"
    if _is_number(expected) and _is_number(actual):
        if expected == actual or (isinstance(expected, float) and isinstance(actual, float) and math.isnan(expected) and math.isnan(actual)):
            return None
        return path, f"expected {_show(expected)}, got {_show(actual)}"
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        missing = [k for k in expected if k not in actual]
        if missing:
            return path, f"missing key {_show(missing[0])}"
        extra = [k for k in actual if k not in expected]
        for k in expected:
            diff = _first_difference(expected[k], actual[k], path + (k,))
            if diff:
                return diff
        if extra:
            return path, f"unexpected key {_show(extra[0])}"
        return None
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        for i, (e, a) in enumerate(zip(expected, actual)):
            diff = _first_difference(e, a, path + (i,))
            if diff:
                return diff
        if len(expected) != len(actual):
            return path, f"expected {len(expected)} items, got {len(actual)}"
        return None
    if type(expected) is not type(actual) and _type_name(expected) != _type_name(actual):
        return path, f"expected {_type_name(expected)} {_show(expected)}, got {_type_name(actual)} {_show(actual)}"
    if expected == actual:
        return None
    return path, f"expected {_show(expected)}, got {_show(actual)}"


def _pretty(value: Any) -> list[str]:
    return json.dumps(jsonable(value), indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def _unified_diff(expected: Any, actual: Any, max_lines: int = 60) -> str:
    lines = list(difflib.unified_diff(_pretty(expected), _pretty(actual), "expected", "actual", lineterm=""))
    if len(lines) > max_lines:
        lines = lines[:max_lines] + [f"... ({len(lines) - max_lines} more diff lines)"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- base class


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


def _outcome(ok: bool, detail: str, expected: Any, actual: Any) -> Outcome:
    return Outcome("pass" if ok else "fail", "" if ok else detail, jsonable(expected), jsonable(actual))


# --------------------------------------------------------------------------- built-ins


class Equals(Comparator):
    """Deep equality (JSON semantics). On failure: the first differing path and a unified diff."""

    name = "equals"

    def compare(self, spec, actual, ctx):
        expected = spec["equals"]
        if _is_dataframe(actual):
            actual = jsonable(actual.to_dict(orient="records"))
        diff = _first_difference(expected, actual, ())
        if diff is None:
            return _outcome(True, "", expected, actual)
        path, what = diff
        detail = f"first difference at {_json_path(path)}: {what}"
        if isinstance(expected, (Mapping, list, tuple)) or isinstance(actual, (Mapping, list, tuple)):
            detail += "\n" + _unified_diff(expected, actual)
        return _outcome(False, detail, expected, actual)


class Approx(Comparator):
    """Numbers (or nested lists/objects of numbers) within ``abs`` and/or ``rel`` tolerance.

    The tolerance is the larger of ``abs`` and ``rel * |expected|``; with neither given,
    ``rel`` is 1e-6 (as in pytest.approx).
    """

    name = "approx"
    options = frozenset({"abs", "rel"})
    default_rel = 1e-6

    def check_spec(self, spec, ctx):
        for opt in ("abs", "rel"):
            if opt in spec and (not _is_number(spec[opt]) or spec[opt] < 0):
                raise ValueError(f"{opt}: expected a non-negative number, got {_show(spec[opt])}")
        bad = self._non_numeric(spec["approx"], ())
        if bad is not None:
            raise ValueError(f"approx: expected a number or a list of numbers, got {_show(bad[1])} at {_json_path(bad[0])}")

    def _non_numeric(self, value, path):
        if _is_number(value):
            return None
        if isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                bad = self._non_numeric(v, path + (i,))
                if bad:
                    return bad
            return None
        if isinstance(value, Mapping):
            for k, v in value.items():
                bad = self._non_numeric(v, path + (k,))
                if bad:
                    return bad
            return None
        return path, value

    def _tolerance(self, spec, expected: float) -> float:
        abs_tol = spec.get("abs")
        rel_tol = spec.get("rel")
        if abs_tol is None and rel_tol is None:
            rel_tol = self.default_rel
        return max(abs_tol or 0.0, (rel_tol or 0.0) * abs(expected))

    def _tolerance_text(self, spec, tol: float) -> str:
        parts = []
        if "abs" in spec:
            parts.append(f"abs {spec['abs']:g}")
        if "rel" in spec or "abs" not in spec:
            parts.append(f"rel {spec.get('rel', self.default_rel):g}")
        return f"{tol:g} ({', '.join(parts)})"

    def compare(self, spec, actual, ctx):
        expected = spec["approx"]
        problems: list[str] = []
        self._walk(spec, expected, actual, (), problems)
        if not problems:
            return _outcome(True, "", self.expected(spec, ctx), actual)
        detail = problems[0] if len(problems) == 1 else f"{len(problems)} values differ:\n" + "\n".join(
            f"  {p}" for p in problems[:10]
        ) + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        return _outcome(False, detail, self.expected(spec, ctx), actual)

    def _walk(self, spec, expected, actual, path, problems):
        where = "" if not path else f"at {_json_path(path)}: "
        if _is_number(expected):
            if not _is_number(actual):
                problems.append(f"{where}expected a number near {_show(expected)}, got {_type_name(actual)} {_show(actual)}")
                return
            tol = self._tolerance(spec, float(expected))
            distance = abs(float(actual) - float(expected))
            if not (distance <= tol or float(actual) == float(expected)):
                problems.append(
                    f"{where}{_show(actual)} is {distance:.6g} from {_show(expected)}, "
                    f"beyond the tolerance {self._tolerance_text(spec, tol)}"
                )
            return
        if isinstance(expected, (list, tuple)):
            if not isinstance(actual, (list, tuple)):
                problems.append(f"{where}expected an array of {len(expected)} numbers, got {_type_name(actual)} {_show(actual)}")
                return
            if len(actual) != len(expected):
                problems.append(f"{where}expected {len(expected)} items, got {len(actual)}")
                return
            for i, (e, a) in enumerate(zip(expected, actual)):
                self._walk(spec, e, a, path + (i,), problems)
            return
        if isinstance(expected, Mapping):
            if not isinstance(actual, Mapping):
                problems.append(f"{where}expected an object, got {_type_name(actual)} {_show(actual)}")
                return
            for k, e in expected.items():
                if k not in actual:
                    problems.append(f"at {_json_path(path + (k,))}: missing")
                else:
                    self._walk(spec, e, actual[k], path + (k,), problems)


class Contains(Comparator):
    """A substring of a string; every item of a list in a list (or in a string); or a sub-object.

    Option ``ignore_case`` (default false) compares strings case-insensitively.
    """

    name = "contains"
    options = frozenset({"ignore_case"})

    def check_spec(self, spec, ctx):
        if "ignore_case" in spec and not isinstance(spec["ignore_case"], bool):
            raise ValueError("ignore_case: expected true or false")
        if spec["contains"] is None:
            raise ValueError("contains: expected a string, a list of items, or an object")

    def compare(self, spec, actual, ctx):
        expected = spec["contains"]
        fold = bool(spec.get("ignore_case", False))

        def norm(v):
            return v.casefold() if fold and isinstance(v, str) else v

        if isinstance(actual, str):
            items = expected if isinstance(expected, (list, tuple)) else [expected]
            bad_types = [i for i in items if not isinstance(i, str)]
            if bad_types:
                return _outcome(False, f"cannot look for non-string items {_show(bad_types)} in a string", expected, actual)
            missing = [i for i in items if norm(i) not in norm(actual)]
            return _outcome(
                not missing,
                f"missing {', '.join(_show(m) for m in missing)} in the string {_show(actual)}",
                expected,
                actual,
            )
        if isinstance(actual, (list, tuple)):
            items = expected if isinstance(expected, (list, tuple)) else [expected]
            pool = [norm(a) for a in actual]
            missing = [i for i in items if not any(_json_equal(norm(i), a) for a in pool)]
            return _outcome(
                not missing,
                f"missing {', '.join(_show(m) for m in missing)} in the list {_show(actual)}",
                expected,
                actual,
            )
        if isinstance(actual, Mapping):
            if isinstance(expected, Mapping):
                missing = [k for k in expected if k not in actual]
                wrong = [k for k in expected if k in actual and not _json_equal(norm(expected[k]), norm(actual[k]))]
                parts = []
                if missing:
                    parts.append(f"missing keys {', '.join(_show(k) for k in missing)}")
                for k in wrong:
                    parts.append(f"{_json_path((k,))}: expected {_show(expected[k])}, got {_show(actual[k])}")
                return _outcome(not parts, "; ".join(parts), expected, actual)
            items = expected if isinstance(expected, (list, tuple)) else [expected]
            missing = [i for i in items if i not in actual]
            return _outcome(
                not missing,
                f"missing keys {', '.join(_show(m) for m in missing)} in the object (keys: {', '.join(map(str, actual))})",
                expected,
                actual,
            )
        return _outcome(
            False,
            f"expected a string, a list or an object to look in, got {_type_name(actual)} {_show(actual)}",
            expected,
            actual,
        )


class Matches(Comparator):
    """A Python regular expression found in a string value (``re.search``)."""

    name = "matches"

    def check_spec(self, spec, ctx):
        pattern = spec["matches"]
        if not isinstance(pattern, str):
            raise ValueError(f"matches: expected a regular expression string, got {_show(pattern)}")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"matches: invalid regular expression {pattern!r}: {exc}") from None

    def compare(self, spec, actual, ctx):
        pattern = spec["matches"]
        if not isinstance(actual, str):
            return _outcome(
                False, f"pattern /{pattern}/ needs a string, got {_type_name(actual)} {_show(actual)}", pattern, actual
            )
        ok = re.search(pattern, actual) is not None
        return _outcome(ok, f"pattern /{pattern}/ not found in {_show(actual, 500)}", pattern, actual)


class OneOf(Comparator):
    """The value equals one of a list of allowed values."""

    name = "one_of"

    def check_spec(self, spec, ctx):
        allowed = spec["one_of"]
        if not isinstance(allowed, list) or not allowed:
            raise ValueError(f"one_of: expected a non-empty list of allowed values, got {_show(allowed)}")

    def compare(self, spec, actual, ctx):
        allowed = spec["one_of"]
        ok = any(_json_equal(a, actual) for a in allowed)
        return _outcome(ok, f"{_show(actual)} is not one of {_show(allowed)}", allowed, actual)


class Schema(Comparator):
    """The value is valid against a JSON Schema (the schema's ``$schema`` dialect, else 2020-12)."""

    name = "schema"

    def check_spec(self, spec, ctx):
        schema = spec["schema"]
        if not isinstance(schema, (Mapping, bool)):
            raise ValueError(f"schema: expected a JSON Schema object, got {_show(schema)}")
        from jsonschema import exceptions, validators

        cls = validators.validator_for(schema)
        try:
            cls.check_schema(schema)
        except exceptions.SchemaError as exc:
            where = _json_path(exc.absolute_path) if exc.absolute_path else "the schema"
            raise ValueError(f"schema: invalid JSON Schema at {where}: {exc.message}") from None

    def compare(self, spec, actual, ctx):
        from jsonschema import validators

        schema = spec["schema"]
        value = jsonable(actual)
        cls = validators.validator_for(schema)
        errors = sorted(cls(schema).iter_errors(value), key=lambda e: (list(map(str, e.absolute_path)), e.message))
        if not errors:
            return _outcome(True, "", schema, value)
        lines = [f"{_json_path(e.absolute_path)}: {e.message}" for e in errors[:20]]
        if len(errors) > 20:
            lines.append(f"... and {len(errors) - 20} more")
        head = f"{len(errors)} schema error{'s' if len(errors) != 1 else ''}:"
        return _outcome(False, head + "\n" + "\n".join(f"  {line}" for line in lines), schema, value)


# --------------------------------------------------------------------------- table

TABLE_SUFFIXES = (".csv", ".parquet", ".pq", ".json", ".jsonl")


def table_preview(df, head: int = 5) -> dict[str, Any]:
    """A small JSON-able preview of a DataFrame: row count, columns and the first rows."""
    rows = [{str(c): jsonable(_cell(v)) for c, v in zip(df.columns, row)} for row in df.head(head).itertuples(index=False)]
    return {"rows": int(len(df)), "columns": [str(c) for c in df.columns], "head": rows}


def _cell(v: Any) -> Any:
    """A cell value normalized for comparison: missing values are None, numpy values Python."""
    if v is None:
        return None
    if isinstance(v, (list, tuple)):
        return [_cell(x) for x in v]
    if isinstance(v, dict):
        return {k: _cell(x) for k, x in v.items()}
    mod = type(v).__module__
    if mod.startswith("numpy") and type(v).__name__ == "ndarray":
        return [_cell(x) for x in v.tolist()]
    try:
        import pandas as pd

        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    if mod.startswith("numpy") and hasattr(v, "item"):
        v = v.item()
    if hasattr(v, "isoformat") and not isinstance(v, str):
        return v.isoformat()
    return v


def _sort_key(v: Any):
    if v is None:
        return (0, 0)
    if isinstance(v, bool):
        return (1, int(v))
    if isinstance(v, (int, float)):
        return (2, v)
    if isinstance(v, str):
        return (3, v)
    return (4, json.dumps(v, sort_keys=True, default=str))


def _hashable(v: Any):
    if isinstance(v, (list, dict)):
        return json.dumps(v, sort_keys=True, default=str)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _kind(s) -> str:
    from pandas.api import types as t

    if t.is_bool_dtype(s.dtype):
        return "bool"
    if t.is_numeric_dtype(s.dtype):
        return "number"
    if t.is_datetime64_any_dtype(s.dtype):
        return "datetime"
    if t.is_string_dtype(s.dtype) and all(isinstance(v, str) for v in s.dropna().head(1000)):
        return "text"
    non_null = s.dropna()
    if len(non_null) and all(isinstance(v, bool) for v in non_null):
        return "bool"
    if len(non_null) and all(_is_number(v) for v in non_null):
        return "number"
    return "object"


_BOOL_WORDS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False, "t": True, "f": False}


def _coerce(s, kind: str):
    """`s` converted to `kind` when every present value converts, else None."""
    import pandas as pd

    present = s.notna()
    try:
        if kind == "number":
            out = pd.to_numeric(s, errors="coerce")
        elif kind == "bool":
            out = s.map(lambda v: v if isinstance(v, bool) else _BOOL_WORDS.get(str(v).strip().lower()) if v is not None and not (isinstance(v, float) and math.isnan(v)) else None)
            out = out.astype(object)
        elif kind == "datetime":
            out = pd.to_datetime(s, errors="coerce", format="mixed")
        else:
            return None
    except (TypeError, ValueError, OverflowError):
        return None
    if (out.isna() & present).any():
        return None
    return out


def _align(e, a):
    """Coerce the textual side of a column pair to the other side's kind when its values allow."""
    ek, ak = _kind(e), _kind(a)
    if ek == ak:
        return e, a
    if ek in ("text", "object"):
        c = _coerce(e, ak)
        if c is not None:
            return c, a
    if ak in ("text", "object"):
        c = _coerce(a, ek)
        if c is not None:
            return e, c
    return e, a


def _equal_mask(e, a, rtol: float):
    """Per-row equality of two aligned columns (numeric columns within `rtol`)."""
    import numpy as np
    from pandas.api import types as t

    if _kind(e) == "number" and _kind(a) == "number":
        if t.is_integer_dtype(e.dtype) and t.is_integer_dtype(a.dtype) and not e.isna().any() and not a.isna().any():
            return e.to_numpy() == a.to_numpy()
        ev = e.to_numpy(dtype="float64", na_value=np.nan)
        av = a.to_numpy(dtype="float64", na_value=np.nan)
        with np.errstate(invalid="ignore", over="ignore"):
            return (ev == av) | (np.isnan(ev) & np.isnan(av)) | (np.abs(ev - av) <= rtol * np.abs(ev))
    ec = [_cell(v) for v in e.tolist()]
    ac = [_cell(v) for v in a.tolist()]
    return np.array([_json_equal(x, y) if x is not None and y is not None else x is y for x, y in zip(ec, ac)], dtype=bool)


class Table(Comparator):
    """A table output against expected rows from a CSV/Parquet/JSON file or inline row dicts.

    Options: ``ignore_order`` (sort both by all columns first), ``columns`` (compare
    only these), ``rtol`` (relative tolerance of numeric cells, default 1e-9),
    ``check_dtype`` (default false: values are compared after normalizing, so a CSV's
    text "3" equals the integer 3; true also compares column dtypes).
    """

    name = "table"
    options = frozenset({"ignore_order", "columns", "rtol", "check_dtype"})
    default_rtol = 1e-9
    max_rows_shown = 10

    # -- spec

    def check_spec(self, spec, ctx):
        source = spec["table"]
        if isinstance(source, str):
            path = ctx.resolve(source)
            if path.suffix.lower() not in TABLE_SUFFIXES:
                raise ValueError(f"table: {source!r} is not a table file (expected {', '.join(TABLE_SUFFIXES)})")
            if not path.is_file():
                raise ValueError(f"table: file {source!r} does not exist (looked for {path})")
        elif isinstance(source, list):
            for i, row in enumerate(source):
                if not isinstance(row, Mapping):
                    raise ValueError(f"table: inline rows must be objects (column: value); row {i} is {_show(row)}")
        else:
            raise ValueError(f"table: expected a file path (CSV, Parquet, JSON) or a list of rows, got {_show(source)}")
        for opt in ("ignore_order", "check_dtype"):
            if opt in spec and not isinstance(spec[opt], bool):
                raise ValueError(f"{opt}: expected true or false, got {_show(spec[opt])}")
        if "columns" in spec:
            cols = spec["columns"]
            if not isinstance(cols, list) or not cols or not all(isinstance(c, str) for c in cols):
                raise ValueError(f"columns: expected a non-empty list of column names, got {_show(cols)}")
        if "rtol" in spec and (not _is_number(spec["rtol"]) or spec["rtol"] < 0):
            raise ValueError(f"rtol: expected a non-negative number, got {_show(spec['rtol'])}")

    def expected(self, spec, ctx):
        source = spec["table"]
        out: dict[str, Any] = {}
        if isinstance(source, str):
            out["file"] = source
        try:
            out.update(table_preview(self.load_expected(spec, ctx, infer=True)))
        except Exception as exc:  # noqa: BLE001 - rendering must not fail
            out["error"] = str(exc)
        opts = {k: jsonable(v) for k, v in spec.items() if k != "table"}
        if opts:
            out["options"] = opts
        return out

    # -- loading

    def load_expected(self, spec, ctx, infer: bool = False):
        """The expected rows as a DataFrame; a CSV is read as text unless `check_dtype` (or `infer`)."""
        import pandas as pd

        source = spec["table"]
        if isinstance(source, list):
            return pd.DataFrame.from_records(source) if source else pd.DataFrame()
        path = ctx.resolve(source)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            if spec.get("check_dtype") or infer:
                return pd.read_csv(path)
            return pd.read_csv(path, dtype=str)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix == ".jsonl":
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            return pd.DataFrame.from_records(rows)
        if suffix == ".json":
            return pd.DataFrame(json.loads(path.read_text()))
        raise ValueError(f"cannot read {source!r}: expected {', '.join(TABLE_SUFFIXES)}")

    def load_actual(self, actual, ctx):
        import pandas as pd

        if _is_dataframe(actual):
            return actual
        if isinstance(actual, list) and all(isinstance(r, Mapping) for r in actual):
            return pd.DataFrame.from_records(actual)
        if isinstance(actual, (str, Path)):
            loaded = ctx.load_table(actual)
            if _is_dataframe(loaded):
                return loaded
            if isinstance(loaded, list):
                return pd.DataFrame.from_records(loaded)
            raise TypeError(f"{str(actual)!r} did not load as a table (got {type(loaded).__name__})")
        return None

    # -- compare

    def compare(self, spec, actual, ctx):
        expected_render = self.expected(spec, ctx)
        act = self.load_actual(actual, ctx)
        if act is None:
            return Outcome(
                "fail",
                f"expected a table, got {_type_name(actual)} {_show(actual)}",
                expected_render,
                jsonable(actual),
            )
        exp = self.load_expected(spec, ctx)
        detail = self._diff(spec, exp, act)
        return Outcome("pass" if not detail else "fail", detail, expected_render, table_preview(act))

    def _diff(self, spec, exp, act) -> str:
        rtol = float(spec.get("rtol", self.default_rtol))
        exp = exp.copy()
        act = act.copy()
        exp.columns = [str(c) for c in exp.columns]
        act.columns = [str(c) for c in act.columns]
        problems: list[str] = []

        wanted = spec.get("columns")
        if wanted:
            lacking_act = [c for c in wanted if c not in act.columns]
            lacking_exp = [c for c in wanted if c not in exp.columns]
            if lacking_act:
                problems.append(f"missing columns: {', '.join(lacking_act)}")
            if lacking_exp:
                problems.append(f"the expected table lacks columns: {', '.join(lacking_exp)}")
            common = [c for c in wanted if c in act.columns and c in exp.columns]
        else:
            missing = [c for c in exp.columns if c not in act.columns]
            extra = [c for c in act.columns if c not in exp.columns]
            if missing:
                problems.append(f"missing columns: {', '.join(missing)}")
            if extra:
                problems.append(f"extra columns: {', '.join(extra)} (use `columns:` to compare only some)")
            common = [c for c in exp.columns if c in act.columns]

        if spec.get("check_dtype"):
            for c in common:
                if str(exp[c].dtype) != str(act[c].dtype):
                    problems.append(f"column {c}: dtype expected {exp[c].dtype}, got {act[c].dtype}")

        exp = exp[common].reset_index(drop=True)
        act = act[common].reset_index(drop=True)
        if not spec.get("check_dtype"):
            for c in common:
                exp[c], act[c] = _align(exp[c], act[c])

        if spec.get("ignore_order") and common:
            exp = self._sorted(exp, common)
            act = self._sorted(act, common)

        if len(exp) != len(act):
            problems.append(f"row count: expected {len(exp)}, got {len(act)}")
            problems.extend(self._multiset_diff(exp, act, common))
            return "\n".join(problems)

        if common and len(exp):
            masks = {c: _equal_mask(exp[c], act[c], rtol) for c in common}
            bad_cols = [c for c in common if not masks[c].all()]
            if bad_cols:
                import numpy as np

                bad_rows = sorted(set(np.flatnonzero(~np.logical_and.reduce([masks[c] for c in common])).tolist()))
                order_note = " (after sorting both by all columns)" if spec.get("ignore_order") else ""
                problems.append(
                    f"{len(bad_rows)} of {len(exp)} rows differ{order_note}, in columns: {', '.join(bad_cols)}"
                )
                same = [c for c in common if c not in bad_cols]
                for r in bad_rows[: self.max_rows_shown]:
                    ident = ""
                    if spec.get("ignore_order") and same:
                        ident = " " + _show({c: _cell(exp[c].iloc[r]) for c in same}, 100)
                    cells = "; ".join(
                        f"{c}: expected {_show(_cell(exp[c].iloc[r]), 80)}, got {_show(_cell(act[c].iloc[r]), 80)}"
                        for c in bad_cols
                        if not masks[c][r]
                    )
                    problems.append(f"  row {r}{ident}: {cells}")
                if len(bad_rows) > self.max_rows_shown:
                    problems.append(f"  ... and {len(bad_rows) - self.max_rows_shown} more rows")
        return "\n".join(problems)

    @staticmethod
    def _sorted(df, columns):
        if all(_kind(df[c]) in ("number", "text", "bool", "datetime") for c in columns):
            try:
                return df.sort_values(by=list(columns), kind="mergesort", na_position="first").reset_index(drop=True)
            except (TypeError, ValueError):
                pass
        rows = [[_cell(v) for v in row] for row in df[columns].itertuples(index=False)]
        order = sorted(range(len(rows)), key=lambda i: tuple(_sort_key(v) for v in rows[i]))
        return df.iloc[order].reset_index(drop=True)

    def _multiset_diff(self, exp, act, columns) -> list[str]:
        from collections import Counter

        def records(df):
            return [tuple(_cell(v) for v in row) for row in df[columns].itertuples(index=False)]

        er, ar = records(exp), records(act)
        ec = Counter(tuple(_hashable(v) for v in r) for r in er)
        ac = Counter(tuple(_hashable(v) for v in r) for r in ar)
        out = []
        for label, rows, mine, other in (("rows missing", er, ec, ac), ("rows unexpected", ar, ac, ec)):
            left = other.copy()
            shown = []
            for r in rows:
                key = tuple(_hashable(v) for v in r)
                if left[key] > 0:
                    left[key] -= 1
                else:
                    shown.append(dict(zip(columns, r)))
            if shown:
                out.append(f"{label} ({len(shown)}):")
                out.extend(f"  {_show(row, 160)}" for row in shown[: self.max_rows_shown])
                if len(shown) > self.max_rows_shown:
                    out.append(f"  ... and {len(shown) - self.max_rows_shown} more")
        return out


class JudgeComparator(Comparator):
    """An LLM grades the value against a rubric; its verdict is recorded and replayed.

    ``{judge: "The summary names the customer's tier.", model: gpt-4o}`` (``model`` is
    optional: the workflow's model by default). The grading is done by the
    :class:`kit.judge.Judge` the engine puts in ``ctx.services["judge"]``; without
    one the verdict is ``error``. The detail is the judge's reason.
    """

    name = "judge"
    options = frozenset({"model"})

    def check_spec(self, spec, ctx):
        rubric = spec["judge"]
        if not isinstance(rubric, str) or not rubric.strip():
            raise ValueError(f"judge: expected a rubric (a non-empty string), got {_show(rubric)}")
        if "model" in spec and (not isinstance(spec["model"], str) or not spec["model"].strip()):
            raise ValueError(f"model: expected a model name, got {_show(spec['model'])}")

    def expected(self, spec, ctx):
        return jsonable(spec["judge"])

    def compare(self, spec, actual, ctx):
        rubric = spec["judge"]
        judge = ctx.services.get("judge") if isinstance(ctx.services, Mapping) else None
        if judge is None:
            return Outcome(
                "error",
                "no judge configured: the judge comparator needs a kit.judge.Judge in the "
                "CompareContext's services['judge'] (kit test provides one)",
                rubric,
                jsonable(actual),
            )
        if isinstance(actual, str) and actual.startswith("artifact:sha256:"):
            actual = ctx.load_table(actual)  # a table output: judge its rows, not its reference
        verdict, reason, call = judge.grade(rubric, actual, model=spec.get("model"))
        note = call.get("note") if isinstance(call, Mapping) else None
        detail = f"{reason} ({note})" if note else reason
        return Outcome(verdict, detail, rubric, jsonable(actual))


# --------------------------------------------------------------------------- registry

BUILTINS: tuple[type[Comparator], ...] = (Equals, Approx, Contains, Matches, OneOf, Schema, Table, JudgeComparator)

_lock = threading.RLock()
_registry: dict[str, Comparator] | None = None
_plugin_errors: dict[str, str] = {}
_registered: dict[str, Comparator] = {}


def _load_registry() -> dict[str, Comparator]:
    global _registry
    with _lock:
        if _registry is not None:
            return _registry
        reg: dict[str, Comparator] = {cls.name: cls() for cls in BUILTINS}
        _plugin_errors.clear()
        from importlib.metadata import entry_points

        try:
            eps = list(entry_points(group=ENTRY_POINT_GROUP))
        except Exception as exc:  # noqa: BLE001 - a broken environment must not break kit
            eps = []
            _plugin_errors["*"] = f"cannot list entry points: {exc}"
        for ep in eps:
            if ep.name in reg:
                continue  # built-ins win; the first plugin of a name wins
            try:
                reg[ep.name] = _instantiate(ep.load(), ep.name)
            except Exception as exc:  # noqa: BLE001
                _plugin_errors[ep.name] = f"{ep.value}: {type(exc).__name__}: {exc}"
        for name, comp in _registered.items():
            reg[name] = comp
        _registry = reg
        return reg


def _instantiate(obj: Any, name: str) -> Comparator:
    comp = obj() if isinstance(obj, type) else obj
    if not callable(getattr(comp, "compare", None)):
        raise TypeError(f"{obj!r} is not a Comparator (it has no compare method)")
    if not getattr(comp, "name", None):
        try:
            comp.name = name
        except AttributeError:
            pass
    if not isinstance(getattr(comp, "options", frozenset()), frozenset):
        comp.options = frozenset(comp.options)
    return comp


def register(comparator: Comparator | type[Comparator], name: str | None = None) -> Comparator:
    """Add (or replace) a comparator by name in this process, e.g. from a conftest."""
    comp = _instantiate(comparator, name or getattr(comparator, "name", ""))
    key = name or comp.name
    if not key:
        raise ValueError("a comparator needs a name")
    with _lock:
        _registered[key] = comp
        if _registry is not None:
            _registry[key] = comp
    return comp


def reset_registry() -> None:
    """Forget discovered plugins and programmatic registrations; the next lookup rediscovers."""
    global _registry
    with _lock:
        _registry = None
        _plugin_errors.clear()
        _registered.clear()


def available() -> list[str]:
    """The names of every usable comparator, sorted."""
    return sorted(_load_registry())


def get_comparator(name: str) -> Comparator:
    """The comparator named `name`; an unknown name is an InvalidInput listing the known ones."""
    reg = _load_registry()
    if name in reg:
        return reg[name]
    if name in _plugin_errors:
        raise InvalidInput(f"comparator {name!r} could not be loaded: {_plugin_errors[name]}")
    raise InvalidInput(f"unknown comparator {name!r} (known: {', '.join(sorted(reg))})")


def resolve_spec(spec: Any) -> tuple[str, Comparator]:
    """The comparator a spec names, checking its keys; raises ValueError with a message.

    A spec is a mapping with exactly one comparator key; every other key must be
    one of that comparator's options.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"expected a mapping with one comparator, e.g. {{equals: ...}}, got {_show(spec)}")
    reg = _load_registry()
    keys = [k for k in spec]
    named = [k for k in keys if k in reg]
    if len(named) > 1:
        # a key that is also another candidate's option (a plugin's name) is an option
        fits = [k for k in named if all(o in reg[k].options for o in keys if o != k)]
        if len(fits) == 1:
            named = fits
        else:
            raise ValueError(f"several comparators ({', '.join(named)}); an expectation takes exactly one")
    if not named:
        if not keys:
            raise ValueError(f"no comparator given (known: {', '.join(sorted(reg))})")
        unknown = next((k for k in keys if not any(k in c.options for c in reg.values())), keys[0])
        if unknown in _plugin_errors:
            raise ValueError(f"comparator {unknown!r} could not be loaded: {_plugin_errors[unknown]}")
        raise ValueError(f"unknown comparator {unknown!r} (known: {', '.join(sorted(reg))})")
    name = named[0]
    comp = reg[name]
    refused = [k for k in keys if k != name and k not in comp.options]
    if refused:
        accepted = ", ".join(sorted(comp.options)) or "none"
        raise ValueError(
            f"{name} does not accept {', '.join(repr(k) for k in refused)} (its options: {accepted})"
        )
    return name, comp


# --------------------------------------------------------------------------- running


def run_comparator(comparator: Comparator, spec: dict, actual: Any, ctx: CompareContext) -> Outcome:
    """``comparator.compare`` that never raises: an exception becomes verdict ``error``."""
    try:
        outcome = comparator.compare(spec, actual, ctx)
        if not isinstance(outcome, Outcome):
            raise TypeError(f"comparator {comparator.name!r} returned {type(outcome).__name__}, not an Outcome")
        return outcome
    except Exception as exc:  # noqa: BLE001 - the contract is: never crash the caller
        try:
            expected = comparator.expected(spec, ctx)
        except Exception:  # noqa: BLE001
            expected = jsonable(spec)
        return Outcome("error", f"comparator {comparator.name} raised {type(exc).__name__}: {exc}", expected, jsonable(actual))


_MISSING = object()


def evaluate(expectation: Any, outputs: Mapping[str, Any] | Callable[[str, str], Any], ctx: CompareContext) -> Outcome:
    """Check one expectation against a run's outputs; never raises.

    `outputs` maps ``"STEP.OUTPUT"`` (or ``(step, output)``) to the output's value, or
    is a callable ``(step, output) -> value`` raising KeyError for an output the run
    did not produce. A missing output, or a path that does not exist in it, is a
    ``fail``; a comparator that cannot run is an ``error``.
    """
    from kit.scenario import PathNotFound, extract

    step, output = expectation.step, expectation.output
    try:
        comp = get_comparator(expectation.comparator)
    except Exception as exc:  # noqa: BLE001
        return Outcome("error", str(exc), jsonable(expectation.spec), None)
    try:
        expected = comp.expected(expectation.spec, ctx)
    except Exception:  # noqa: BLE001
        expected = jsonable(expectation.spec)

    value: Any = _MISSING
    try:
        if callable(outputs) and not isinstance(outputs, Mapping):
            value = outputs(step, output)
        else:
            key = f"{step}.{output}"
            if key in outputs:
                value = outputs[key]
            elif (step, output) in outputs:
                value = outputs[(step, output)]
    except KeyError:
        value = _MISSING
    except Exception as exc:  # noqa: BLE001
        return Outcome("error", f"cannot read output {step}.{output}: {type(exc).__name__}: {exc}", expected, None)
    if value is _MISSING:
        return Outcome("fail", f"output {step}.{output} was not produced", expected, None)

    if expectation.path:
        try:
            value = extract(value, expectation.path, label=f"{step}.{output}", load_table=ctx.load_table)
        except PathNotFound as exc:
            return Outcome("fail", str(exc), expected, None)
        except Exception as exc:  # noqa: BLE001
            return Outcome("error", f"cannot follow {expectation.key}: {type(exc).__name__}: {exc}", expected, None)
    return run_comparator(comp, expectation.spec, value, ctx)
