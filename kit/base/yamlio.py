"""YAML that remembers where each value came from, so errors can name file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kit.errors import InvalidInput

Loc = tuple[Any, ...]


class Located:
    """A parsed YAML document plus the line of every mapping key and sequence item."""

    def __init__(self, path: Path, data: Any, lines: dict[Loc, int]):
        self.path = path
        self.data = data
        self.lines = lines

    def line(self, loc: Loc) -> int | None:
        """The line of `loc`, or of its nearest ancestor that has one."""
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), None)

    def where(self, loc: Loc = ()) -> str:
        line = self.line(loc)
        return f"{self.path}:{line}" if line else str(self.path)

    def error(self, loc: Loc, message: str) -> InvalidInput:
        field = ".".join(str(p) for p in loc)
        prefix = f"{self.where(loc)}: " + (f"{field}: " if field else "")
        return InvalidInput(prefix + message)


def _build(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> Any:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            child = loc + (key,)
            lines[child] = key_node.start_mark.line + 1
            if key in out:
                raise _DuplicateKey(child, key_node.start_mark.line + 1)
            out[key] = _build(value_node, child, lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, loc + (i,), lines) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


class _DuplicateKey(Exception):
    def __init__(self, loc: Loc, line: int):
        self.loc, self.line = loc, line


def load_yaml(path: str | Path, text: str | None = None) -> Located:
    """Parse `path` (or `text`, naming `path`) with line numbers; malformed YAML is an InvalidInput."""
    path = Path(path)
    if text is None:
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise InvalidInput(f"{path}: no such file") from None
        except OSError as exc:
            raise InvalidInput(f"{path}: cannot read: {exc.strerror}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        context = ""
        if exc.context and exc.context_mark and exc.problem:
            context = f" ({exc.context} at line {exc.context_mark.line + 1})"
        raise InvalidInput(f"{path}{line}: malformed YAML: {exc.problem or exc.context}{context}") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: malformed YAML: {exc}") from None
    lines: dict[Loc, int] = {}
    if node is None:
        return Located(path, None, lines)
    try:
        data = _build(node, (), lines)
    except _DuplicateKey as dup:
        raise InvalidInput(f"{path}:{dup.line}: duplicate key {dup.loc[-1]!r}") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: malformed YAML: {exc}") from None
    return Located(path, data, lines)


def validation_error(doc: Located, exc: Exception) -> InvalidInput:
    """Turn a pydantic ValidationError into one InvalidInput naming file, line and field."""
    problems = []
    for err in exc.errors():  # type: ignore[attr-defined]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        field = ".".join(str(p) for p in loc) or "(document)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        problems.append(f"{doc.where(loc)}: {field}: {msg}")
    return InvalidInput("\n".join(problems))


def load_mapping(path: str | Path, what: str = "settings") -> tuple[dict[str, Any], Located]:
    """A YAML file that must hold a mapping (or nothing): the mapping ({} when empty) and the
    located document, for errors that name lines. Anything else is an InvalidInput."""
    doc = load_yaml(path)
    if doc.data is None:
        return {}, doc
    if not isinstance(doc.data, dict):
        raise doc.error((), f"expected a mapping of {what}, found {type(doc.data).__name__}")
    return doc.data, doc
