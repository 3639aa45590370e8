"""What kind of value is this: JSON type names, DataFrames, and JSON-able renderings.

kit's values are JSON (str, int, float, bool, None, list, dict) or pandas DataFrames
(tables). pandas is never imported here: a DataFrame is recognised by its type's name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def is_dataframe(value: Any) -> bool:
    return type(value).__module__.startswith("pandas") and type(value).__name__ == "DataFrame"


def is_number(value: Any) -> bool:
    """An int or float (not a bool), or a numpy number."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return type(value).__module__.startswith("numpy") and hasattr(value, "dtype") and value.dtype.kind in "iuf"


def describe(value: Any) -> str:
    """A short name of a value's type, in JSON's words where it has one."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    if is_number(value):
        return "number"
    return type(value).__name__


def json_type(value: Any) -> str:
    """JSON's own name of a value's type (an integer is a "number", as JSON has no integers)."""
    name = describe(value)
    return "number" if name == "integer" else name


def json_problem(value: Any, where: str = "value") -> str | None:
    """Why `value` is not plain JSON (str, int, float, bool, None, list, dict), or None."""
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is {value}, which JSON cannot hold"
    if isinstance(value, list):
        for i, item in enumerate(value):
            problem = json_problem(item, f"{where}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} has a non-string key {key!r}"
            problem = json_problem(item, f"{where}.{key}")
            if problem:
                return problem
        return None
    return f"{where} is a {type(value).__name__} ({value!r}), not a JSON value"


def table_cell(v: Any) -> Any:
    """A table cell as a plain value: missing values are None, numpy values Python, times ISO text."""
    if v is None:
        return None
    if isinstance(v, (list, tuple)):
        return [table_cell(x) for x in v]
    if isinstance(v, dict):
        return {k: table_cell(x) for k, x in v.items()}
    mod = type(v).__module__
    if mod.startswith("numpy") and type(v).__name__ == "ndarray":
        return [table_cell(x) for x in v.tolist()]
    if isinstance(v, float) and math.isnan(v):
        return None
    if mod.startswith(("numpy", "pandas")):
        import pandas as pd

        try:
            if pd.isna(v):
                return None
        except (TypeError, ValueError):
            pass
    if mod.startswith("numpy") and hasattr(v, "item"):
        v = v.item()
    if hasattr(v, "isoformat") and not isinstance(v, str):
        return v.isoformat()
    return v


def table_preview(df: Any, head: int = 5) -> dict[str, Any]:
    """A small JSON-able preview of a DataFrame: row count, columns and the first rows."""
    rows = [
        {str(c): jsonable(table_cell(v)) for c, v in zip(df.columns, row)}
        for row in df.head(head).itertuples(index=False)
    ]
    return {"rows": int(len(df)), "columns": [str(c) for c in df.columns], "head": rows}


def jsonable(value: Any, _depth: int = 0) -> Any:
    """A JSON-able rendering of `value`: numpy scalars become Python, a DataFrame a preview."""
    if value is None or isinstance(value, (bool, str, int)):
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
    if is_dataframe(value):
        return table_preview(value)
    if isinstance(value, Path):
        return str(value)
    mod = type(value).__module__
    if mod.startswith("numpy") and hasattr(value, "tolist"):
        return jsonable(value.tolist(), _depth + 1)
    if mod.startswith("pandas") and type(value).__name__ == "Series":
        return jsonable(value.tolist(), _depth + 1)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if type(value).__name__ == "Decimal":
        return float(value)
    return repr(value)
