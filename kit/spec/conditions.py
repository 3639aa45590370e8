"""`when:` on a step: a CEL condition over `params` and upstream outputs (DESIGN section 15).

``compile_condition`` parses the text with cel-python (`celpy`), then type-checks its
parse tree against the declared types of the workflow's parameters and of the
upstream steps' outputs; ``Condition.evaluate`` runs it with celpy on the run's values
and says which values it saw, for the reason a skipped step records.

celpy evaluates CEL but ships no static checker, so the checker here covers a subset,
and refuses the rest by name (the README lists it):

- literals: integers, doubles, strings, true, false, null, lists ``[a, b]``;
- names: ``params.NAME``, ``STEP.OUTPUT`` (STEP upstream of the step, directly or not), field
  selection into an object output (``risk.detail.level``) and indexing (``xs[0]``, ``m['k']``);
- ``&& || !``, the ternary ``c ? a : b``, comparisons ``== != < <= > >=``, ``in`` (a list or
  an object's keys), arithmetic ``+ - * / %``, unary ``-``;
- functions ``has(x.f)``, ``size(x)``, ``int(x)``, ``double(x)``, ``string(x)`` and the string
  methods ``startsWith``, ``endsWith``, ``contains``, ``matches``.

Types come from the manifest: ``string``, ``number`` (a CEL double), ``integer`` (a CEL int),
``boolean``, ``object`` (its ``properties``, when a JSON Schema declares them, are its
fields), ``array``; anything undeclared is dynamic and checked only when the condition
runs. An int meeting a double (``params.amount > 100`` with ``amount: number``) is
promoted to a double, as a user expects; CEL itself would refuse the mix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kit.spec import contracts

SUPPORTED = (
    "literals, params.NAME, STEP.OUTPUT[.field...], [index], && || ! ?:, == != < <= > >= in, + - * / %, "
    "has(), size(), int(), double(), string(), .startsWith() .endsWith() .contains() .matches()"
)

# the rules celpy's grammar nests from loosest to tightest: a subtree of one can stand for any above it
_CHAIN = ("expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication", "unary", "member")
_NUMERIC = ("int", "double")
_JSON_KINDS = {
    "string": "string",
    "number": "double",
    "integer": "int",
    "boolean": "bool",
    "object": "map",
    "array": "list",
    "null": "null",
    "table": "table",
}
_NAMES = {
    "string": "string",
    "double": "number",
    "int": "integer",
    "bool": "boolean",
    "map": "object",
    "list": "array",
    "null": "null",
    "table": "table",
}
_METHODS = ("startsWith", "endsWith", "contains", "matches")


class ConditionError(ValueError):
    """A condition that does not parse or type-check; the message says what was expected and found."""


class ConditionFailed(Exception):
    """A condition that could not be evaluated on the run's values (a dynamic type, a missing field)."""


@dataclass
class CelType:
    """The static type of a subexpression: a kind, and for objects and arrays what they hold."""

    kind: str  # string double int bool map list null table dyn
    fields: dict[str, CelType] | None = None  # map: its known fields (None: unknown)
    closed: bool = False  # map: only `fields` exist (a JSON Schema with properties, a step's outputs, params)
    item: CelType | None = None  # list: its items' type
    path: tuple[str, ...] | None = None  # a name the value came from: ("risk", "score")
    what: str = "field"  # what a missing field of this map is called: output, parameter, field

    @property
    def name(self) -> str:
        return "dynamic" if self.kind == "dyn" else _NAMES.get(self.kind, self.kind)

    def bare(self) -> CelType:
        return CelType(self.kind, self.fields, self.closed, self.item, None, self.what)


DYN = CelType("dyn")


