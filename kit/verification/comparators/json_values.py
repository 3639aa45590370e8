"""The comparators of JSON values: ``equals``, ``approx``, ``contains``, ``matches``,
``one_of`` and ``schema``. Each failure explains itself: the first differing path and a
diff, the distance and the tolerance, what is missing, the schema errors with their paths.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from kit.base.display import brief
from kit.base.values import is_dataframe, is_number, json_type, jsonable
from kit.spec.contracts import json_path, schema_errors, schema_problem
from kit.verification.comparators.base import Comparator, first_difference, json_equal, unified_diff, verdict


class Equals(Comparator):
    """Deep equality (JSON semantics). On failure: the first differing path and a unified diff."""

    name = "equals"

    def compare(self, spec, actual, ctx):
        expected = spec["equals"]
        if is_dataframe(actual):
            actual = jsonable(actual.to_dict(orient="records"))
        diff = first_difference(expected, actual, ())
        if diff is None:
            return verdict(True, "", expected, actual)
        path, what = diff
        detail = f"first difference at {json_path(path)}: {what}"
        if isinstance(expected, (Mapping, list, tuple)) or isinstance(actual, (Mapping, list, tuple)):
            detail += "\n" + unified_diff(expected, actual)
        return verdict(False, detail, expected, actual)


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
            if opt in spec and (not is_number(spec[opt]) or spec[opt] < 0):
                raise ValueError(f"{opt}: expected a non-negative number, got {brief(spec[opt])}")
        bad = self._non_numeric(spec["approx"], ())
        if bad is not None:
            raise ValueError(
                f"approx: expected a number or a list of numbers, got {brief(bad[1])} at {json_path(bad[0])}"
            )

    def _non_numeric(self, value, path):
        if is_number(value):
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
            return verdict(True, "", self.expected(spec, ctx), actual)
        detail = (
            problems[0]
            if len(problems) == 1
            else f"{len(problems)} values differ:\n"
            + "\n".join(f"  {p}" for p in problems[:10])
            + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        )
        return verdict(False, detail, self.expected(spec, ctx), actual)

    def _walk(self, spec, expected, actual, path, problems):
        where = "" if not path else f"at {json_path(path)}: "
        if is_number(expected):
            if not is_number(actual):
                problems.append(
                    f"{where}expected a number near {brief(expected)}, got {json_type(actual)} {brief(actual)}"
                )
                return
            tol = self._tolerance(spec, float(expected))
            distance = abs(float(actual) - float(expected))
            if not (distance <= tol or float(actual) == float(expected)):
                problems.append(
                    f"{where}{brief(actual)} is {distance:.6g} from {brief(expected)}, "
                    f"beyond the tolerance {self._tolerance_text(spec, tol)}"
                )
            return
        if isinstance(expected, (list, tuple)):
            if not isinstance(actual, (list, tuple)):
                problems.append(
                    f"{where}expected an array of {len(expected)} numbers, got {json_type(actual)} {brief(actual)}"
                )
                return
            if len(actual) != len(expected):
                problems.append(f"{where}expected {len(expected)} items, got {len(actual)}")
                return
            for i, (e, a) in enumerate(zip(expected, actual)):
                self._walk(spec, e, a, path + (i,), problems)
            return
        if isinstance(expected, Mapping):
            if not isinstance(actual, Mapping):
                problems.append(f"{where}expected an object, got {json_type(actual)} {brief(actual)}")
                return
            for k, e in expected.items():
                if k not in actual:
                    problems.append(f"at {json_path(path + (k,))}: missing")
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
                return verdict(
                    False, f"cannot look for non-string items {brief(bad_types)} in a string", expected, actual
                )
            missing = [i for i in items if norm(i) not in norm(actual)]
            return verdict(
                not missing,
                f"missing {', '.join(brief(m) for m in missing)} in the string {brief(actual)}",
                expected,
                actual,
            )
        if isinstance(actual, (list, tuple)):
            items = expected if isinstance(expected, (list, tuple)) else [expected]
            pool = [norm(a) for a in actual]
            missing = [i for i in items if not any(json_equal(norm(i), a) for a in pool)]
            return verdict(
                not missing,
                f"missing {', '.join(brief(m) for m in missing)} in the list {brief(actual)}",
                expected,
                actual,
            )
        if isinstance(actual, Mapping):
            if isinstance(expected, Mapping):
                missing = [k for k in expected if k not in actual]
                wrong = [k for k in expected if k in actual and not json_equal(norm(expected[k]), norm(actual[k]))]
                parts = []
                if missing:
                    parts.append(f"missing keys {', '.join(brief(k) for k in missing)}")
                for k in wrong:
                    parts.append(f"{json_path((k,))}: expected {brief(expected[k])}, got {brief(actual[k])}")
                return verdict(not parts, "; ".join(parts), expected, actual)
            items = expected if isinstance(expected, (list, tuple)) else [expected]
            missing = [i for i in items if i not in actual]
            return verdict(
                not missing,
                f"missing keys {', '.join(brief(m) for m in missing)} in the object (keys: {', '.join(map(str, actual))})",
                expected,
                actual,
            )
        return verdict(
            False,
            f"expected a string, a list or an object to look in, got {json_type(actual)} {brief(actual)}",
            expected,
            actual,
        )


class Matches(Comparator):
    """A Python regular expression found in a string value (``re.search``)."""

    name = "matches"

    def check_spec(self, spec, ctx):
        pattern = spec["matches"]
        if not isinstance(pattern, str):
            raise ValueError(f"matches: expected a regular expression string, got {brief(pattern)}")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"matches: invalid regular expression {pattern!r}: {exc}") from None

    def compare(self, spec, actual, ctx):
        pattern = spec["matches"]
        if not isinstance(actual, str):
            return verdict(
                False, f"pattern /{pattern}/ needs a string, got {json_type(actual)} {brief(actual)}", pattern, actual
            )
        ok = re.search(pattern, actual) is not None
        return verdict(ok, f"pattern /{pattern}/ not found in {brief(actual, 500)}", pattern, actual)


class OneOf(Comparator):
    """The value equals one of a list of allowed values."""

    name = "one_of"

    def check_spec(self, spec, ctx):
        allowed = spec["one_of"]
        if not isinstance(allowed, list) or not allowed:
            raise ValueError(f"one_of: expected a non-empty list of allowed values, got {brief(allowed)}")

    def compare(self, spec, actual, ctx):
        allowed = spec["one_of"]
        ok = any(json_equal(a, actual) for a in allowed)
        return verdict(ok, f"{brief(actual)} is not one of {brief(allowed)}", allowed, actual)


class Schema(Comparator):
    """The value is valid against a JSON Schema (the schema's ``$schema`` dialect, else 2020-12)."""

    name = "schema"

    def check_spec(self, spec, ctx):
        schema = spec["schema"]
        if not isinstance(schema, (Mapping, bool)):
            raise ValueError(f"schema: expected a JSON Schema object, got {brief(schema)}")
        problem = schema_problem(schema)
        if problem:
            raise ValueError(f"schema: {problem.replace('not a valid JSON Schema: at', 'invalid JSON Schema at')}")

    def compare(self, spec, actual, ctx):
        schema = spec["schema"]
        value = jsonable(actual)
        errors = schema_errors(schema, value)
        if not errors:
            return verdict(True, "", schema, value)
        lines = errors[:20]
        if len(errors) > 20:
            lines.append(f"... and {len(errors) - 20} more")
        head = f"{len(errors)} schema error{'s' if len(errors) != 1 else ''}:"
        return verdict(False, head + "\n" + "\n".join(f"  {line}" for line in lines), schema, value)
