"""JSON Schema for a tool's arguments, derived from its function's type hints, read from source.

A tool is a Python function in a file of the workflow's folder (DESIGN section 15). Its
arguments' schema comes from the annotations as written (``ast``), so a manifest is
checked without importing, let alone running, the tool's module. Understood: ``str``,
``int``, ``float``, ``bool``, ``dict``/``Dict[...]``/``Mapping``, ``list[X]``/``List[X]``/
``Sequence[X]``/``tuple[X, ...]``, ``X | None``/``Optional[X]``/``Union[...]``,
``Literal[...]`` and ``Any``. A parameter without a hint, ``*args`` or ``**kwargs``, or a
hint with no JSON meaning is a problem naming the file and line.

Standard library only.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SCALARS = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
_OBJECTS = {"dict", "Dict", "Mapping", "MutableMapping"}
_ARRAYS = {"list", "List", "Sequence", "tuple", "Tuple", "set", "Set", "Iterable"}


class NoSchema(ValueError):
    """An annotation with no JSON Schema meaning."""


@dataclass
class FunctionSchema:
    name: str
    line: int
    parameters: dict[str, Any]  # JSON Schema of the arguments: {"type": "object", "properties", "required"}
    description: str = ""
    problems: list[str] = field(default_factory=list)  # "file:line: ..." each


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):  # typing.List, t.Optional
        return node.attr
    raise NoSchema(ast.unparse(node))


def _args(node: ast.expr) -> list[ast.expr]:
    return list(node.elts) if isinstance(node, ast.Tuple) else [node]


def annotation_schema(node: ast.expr) -> dict[str, Any]:
    """The JSON Schema an annotation means; `NoSchema` naming it when it has none."""
    if isinstance(node, ast.Constant):
        if node.value is None:
            return {"type": "null"}
        if isinstance(node.value, str):  # a string annotation: parse it
            try:
                return annotation_schema(ast.parse(node.value, mode="eval").body)
            except SyntaxError:
                raise NoSchema(repr(node.value)) from None
        raise NoSchema(ast.unparse(node))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):  # X | Y
        return _union([node.left, node.right])
    if isinstance(node, ast.Subscript):
        outer = _name(node.value)
        inner = _args(node.slice)
        if outer == "Optional":
            return _union([*inner, ast.Constant(None)])
        if outer == "Union":
            return _union(inner)
        if outer == "Literal":
            values = [v.value for v in inner if isinstance(v, ast.Constant)]
            if len(values) != len(inner):
                raise NoSchema(ast.unparse(node))
            return {"enum": values}
        if outer == "Annotated":
            return annotation_schema(inner[0])
        if outer in _OBJECTS:
            schema: dict[str, Any] = {"type": "object"}
            if len(inner) == 2:
                values = annotation_schema(inner[1])
                if values:
                    schema["additionalProperties"] = values
            return schema
        if outer in _ARRAYS:
            items = [i for i in inner if not (isinstance(i, ast.Constant) and i.value is Ellipsis)]
            schema = {"type": "array"}
            if len(items) == 1 and (item := annotation_schema(items[0])):
                schema["items"] = item
            return schema
        raise NoSchema(ast.unparse(node))
    name = _name(node)
    if name in _SCALARS:
        return {"type": _SCALARS[name]}
    if name in _OBJECTS:
        return {"type": "object"}
    if name in _ARRAYS:
        return {"type": "array"}
    if name == "Any":
        return {}
    if name == "None":
        return {"type": "null"}
    raise NoSchema(name)


def _union(members: list[ast.expr]) -> dict[str, Any]:
    schemas = [annotation_schema(m) for m in members]
    if any(s == {} for s in schemas):
        return {}
    types: list[str] = []
    for s in schemas:
        if set(s) != {"type"}:  # not a plain type: keep the alternatives as they are
            return {"anyOf": schemas}
        types.append(s["type"])
    return {"type": types[0] if len(types) == 1 else types}


def _literal(node: ast.expr) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return False, None


def function_schema(func: ast.FunctionDef | ast.AsyncFunctionDef, where: str) -> FunctionSchema:
    """The arguments' schema of a function definition; `where` is its file, for the problems."""
    problems: list[str] = []
    at = f"{where}:{func.lineno}"
    properties: dict[str, Any] = {}
    required: list[str] = []
    args = func.args
    positional = [*args.posonlyargs, *args.args]
    defaults: dict[str, ast.expr] = dict(zip([a.arg for a in positional][::-1], args.defaults[::-1], strict=False))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        if default is not None:
            defaults[arg.arg] = default
    if isinstance(func, ast.AsyncFunctionDef):
        problems.append(f"{at}: tool function {func.name}: an async function; a tool is a plain function")
    if args.vararg is not None or args.kwarg is not None:
        star = f"*{args.vararg.arg}" if args.vararg is not None else f"**{args.kwarg.arg}"
        problems.append(f"{at}: tool function {func.name}: {star}: a tool takes named arguments only")
    for arg in [*positional, *args.kwonlyargs]:
        if arg.annotation is None:
            problems.append(
                f"{at}: tool function {func.name}: argument {arg.arg!r} has no type hint "
                "(kit derives the JSON Schema of a tool's arguments from its type hints: e.g. `order_id: str`)"
            )
            continue
        try:
            schema = dict(annotation_schema(arg.annotation))
        except NoSchema as exc:
            problems.append(
                f"{at}: tool function {func.name}: argument {arg.arg!r}: the hint {exc} has no JSON Schema "
                "(use str, int, float, bool, list[...], dict[...], Literal[...], X | None)"
            )
            continue
        if arg.arg in defaults:
            ok, value = _literal(defaults[arg.arg])
            if ok and value is not None:
                schema["default"] = value
        else:
            required.append(arg.arg)
        properties[arg.arg] = schema
    parameters: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        parameters["required"] = required
    doc = ast.get_docstring(func) or ""
    description = doc.strip().split("\n\n")[0].replace("\n", " ").strip()
    return FunctionSchema(func.name, func.lineno, parameters, description, problems)


def find_function(path: Path, name: str) -> FunctionSchema | None:
    """The module-level function `name` of the Python file `path`, its schema derived; None when the file
    defines no such function. SyntaxError and OSError propagate for the caller to word."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return function_schema(node, str(path))
    return None