def type_of_spec(spec: Any) -> CelType:
    """The CEL type of a declared type: a manifest type name, a JSON Schema, or None (dynamic)."""
    if spec is None:
        return DYN
    if contracts.is_table(spec):
        return CelType("table")
    if isinstance(spec, str):
        return CelType(_JSON_KINDS.get(spec, "dyn"))
    if not isinstance(spec, Mapping):
        return DYN
    declared = spec.get("type")
    if isinstance(declared, list):
        kinds = {_JSON_KINDS.get(t, "dyn") for t in declared}
        declared = declared[0] if len(kinds) == 1 else ("number" if kinds <= set(_NUMERIC) else None)
    if declared is None and "properties" in spec:
        declared = "object"
    if declared is None and isinstance(spec.get("enum"), list) and spec["enum"]:
        if all(isinstance(v, str) for v in spec["enum"]):
            declared = "string"
    if declared == "object":
        properties = spec.get("properties")
        if isinstance(properties, Mapping):
            fields = {str(k): type_of_spec(v) for k, v in properties.items()}
            for name in spec.get("required") or []:
                fields.setdefault(str(name), DYN)
            return CelType("map", fields, closed=True)
        return CelType("map")
    if declared == "array":
        items = spec.get("items")
        return CelType("list", item=type_of_spec(items) if isinstance(items, Mapping) else DYN)
    return CelType(_JSON_KINDS.get(declared, "dyn")) if isinstance(declared, str) else DYN


@dataclass
class Scope:
    """The names a step's condition may use."""

    step: str  # the step the condition is on
    params: dict[str, Any]  # parameter -> its declared type ({"type": ...}, or None)
    upstream: dict[str, dict[str, Any]]  # step upstream of `step` -> its outputs' declared types
    others: list[str] = field(default_factory=list)  # the workflow's other steps (not upstream)


def _environment():
    import celpy

    global _ENV
    if _ENV is None:
        _ENV = celpy.Environment()
    return _ENV


_ENV = None


def compile_condition(text: str, scope: Scope) -> Condition:
    """Parse and type-check `text` in `scope`; ConditionError says what is wrong."""
    from celpy import CELParseError

    if not isinstance(text, str) or not text.strip():
        raise ConditionError('expected a CEL expression, e.g. "risk.score >= 0.7 && params.amount > 100"')
    try:
        tree = _environment().compile(text)
    except CELParseError as exc:
        column = getattr(exc, "column", None)
        at = f" (it stops at column {column}: {text[column - 1 :]!r})" if column else ""
        raise ConditionError(f"{text!r} does not parse as CEL{at}") from None
    checker = _Checker(scope)
    result = checker.use(tree)
    if result.kind not in ("bool", "dyn"):
        raise ConditionError(f"a when: must be a boolean, found {result.name}")
    return Condition(text=text, tree=tree, paths=checker.paths, types=checker.roots)


