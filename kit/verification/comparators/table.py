"""The ``table`` comparator: a table output against expected rows (a CSV, Parquet or JSON
file, or inline rows), by row and column, with ``ignore_order``, ``columns``, ``rtol`` and
``check_dtype``. A failure names the differing rows and columns, or the rows missing and
unexpected.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kit.base.display import brief
from kit.base.values import is_dataframe, is_number, json_type, jsonable, table_cell, table_preview
from kit.verification.comparators.base import Comparator, Outcome, json_equal

TABLE_SUFFIXES = (".csv", ".parquet", ".pq", ".json", ".jsonl")


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
    if len(non_null) and all(is_number(v) for v in non_null):
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
            out = s.map(
                lambda v: (
                    v
                    if isinstance(v, bool)
                    else _BOOL_WORDS.get(str(v).strip().lower())
                    if v is not None and not (isinstance(v, float) and math.isnan(v))
                    else None
                )
            )
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
    ec = [table_cell(v) for v in e.tolist()]
    ac = [table_cell(v) for v in a.tolist()]
    return np.array(
        [json_equal(x, y) if x is not None and y is not None else x is y for x, y in zip(ec, ac)], dtype=bool
    )


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
            try:
                path = ctx.resolve(source)
            except ValueError as exc:
                raise ValueError(f"table: {exc}: a scenario's files live in its project") from None
            if path.suffix.lower() not in TABLE_SUFFIXES:
                raise ValueError(f"table: {source!r} is not a table file (expected {', '.join(TABLE_SUFFIXES)})")
            if not path.is_file():
                raise ValueError(f"table: file {source!r} does not exist (looked for {path})")
        elif isinstance(source, list):
            for i, row in enumerate(source):
                if not isinstance(row, Mapping):
                    raise ValueError(f"table: inline rows must be objects (column: value); row {i} is {brief(row)}")
        else:
            raise ValueError(f"table: expected a file path (CSV, Parquet, JSON) or a list of rows, got {brief(source)}")
        for opt in ("ignore_order", "check_dtype"):
            if opt in spec and not isinstance(spec[opt], bool):
                raise ValueError(f"{opt}: expected true or false, got {brief(spec[opt])}")
        if "columns" in spec:
            cols = spec["columns"]
            if not isinstance(cols, list) or not cols or not all(isinstance(c, str) for c in cols):
                raise ValueError(f"columns: expected a non-empty list of column names, got {brief(cols)}")
        if "rtol" in spec and (not is_number(spec["rtol"]) or spec["rtol"] < 0):
            raise ValueError(f"rtol: expected a non-negative number, got {brief(spec['rtol'])}")

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

        if is_dataframe(actual):
            return actual
        if isinstance(actual, list) and all(isinstance(r, Mapping) for r in actual):
            return pd.DataFrame.from_records(actual)
        if isinstance(actual, (str, Path)):
            loaded = ctx.load_table(actual)
            if is_dataframe(loaded):
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
                f"expected a table, got {json_type(actual)} {brief(actual)}",
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
                        ident = " " + brief({c: table_cell(exp[c].iloc[r]) for c in same}, 100)
                    cells = "; ".join(
                        f"{c}: expected {brief(table_cell(exp[c].iloc[r]), 80)}, got {brief(table_cell(act[c].iloc[r]), 80)}"
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
        rows = [[table_cell(v) for v in row] for row in df[columns].itertuples(index=False)]
        order = sorted(range(len(rows)), key=lambda i: tuple(_sort_key(v) for v in rows[i]))
        return df.iloc[order].reset_index(drop=True)

    def _multiset_diff(self, exp, act, columns) -> list[str]:
        from collections import Counter

        def records(df):
            return [tuple(table_cell(v) for v in row) for row in df[columns].itertuples(index=False)]

        er, ar = records(exp), records(act)
        ec = Counter(tuple(_hashable(v) for v in r) for r in er)
        ac = Counter(tuple(_hashable(v) for v in r) for r in ar)
        out = []
        for label, rows, other in (("rows missing", er, ac), ("rows unexpected", ar, ec)):
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
                out.extend(f"  {brief(row, 160)}" for row in shown[: self.max_rows_shown])
                if len(shown) > self.max_rows_shown:
                    out.append(f"  ... and {len(shown) - self.max_rows_shown} more")
        return out
