"""Typed contracts: what a step may receive and what it must produce.

Output types are the manifest's names (`string`, `number`, `integer`, `boolean`,
`object`, `array`, `table`) or a JSON Schema object. Parameter types are the
annotations of the notebook's parameters cell. Both are checked by kit, before a
value reaches papermill and after a step ends.
"""

from __future__ import annotations

import ast
import math
from typing import Any

TYPE_NAMES = ("string", "number", "integer", "boolean", "object", "array", "table")

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


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
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


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


def _is_type(value: Any, name: str) -> bool:
    if name in ("number", "integer") and isinstance(value, bool):
        return False
    return isinstance(value, _JSON_TYPES[name])


def spec_problem(spec: Any) -> str | None:
    """Why an output type spec is not valid, or None."""
    if isinstance(spec, str):
        return None if spec in TYPE_NAMES else f"unknown type {spec!r}; expected one of {', '.join(TYPE_NAMES)} or a JSON Schema object"
    if isinstance(spec, dict):
        if spec.get("type") == "table":
            return None if set(spec) <= {"type", "columns"} else "a table type takes only 'columns'"
        from fastjsonschema import JsonSchemaDefinitionException

        try:
            _compiled(spec)
        except JsonSchemaDefinitionException as exc:
            return f"not a valid JSON Schema: {exc}"
        except (TypeError, ValueError) as exc:
            return f"not a valid JSON Schema: {exc}"
        return None
    return f"expected a type name or a JSON Schema object, found {describe(spec)}"


def is_table(spec: Any) -> bool:
    return spec == "table" or (isinstance(spec, dict) and spec.get("type") == "table")


def json_types_of(spec: Any) -> set[str] | None:
    """The JSON types a spec admits, or None when it admits anything."""
    if is_table(spec):
        return {"table"}
    if isinstance(spec, str):
        return {spec}
    declared = spec.get("type") if isinstance(spec, dict) else None
    if declared is None:
        return None
    return set(declared) if isinstance(declared, list) else {declared}


def check_output(name: str, spec: Any, value: Any, is_artifact_table: bool) -> str | None:
    """Why an output does not meet its declared type, or None."""
    if is_table(spec):
        if not is_artifact_table:
            return f"output {name!r} must be a table (a pandas DataFrame), got {describe(value)}"
        return None
    if is_artifact_table:
        return f"output {name!r} is declared {spec if isinstance(spec, str) else 'a JSON Schema'}, got a table (DataFrame)"
    if isinstance(spec, str):
        if not _is_type(value, spec):
            return f"output {name!r} must be {spec}, got {describe(value)}: {_short(value)}"
        return None
    from fastjsonschema import JsonSchemaValueException

    try:
        _compiled(spec)(value)
    except JsonSchemaValueException as exc:
        return f"output {name!r} does not match its schema: {exc.message}"
    return None


_COMPILED: dict[str, Any] = {}


def _compiled(schema: dict):
    """A compiled validator (fastjsonschema: jsonschema's import costs a second where rfc3987 is installed)."""
    import json

    import fastjsonschema

    key = json.dumps(schema, sort_keys=True, default=str)
    if key not in _COMPILED:
        _COMPILED[key] = fastjsonschema.compile(schema)
    return _COMPILED[key]


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- parameter annotations -------------------------------------------------

_ANNOTATION_TYPES: dict[str, set[str]] = {
    "str": {"string"},
    "int": {"integer"},
    "float": {"number", "integer"},
    "bool": {"boolean"},
    "dict": {"object"},
    "list": {"array"},
    "None": {"null"},
    "NoneType": {"null"},
}
_ANY = None  # an annotation kit does not check


def annotation_types(annotation: str | None) -> set[str] | None:
    """The JSON types an annotation admits (None: anything, or an annotation kit does not know)."""
    if annotation is None:
        return _ANY
    try:
        node = ast.parse(annotation, mode="eval").body
    except SyntaxError:
        return _ANY
    return _node_types(node)


def _node_types(node: ast.AST) -> set[str] | None:
    if isinstance(node, ast.Constant) and node.value is None:
        return {"null"}
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # a string annotation
        return annotation_types(node.value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left, right = _node_types(node.left), _node_types(node.right)
        return None if left is None or right is None else left | right
    name = None
    if isinstance(node, ast.Name):
        name = node.id
    elif isinstance(node, ast.Attribute):
        name = node.attr
    elif isinstance(node, ast.Subscript):
        outer = node.value.attr if isinstance(node.value, ast.Attribute) else getattr(node.value, "id", None)
        if outer == "Optional":
            inner = _node_types(node.slice)
            return None if inner is None else inner | {"null"}
        if outer == "Union":
            parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            result: set[str] = set()
            for part in parts:
                types = _node_types(part)
                if types is None:
                    return None
                result |= types
            return result
        name = {"List": "list", "Dict": "dict", "Sequence": "list", "Mapping": "dict"}.get(outer, outer)
    if name in ("List", "Sequence"):
        name = "list"
    if name in ("Dict", "Mapping"):
        name = "dict"
    return _ANNOTATION_TYPES.get(name) if name else None


def check_parameter(annotation: str | None, value: Any) -> str | None:
    """Why `value` does not fit the annotation, or None."""
    allowed = annotation_types(annotation)
    if allowed is None:
        return None
    actual = describe(value)
    if actual in allowed or (actual == "integer" and "number" in allowed):
        return None
    return f"expected {annotation}, got {actual}: {_short(value)}"


def accepts(annotation: str | None, spec: Any) -> bool:
    """Whether a parameter annotated `annotation` can receive outputs of type `spec`."""
    allowed = annotation_types(annotation)
    produced = json_types_of(spec)
    if allowed is None or produced is None:
        return True
    produced = {"string" if t == "table" else t for t in produced}  # a table arrives as a reference
    widened = set(allowed) | ({"integer"} if "number" in allowed else set())
    return produced <= widened