class _Checker:
    def __init__(self, scope: Scope):
        self.scope = scope
        self.paths: list[tuple[str, ...]] = []  # every name the condition reads, in order
        self.roots: dict[str, CelType] = {}  # each root name used -> its type (for converting values)

    # ---- walking --------------------------------------------------------------------------

    def use(self, node) -> CelType:
        """A subexpression whose value is used: a name it reads is remembered for the skip reason."""
        t = self.check(node)
        if t.path is not None and t.path not in self.paths:
            self.paths.append(t.path)
        return t

    def check(self, node) -> CelType:
        from lark import Token

        if isinstance(node, Token):
            raise ConditionError(f"unexpected token {node!r}")
        rule = str(node.data)
        handler = getattr(self, f"_{rule}", None)
        if handler is None:
            raise ConditionError(f"{_describe(rule)} is not supported in a when: (supported: {SUPPORTED})")
        return handler(node)

    # ---- logic ------------------------------------------------------------------------------

    def _expr(self, node) -> CelType:
        if len(node.children) == 1:
            return self.check(node.children[0])
        cond, yes, no = (self.use(c) for c in node.children)
        self._want_bool(cond, "?:")
        return self._unify(yes, no, "the two branches of ?:")

    def _conditionalor(self, node) -> CelType:
        return self._logic(node, "||")

    def _conditionaland(self, node) -> CelType:
        return self._logic(node, "&&")

    def _logic(self, node, op: str) -> CelType:
        if len(node.children) == 1:
            return self.check(node.children[0])
        left, right = (self.use(c) for c in node.children)
        for t in (left, right):
            if t.kind not in ("bool", "dyn"):
                raise ConditionError(f"{op} expects boolean operands, found {t.name}")
        return CelType("bool")

    def _unary(self, node) -> CelType:
        if len(node.children) == 1:
            return self.check(node.children[0])
        op, operand = node.children
        t = self.use(operand)
        if op.data == "unary_not":
            if t.kind not in ("bool", "dyn"):
                raise ConditionError(f"! expects a boolean, found {t.name}")
            return CelType("bool")
        if t.kind not in (*_NUMERIC, "dyn"):
            raise ConditionError(f"unary - expects a number, found {t.name}")
        return t.bare()

    # ---- comparisons and arithmetic ---------------------------------------------------------

    def _relation(self, node) -> CelType:
        if len(node.children) == 1:
            return self.check(node.children[0])
        op_node, right_node = node.children
        op = str(op_node.data).removeprefix("relation_")
        left, right = self.use(op_node.children[0]), self.use(right_node)
        symbol = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!=", "in": "in"}[op]
        if op == "in":
            if right.kind == "list":
                item = right.item or DYN
                if not _comparable(left, item, equality=True):
                    raise ConditionError(f"in: cannot look for {left.name} in a list of {item.name}")
            elif right.kind == "map":
                if left.kind not in ("string", "dyn"):
                    raise ConditionError(f"in: an object's keys are strings, found {left.name}")
            elif right.kind != "dyn":
                raise ConditionError(f"in expects a list or an object on its right, found {right.name}")
            return CelType("bool")
        if not _comparable(left, right, equality=op in ("eq", "ne")):
            raise ConditionError(f"{symbol}: cannot compare {left.name} with {right.name}")
        self._promote(op_node, 0, left, node, 1, right)
        return CelType("bool")

    def _addition(self, node) -> CelType:
        return self._arithmetic(node, {"add": "+", "sub": "-"})

    def _multiplication(self, node) -> CelType:
        return self._arithmetic(node, {"mul": "*", "div": "/", "mod": "%"})

    def _arithmetic(self, node, symbols: dict[str, str]) -> CelType:
        if len(node.children) == 1:
            return self.check(node.children[0])
        op_node, right_node = node.children
        op = str(op_node.data).split("_", 1)[1]
        left, right = self.use(op_node.children[0]), self.use(right_node)
        symbol = symbols[op]
        if "dyn" in (left.kind, right.kind):
            return DYN
        if op == "add" and left.kind == right.kind and left.kind in ("string", "list"):
            return left.bare()
        if left.kind not in _NUMERIC or right.kind not in _NUMERIC:
            raise ConditionError(f"{symbol} expects numbers, found {left.name} and {right.name}")
        if op == "mod" and "double" in (left.kind, right.kind):
            raise ConditionError("% expects integers, found a number")
        return self._promote(op_node, 0, left, node, 1, right)

    def _promote(self, lparent, li: int, left: CelType, rparent, ri: int, right: CelType) -> CelType:
        """An int meeting a double becomes a double (`double(...)` around it in the tree)."""
        if left.kind == "int" and right.kind == "double":
            lparent.children[li] = _as_double(lparent.children[li])
        elif left.kind == "double" and right.kind == "int":
            rparent.children[ri] = _as_double(rparent.children[ri])
        kinds = {left.kind, right.kind}
        return CelType("double" if "double" in kinds else "int") if kinds <= set(_NUMERIC) else CelType("bool")

    # ---- names, fields, calls ---------------------------------------------------------------

    def _member(self, node) -> CelType:
        return self.check(node.children[0])

    def _primary(self, node) -> CelType:
        return self.check(node.children[0])

    def _paren_expr(self, node) -> CelType:
        return self.check(node.children[0])

    def _ident(self, node) -> CelType:
        name = str(node.children[0])
        scope = self.scope
        if name == "params":
            fields = {p: type_of_spec(spec) for p, spec in scope.params.items()}
            t = CelType("map", fields, closed=True, path=("params",), what="parameter")
        elif name in scope.upstream:
            fields = {o: type_of_spec(spec) for o, spec in scope.upstream[name].items()}
            t = CelType("map", fields, closed=True, path=(name,), what="output")
        elif name == scope.step:
            raise ConditionError(f"a step's when: cannot read its own outputs ({name})")
        elif name in scope.others:
            raise ConditionError(
                f"{name} is not upstream of {scope.step}: a when: reads the outputs of the steps it depends on, "
                f"directly or not (wire an input from {name} or add it to `after`)"
            )
        else:
            known = ", ".join(["params", *scope.upstream])
            raise ConditionError(f"unknown name {name!r} (names here: {known})")
        self.roots[name] = t.bare()
        return t

    def _member_dot(self, node) -> CelType:
        inner, name = node.children
        base = self.check(inner)
        return self._select(base, str(name))

    def _select(self, base: CelType, name: str) -> CelType:
        if base.kind == "dyn":
            return CelType("dyn", path=base.path + (name,) if base.path else None)
        if base.kind == "table":
            raise ConditionError(f"{_dotted(base.path)} is a table: a when: reads JSON outputs only")
        if base.kind != "map":
            raise ConditionError(f".{name}: field selection needs an object, found {base.name}")
        path = base.path + (name,) if base.path else None
        if base.fields is not None and name in base.fields:
            t = base.fields[name]
        elif base.closed:
            known = ", ".join(base.fields or {}) or "none"
            if base.what == "output":
                raise ConditionError(f"step {base.path[0]} has no output {name!r} (its outputs: {known})")
            if base.what == "parameter":
                raise ConditionError(f"the workflow has no parameter {name!r} (parameters: {known})")
            where = f" in {_dotted(base.path)}" if base.path else ""
            raise ConditionError(f"no field {name!r}{where} (its fields: {known})")
        else:
            t = DYN
        if t.kind == "table":
            raise ConditionError(f"{_dotted(path)} is a table: a when: reads JSON outputs only")
        return CelType(t.kind, t.fields, t.closed, t.item, path)

    def _member_index(self, node) -> CelType:
        inner, index = node.children
        base, key = self.use(inner), self.use(index)
        if base.kind == "list":
            if key.kind not in ("int", "dyn"):
                raise ConditionError(f"[]: a list's index is an integer, found {key.name}")
            return (base.item or DYN).bare()
        if base.kind == "map":
            if key.kind not in ("string", "dyn"):
                raise ConditionError(f"[]: an object's key is a string, found {key.name}")
            return DYN
        if base.kind == "dyn":
            return DYN
        raise ConditionError(f"[]: indexing needs a list or an object, found {base.name}")

    def _ident_arg(self, node) -> CelType:
        name = str(node.children[0])
        args = list(node.children[1].children) if len(node.children) > 1 and node.children[1] is not None else []
        if name == "has":
            if len(args) != 1 or _field_selection(args[0]) is None:
                raise ConditionError("has() takes one field selection, e.g. has(risk.detail.level)")
            inner, last = _field_selection(args[0])
            base = self.check(inner)
            if base.kind == "map" and base.closed and base.what == "field":
                self._select(base, last)  # a field the schema does not know is a typo
            elif base.kind not in ("map", "dyn"):
                raise ConditionError(f"has(): field selection needs an object, found {base.name}")
            return CelType("bool")
        if name in ("size", "int", "double", "string"):
            if len(args) != 1:
                raise ConditionError(f"{name}() takes one argument, found {len(args)}")
            t = self.use(args[0])
            if name == "size":
                if t.kind not in ("string", "list", "map", "dyn"):
                    raise ConditionError(f"size() expects a string, an array or an object, found {t.name}")
                return CelType("int")
            if t.kind not in ("string", "int", "double", "bool", "dyn") or (t.kind == "bool" and name != "string"):
                raise ConditionError(f"{name}() cannot convert {t.name}")
            return CelType(name)
        raise ConditionError(f"the function {name}() is not supported in a when: (supported: {SUPPORTED})")

    def _member_dot_arg(self, node) -> CelType:
        inner, name = node.children[0], str(node.children[1])
        args = list(node.children[2].children) if len(node.children) > 2 and node.children[2] is not None else []
        if name not in _METHODS:
            raise ConditionError(f"the method .{name}() is not supported in a when: (supported: {SUPPORTED})")
        receiver = self.use(inner)
        if receiver.kind not in ("string", "dyn"):
            raise ConditionError(f".{name}() expects a string, found {receiver.name}")
        if len(args) != 1:
            raise ConditionError(f".{name}() takes one argument, found {len(args)}")
        arg = self.use(args[0])
        if arg.kind not in ("string", "dyn"):
            raise ConditionError(f".{name}() expects a string argument, found {arg.name}")
        return CelType("bool")

    def _literal(self, node) -> CelType:
        token = node.children[0]
        kind = {
            "INT_LIT": "int",
            "UINT_LIT": "int",
            "FLOAT_LIT": "double",
            "STRING_LIT": "string",
            "MLSTRING_LIT": "string",
            "BOOL_LIT": "bool",
            "NULL_LIT": "null",
        }.get(token.type)
        if kind is None:
            raise ConditionError(f"{_describe(token.type)} is not supported in a when: (supported: {SUPPORTED})")
        return CelType(kind)

    def _list_lit(self, node) -> CelType:
        items = [self.use(c) for c in (node.children[0].children if node.children and node.children[0] else [])]
        item = DYN
        for t in items:
            item = t if item is DYN else self._unify(item, t, "a list's items")
        return CelType("list", item=item.bare() if items else DYN)

    # ---- helpers -----------------------------------------------------------------------------

    def _want_bool(self, t: CelType, op: str) -> None:
        if t.kind not in ("bool", "dyn"):
            raise ConditionError(f"{op} expects a boolean condition, found {t.name}")

    @staticmethod
    def _unify(a: CelType, b: CelType, what: str) -> CelType:
        if a.kind == "dyn" or b.kind == "dyn" or a.kind == "null" or b.kind == "null":
            return DYN
        if a.kind == b.kind:
            return a.bare()
        if {a.kind, b.kind} <= set(_NUMERIC):
            return DYN  # celpy keeps them apart at run time; compare such values with care
        raise ConditionError(f"{what} mix {a.name} and {b.name}")


