"""Typed contracts: what a step may receive and what it must produce.

Output types are the manifest's names (`string`, `number`, `integer`, `boolean`,
`object`, `array`, `table`) or a JSON Schema object. Parameter types are the
annotations of the notebook's parameters cell. Both are checked by kit, before a
value reaches papermill and after a step ends. JSON Schemas, here and in scenarios,
are checked with one library, jsonschema.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import threading
from typing import Any

from kit.base.deferred import defer_iri_grammar
from kit.base.display import shorten
from kit.base.values import describe

TYPE_NAMES = ("string", "number", "integer", "boolean", "object", "array", "table")

JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


def is_json_type(value: Any, name: str) -> bool:
    """Whether `value` is of the JSON type `name` (a bool is not a number)."""
    if name in ("number", "integer") and isinstance(value, bool):
        return False
    return isinstance(value, JSON_TYPES[name])


def spec_problem(spec: Any) -> str | None:
    """Why an output type spec is not valid, or None."""
    if isinstance(spec, str):
        return (
            None
            if spec in TYPE_NAMES
            else f"unknown type {spec!r}; expected one of {', '.join(TYPE_NAMES)} or a JSON Schema object"
        )
    if isinstance(spec, dict):
        if spec.get("type") == "table":
            return None if set(spec) <= {"type", "columns"} else "a table type takes only 'columns'"
        return schema_problem(spec)
    return f"expected a type name or a JSON Schema object, found {describe(spec)}"


def is_table(spec: Any) -> bool:
    return spec == "table" or (isinstance(spec, dict) and spec.get("type") == "table")


def type_name(spec: Any) -> str:
    """The name an output's declared type is recorded under: a type name, "table" or "schema"."""
    if is_table(spec):
        return "table"
    return spec if isinstance(spec, str) else "schema"


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
        return (
            f"output {name!r} is declared {spec if isinstance(spec, str) else 'a JSON Schema'}, got a table (DataFrame)"
        )
    if isinstance(spec, str):
        if not is_json_type(value, spec):
            return f"output {name!r} must be {spec}, got {describe(value)}: {shorten(repr(value), 80)}"
        return None
    errors = schema_errors(spec, value)
    if errors:
        return f"output {name!r} does not match its schema: {errors[0]}"
    return None


# ---- JSON Schema -------------------------------------------------------------

_IMPORT_LOCK = threading.Lock()
_VALIDATORS: dict[str, Any] = {}


def _jsonschema():
    """jsonschema, with the IRI grammar its format checker would build (0.8 s) put off until a
    format check needs it (`kit.base.deferred`)."""
    if "jsonschema" not in sys.modules:
        with _IMPORT_LOCK:
            defer_iri_grammar()
            import jsonschema  # noqa: F401
    import jsonschema

    return jsonschema


def json_path(parts: Any) -> str:
    """``$.a[0].b`` for a path of keys and indices."""
    out = "$"
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif re.fullmatch(r"[A-Za-z_]\w*", str(p)):
            out += f".{p}"
        else:
            out += f"[{json.dumps(str(p))}]"
    return out


def schema_problem(schema: Any) -> str | None:
    """Why `schema` is not a valid JSON Schema (its ``$schema`` dialect, else 2020-12), or None."""
    if not isinstance(schema, (dict, bool)):
        return f"expected a JSON Schema object, found {describe(schema)}"
    jsonschema = _jsonschema()
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        where = json_path(exc.absolute_path) if exc.absolute_path else "the schema"
        return f"not a valid JSON Schema: at {where}: {exc.message}"
    return None


def schema_errors(schema: Any, value: Any) -> list[str]:
    """Every way `value` breaks `schema`, each as ``$.path: message``, in a stable order."""
    key = json.dumps(schema, sort_keys=True, default=str)
    validator = _VALIDATORS.get(key)
    if validator is None:
        cls = _jsonschema().validators.validator_for(schema)
        validator = _VALIDATORS[key] = cls(schema)
    errors = sorted(validator.iter_errors(value), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [f"{json_path(e.absolute_path)}: {e.message}" for e in errors]


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
    return f"expected {annotation}, got {actual}: {shorten(repr(value), 80)}"


def accepts(annotation: str | None, spec: Any) -> bool:
    """Whether a parameter annotated `annotation` can receive outputs of type `spec`."""
    allowed = annotation_types(annotation)
    produced = json_types_of(spec)
    if allowed is None or produced is None:
        return True
    produced = {"string" if t == "table" else t for t in produced}  # a table arrives as a reference
    widened = set(allowed) | ({"integer"} if "number" in allowed else set())
    return produced <= widened
