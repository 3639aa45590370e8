"""Tools a model may call from an agent step (DESIGN section 15): declared in the manifest, checked here.

```yaml
tools:
  lookup_orders: {function: tools.py:lookup_orders, requires: [orders:read], effects: false, timeout: 10}
steps:
  investigate: {notebook: investigate.ipynb, tools: [lookup_orders], ...}
```

A tool's function lives in a Python file of the workflow's folder (so it is in the bundle); the JSON
Schema of its arguments is derived from its type hints (`kit.base.toolschema`), read from source: the
manifest is checked without running the tool's module. What the kernel needs of a step's tools
(`kernel_tools`) reaches it as ``KIT_TOOLS`` (JSON), read by `kit.kernel.agent`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.base.paths import OutsideRoot, inside
from kit.base.toolschema import find_function
from kit.kernel.agent import TOOLS_ENV

DEFAULT_TIMEOUT = 30.0


@dataclass
class Tool:
    name: str
    file: Path  # the tool's Python file, in the workflow's folder
    function: str
    parameters: dict[str, Any]  # JSON Schema of the arguments
    description: str
    requires: list[str]
    effects: bool
    timeout: float
    line: int  # of the function in its file

    def for_kernel(self, workdir: Path) -> dict[str, Any]:
        return {
            "file": str(self.file),
            "relative": os.path.relpath(self.file, workdir),  # for an executor that moves the bundle
            "function": self.function,
            "parameters": self.parameters,
            "description": self.description,
            "effects": self.effects,
            "timeout": self.timeout,
        }


def check_tools(folder: Path, spec: Any, problem) -> dict[str, Tool]:
    """The workflow's declared tools (`spec.tools`), each function found and its schema derived; what is
    wrong goes to `problem(loc, message)` (the manifest's file and line; a missing hint names the tool's)."""
    tools: dict[str, Tool] = {}
    for name, tool in (spec.tools or {}).items():
        loc = ("tools", name)
        if not name.isidentifier():
            problem(loc, f"tool name {name!r} is not a valid identifier (models call tools by name)")
            continue
        file_name, sep, function = tool.function.rpartition(":")
        if not sep or not file_name.endswith(".py") or not function.isidentifier():
            problem(loc + ("function",), f"expected FILE.py:FUNCTION (e.g. tools.py:{name}), found {tool.function!r}")
            continue
        try:
            path = inside(folder, file_name)
        except OutsideRoot as exc:
            problem(loc + ("function",), f"{exc}: a tool's file lives in the workflow's folder")
            continue
        if not path.is_file():
            problem(loc + ("function",), f"no such file: {path}")
            continue
        try:
            found = find_function(path, function)
        except SyntaxError as exc:
            problem(loc + ("function",), f"{path}:{exc.lineno}: not valid Python: {exc.msg}")
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problem(loc + ("function",), f"cannot read {path}: {exc}")
            continue
        if found is None:
            problem(loc + ("function",), f"{path} defines no function {function!r} (at module level)")
            continue
        for message in found.problems:
            problem(loc + ("function",), message)
        if found.problems:
            continue
        tools[name] = Tool(
            name=name,
            file=path,
            function=function,
            parameters=found.parameters,
            description=tool.description or found.description,
            requires=list(tool.requires),
            effects=tool.effects,
            timeout=float(tool.timeout if tool.timeout is not None else DEFAULT_TIMEOUT),
            line=found.line,
        )
    return tools


def step_tools(step_id: str, listed: list[str], declared: dict[str, Tool], known: set[str], problem) -> dict[str, Tool]:
    """The tools a step lists, each declared (`known`: the names declared, usable or not)."""
    out: dict[str, Tool] = {}
    for index, name in enumerate(listed):
        if name in declared:
            out[name] = declared[name]
        elif name not in known:
            names = ", ".join(sorted(known)) or "none: declare tools under `tools:` at the workflow's level"
            problem(("steps", step_id, "tools", index), f"no tool {name!r} is declared (declared tools: {names})")
    return out


def missing_for_tools(step, missing_of) -> dict[str, list[str]]:
    """Per tool the step lists: the entitlements `missing_of(requires)` finds missing (only tools missing some)."""
    out = {}
    for name, tool in (getattr(step, "tools", None) or {}).items():
        missing = missing_of(tool.requires)
        if missing:
            out[name] = missing
    return out


def kernel_tools(step, workdir: Path) -> dict[str, str]:
    """The kernel environment that hands a step its tools (nothing for a step without)."""
    tools = getattr(step, "tools", None) or {}
    if not tools:
        return {}
    return {TOOLS_ENV: json.dumps({n: t.for_kernel(workdir) for n, t in sorted(tools.items())}, sort_keys=True)}