def _comparable(a: CelType, b: CelType, equality: bool) -> bool:
    if "dyn" in (a.kind, b.kind):
        return True
    if a.kind in _NUMERIC and b.kind in _NUMERIC:
        return True
    if equality and "null" in (a.kind, b.kind):
        return True
    if a.kind != b.kind:
        return False
    return equality or a.kind in ("string", "bool")


def _field_selection(node) -> tuple[Any, str] | None:
    """(the member, the field) when `node` is only a field selection `a.b.c`, else None."""
    while len(node.children) == 1 and str(node.data) in (*_CHAIN, "primary"):
        node = node.children[0]
        if str(node.data) == "member_dot":
            return node.children[0], str(node.children[1])
    return None


def _as_double(node):
    """`double(node)` in celpy's tree, as a node of the same rule as `node`."""
    from lark import Token, Tree

    rule = str(node.data)
    level = _CHAIN.index(rule)
    inner = node
    for r in reversed(_CHAIN[:level]):
        inner = Tree(r, [inner])
    call = Tree("primary", [Tree("ident_arg", [Token("IDENT", "double"), Tree("exprlist", [inner])])])
    out = Tree("member", [call])
    for r in reversed(_CHAIN[level:-1]):
        out = Tree(r, [out])
    return out


def _dotted(path: tuple[str, ...] | None) -> str:
    return ".".join(path) if path else "it"


def _describe(rule: str) -> str:
    return {
        "member_object": "a message literal (Name{...})",
        "map_lit": "a map literal {...}",
        "dot_ident": "a leading-dot name",
        "dot_ident_arg": "a leading-dot call",
        "BYTES_LIT": "a bytes literal",
    }.get(rule, rule)


def render(value: Any) -> str:
    """A value as a reason shows it: strings quoted as in CEL, the rest as JSON."""
    from kit.base.display import brief

    if isinstance(value, str):
        return repr(value)
    return brief(value, 80)


ABSENT = object()


def lookup(root: Any, path: tuple[str, ...]) -> Any:
    """The value at `path` under `root` (a mapping of names), or ABSENT."""
    value = root
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return ABSENT
        value = value[part]
    return value


@dataclass
class Condition:
    """A checked `when:`: its text, its (promoted) parse tree, the names it reads and their types."""

    text: str
    tree: Any
    paths: list[tuple[str, ...]]
    types: dict[str, CelType]

    @property
    def steps(self) -> list[str]:
        """The upstream steps whose outputs the condition reads."""
        return [name for name in self.types if name != "params"]

    def evaluate(self, names: Mapping[str, Any]) -> tuple[bool, list[tuple[str, Any]]]:
        """Run the condition on `names` (``params`` and each upstream step's outputs, as JSON values):
        its verdict and the values it saw, as ("risk.score", 0.2) pairs. ConditionFailed when it
        cannot be evaluated (a dynamic value of the wrong type, a missing field, a division by zero)."""
        import celpy

        seen = [(".".join(p), lookup(names, p)) for p in self.paths]
        activation = {n: celpy.json_to_cel(_convert(names.get(n), t)) for n, t in self.types.items()}
        try:
            program = _environment().program(self.tree)
            result = program.evaluate(activation)
        except celpy.CELEvalError as exc:
            raise ConditionFailed(f"when {self.text}: {_eval_message(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - celpy raises what Python does underneath
            raise ConditionFailed(f"when {self.text}: {type(exc).__name__}: {exc}") from None
        if isinstance(result, celpy.CELEvalError):
            raise ConditionFailed(f"when {self.text}: {_eval_message(result)}")
        if not isinstance(result, celpy.celtypes.BoolType):
            raise ConditionFailed(f"when {self.text}: expected a boolean, found {type(result).__name__}: {result!r}")
        return bool(result), seen

    def reason(self, seen: list[tuple[str, Any]], shown: Callable[[str, Any], str] | None = None) -> str:
        """Why a step was skipped: ``when EXPR was false: name=value, ...``; `shown(name, value)` renders a
        value (the coordinator's redacts secrets)."""
        shown = shown or (lambda _name, value: render(value))
        values = ", ".join(f"{name}={'<absent>' if v is ABSENT else shown(name, v)}" for name, v in seen)
        return f"when {self.text} was false" + (f": {values}" if values else "")


def _eval_message(exc: Exception) -> str:
    args = getattr(exc, "args", ())
    text = str(args[0]) if args else str(exc)
    return text.replace("Token('RULE', ", "").replace("')", "'")


def _convert(value: Any, t: CelType) -> Any:
    """A JSON value shaped for its declared type: an integral value of a `number` is a CEL double."""
    if value is None:
        return None
    if t.kind == "double" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if t.kind == "map" and isinstance(value, dict) and t.fields:
        return {k: _convert(v, t.fields[k]) if k in t.fields else v for k, v in value.items()}
    if t.kind == "list" and isinstance(value, list) and t.item is not None:
        return [_convert(v, t.item) for v in value]
    return value
