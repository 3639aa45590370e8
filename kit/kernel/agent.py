"""Bounded agent steps: ``kit.llm.agent(messages, tools=[...], max_turns=N, budget={"tokens": T})``.

Inside a step a model may call tools until it answers or a limit is reached (DESIGN section 15). The
loop speaks the OpenAI-compatible chat completions API: the request carries ``tools`` (each a
function with the JSON Schema of its arguments), the reply's ``tool_calls`` are run, and their
results go back as ``role: tool`` messages with the call's ``tool_call_id``.

Outcomes
--------
`agent` returns an `AgentResult` whose ``stopped`` says why the loop ended:

``answer``     the model replied without calling a tool (``result.answer`` holds the text);
``max_turns``  ``max_turns`` model turns were used (the last turn's tool calls are not run);
``budget``     the tokens used reached ``budget["tokens"]`` (the last turn's tool calls are not run).

A tool that raises ends the loop with `ToolError` (`ToolTimeout` when it runs past its ``timeout``):
the step fails with it unless the notebook catches it. What the model gets wrong is told to the
model as the tool's result and the loop goes on (each costs a turn): a call to a tool the step does
not list (refused, recorded on its span), arguments that are not JSON or do not match the tool's
schema.

Tools
-----
Under kit the step's tools come from ``KIT_TOOLS`` (the coordinator sets it from the manifest's
``tools:`` and the step's list; JSON ``{name: {file, relative, function, parameters, description,
effects, timeout}}``); ``tools=[...]`` names some of them (or passes their functions) and anything
else is refused. Standalone (no kit run) the tools of ``workflow.yaml`` in the working directory are
used, and a function not declared there is described from its own type hints.

Traces, recordings, replay
--------------------------
Each model turn is an LLM call like `kit.llm.chat`'s (span ``chat`` of kind ``llm``, GenAI attributes,
spooled, recorded and keyed the same way), with ``kit.agent.turn``. Each tool call is a span named
after the tool, of kind ``tool`` (exported to OTLP as ``execute_tool NAME``): ``gen_ai.tool.name``,
``gen_ai.tool.call.id``, ``kit.tool.outcome`` (ok, refused, bad_arguments, error); the arguments
and result only by reference (the spooled call becomes an artifact, redacted like any LLM content,
named by ``kit.llm.content``, and ``kit.tool.result.sha256``). Both nest under one ``agent`` span.

A tool call is recorded beside the model turns, as a request of provider ``kit.tool``: model the
tool's name, one message ``{role: tool_call, id, content: ARGUMENTS}``, params ``{turn: KEY}`` (the
key of the model turn that asked for it). Its response is ``{result, content}`` (or ``{error}``). In
replay a tool marked ``effects: true`` is never run: its recorded result is served. A pure tool runs
again and must return what was recorded; a difference fails closed (`ToolReplayMismatch`, with a diff).
"""

from __future__ import annotations

import contextvars
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.kernel import api
from kit.kernel import calls as llm
from kit.kernel.providers import LLMError
from kit.kernel.recordings import RecordingError, canonical_request, load_recordings, request_key

__all__ = [
    "AgentError",
    "AgentResult",
    "ToolCall",
    "ToolError",
    "ToolReplayMismatch",
    "ToolTimeout",
    "agent",
]

TOOLS_ENV = "KIT_TOOLS"
TOOL_PROVIDER = "kit.tool"
DEFAULT_MAX_TURNS = 10
DEFAULT_TOOL_TIMEOUT = 30.0
STOPS = ("answer", "max_turns", "budget")


class AgentError(LLMError):
    """`kit.llm.agent` cannot go on: a tool the step may not use, a bad limit, a replay that differs."""


class ToolError(AgentError):
    """A tool raised (or could not run); the step fails with it unless the notebook catches it."""

    def __init__(self, message: str, tool: str, call_id: str):
        super().__init__(message)
        self.tool = tool
        self.call_id = call_id


class ToolTimeout(ToolError):
    """A tool ran past its timeout."""


class ToolReplayMismatch(AgentError):
    """In replay, a pure tool (``effects: false``) returned something other than what was recorded."""


@dataclass
class ToolCall:
    id: str
    name: str
    turn: int
    arguments: Any = None  # the parsed arguments (None when they were not JSON)
    result: Any = None
    outcome: str = "ok"  # ok, refused, bad_arguments
    executed: bool = False  # the function ran (False: refused, bad arguments, or served from a recording)
    replayed: bool = False  # the result came from a recording


@dataclass
class AgentResult:
    answer: str | None
    stopped: str  # one of STOPS
    turns: int
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)  # input_tokens, output_tokens, total_tokens
    messages: list[dict[str, Any]] = field(default_factory=list)  # the whole conversation

    @property
    def tokens(self) -> int:
        return self.usage.get("total_tokens", 0)


@dataclass
class _Tool:
    name: str
    parameters: dict[str, Any]
    description: str = ""
    effects: bool = False
    timeout: float = DEFAULT_TOOL_TIMEOUT
    function: Any = None  # the callable, once loaded
    source: dict[str, Any] | None = None  # where to load it from: {file, relative, function}

    def schema(self) -> dict[str, Any]:
        fn: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            fn["description"] = self.description
        return {"type": "function", "function": fn}

    def callable(self):
        if self.function is None:
            self.function = _load_function(self.name, self.source or {})
        return self.function


# --------------------------------------------------------------------------- which tools


def _where() -> str:
    step = os.environ.get(llm.STEP_ENV)
    return f"step {step!r}" if step else "this notebook"


def _declared() -> tuple[dict[str, dict], bool]:
    """The tools this step may use, and whether kit says so (a run) rather than workflow.yaml (standalone)."""
    raw = os.environ.get(TOOLS_ENV)
    if raw:
        try:
            found = json.loads(raw)
        except ValueError as exc:
            raise AgentError(f"kit.llm.agent: {TOOLS_ENV} is not valid JSON: {exc}") from None
        return found, True
    if api.running_under_kit():
        return {}, True
    return _standalone_tools(), False


def _standalone_tools() -> dict[str, dict]:
    """Outside kit: the tools `workflow.yaml` in the working directory declares (all of them usable)."""
    manifest = Path("workflow.yaml")
    if not manifest.is_file():
        return {}
    import yaml

    from kit.base.toolschema import find_function

    spec = yaml.safe_load(manifest.read_text()) or {}
    found = {}
    for name, tool in (spec.get("tools") or {}).items():
        file_name, _, function = str((tool or {}).get("function", "")).rpartition(":")
        path = Path(file_name).resolve()
        try:
            schema = find_function(path, function) if path.is_file() else None
        except SyntaxError:
            schema = None
        if schema is None or schema.problems:
            continue  # `kit validate` says what is wrong with it
        found[name] = {
            "file": str(path),
            "function": function,
            "parameters": schema.parameters,
            "description": tool.get("description") or schema.description,
            "effects": bool(tool.get("effects", False)),
            "timeout": float(tool.get("timeout") or DEFAULT_TOOL_TIMEOUT),
        }
    return found


def _from_declared(name: str, spec: dict) -> _Tool:
    return _Tool(
        name=name,
        parameters=spec.get("parameters") or {"type": "object", "properties": {}},
        description=spec.get("description") or "",
        effects=bool(spec.get("effects", False)),
        timeout=float(spec.get("timeout") or DEFAULT_TOOL_TIMEOUT),
        source=spec,
    )


def _described(fn: Any) -> _Tool:
    """A function kit was not told about (standalone only): described from its own type hints."""
    import ast
    import inspect
    import textwrap

    from kit.base.toolschema import function_schema

    try:
        source = textwrap.dedent(inspect.getsource(fn))
        node = ast.parse(source).body[0]
    except (OSError, TypeError, SyntaxError, IndexError):
        raise AgentError(f"kit.llm.agent: cannot read the source of tool {fn!r} to derive its arguments") from None
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise AgentError(f"kit.llm.agent: tool {fn!r} is not a function defined with `def`")
    schema = function_schema(node, inspect.getsourcefile(fn) or "<notebook>")
    if schema.problems:
        raise AgentError("kit.llm.agent: " + "; ".join(schema.problems))
    return _Tool(name=fn.__name__, parameters=schema.parameters, description=schema.description, function=fn)


def _resolve(tools: Any) -> dict[str, _Tool]:
    """The tools asked for, each one the step may use; anything else refused (`AgentError`)."""
    if callable(tools) or isinstance(tools, str):
        tools = [tools]
    declared, governed = _declared()
    allowed = ", ".join(sorted(declared)) or "none"
    resolved: dict[str, _Tool] = {}
    for item in tools or ():
        if isinstance(item, str):
            if item not in declared:
                why = (
                    f"{_where()} does not list it (the step's `tools:` in workflow.yaml; it may use: {allowed})"
                    if governed
                    else f"workflow.yaml in {os.getcwd()} declares no such tool (declared: {allowed})"
                )
                raise AgentError(f"kit.llm.agent: tool {item!r} refused: {why}")
            resolved[item] = _from_declared(item, declared[item])
        elif callable(item):
            name = getattr(item, "__name__", repr(item))
            match = next(
                (n for n, s in declared.items() if n == name or s.get("function") == name),
                None,
            )
            if match is not None:
                tool = _from_declared(match, declared[match])
                tool.function = item
                resolved[match] = tool
            elif governed:
                raise AgentError(
                    f"kit.llm.agent: tool {name!r} refused: {_where()} does not list it "
                    f"(the step's `tools:` in workflow.yaml; it may use: {allowed})"
                )
            else:
                resolved[name] = _described(item)
        else:
            raise AgentError(f"kit.llm.agent: tools= takes tool names or functions, got {item!r}")
    return resolved


def _load_function(name: str, source: dict):
    """The tool's function, imported from its file (the absolute path, else relative to the working directory)."""
    import importlib.util
    import sys

    path = Path(source.get("file") or "")
    if not path.is_file() and source.get("relative"):
        path = Path(source["relative"]).resolve()
    if not path.is_file():
        raise AgentError(f"kit.llm.agent: tool {name!r}: its file {source.get('file')} is missing")
    st = path.stat()  # a changed file is imported afresh (a warm kernel runs many steps)
    module_name = "kit_tools_" + request_key({"file": str(path), "stamp": [st.st_mtime_ns, st.st_size]})[:16]
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:
            del sys.modules[module_name]
            raise AgentError(
                f"kit.llm.agent: tool {name!r}: importing {path} failed: {type(exc).__name__}: {exc}"
            ) from exc
    fn = getattr(module, str(source.get("function")), None)
    if not callable(fn):
        raise AgentError(f"kit.llm.agent: tool {name!r}: {path} has no function {source.get('function')!r}")
    return fn


# --------------------------------------------------------------------------- the loop


def _check_limits(max_turns: Any, budget: Any) -> int | None:
    if isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1:
        raise AgentError(f"kit.llm.agent: max_turns must be a positive integer, got {max_turns!r}")
    if budget is None:
        return None
    if not isinstance(budget, dict) or set(budget) - {"tokens"}:
        raise AgentError(f"kit.llm.agent: budget must be {{'tokens': N}}, got {budget!r}")
    tokens = budget.get("tokens")
    if tokens is None:
        return None
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise AgentError(f"kit.llm.agent: budget['tokens'] must be a positive integer, got {tokens!r}")
    return tokens


def agent(
    messages: Any,
    tools: Any = (),
    max_turns: int = DEFAULT_MAX_TURNS,
    budget: dict[str, int] | None = None,
    model: str | None = None,
    **params: Any,
) -> AgentResult:
    """Let the model call `tools` until it answers, `max_turns` model turns are used, or the tokens used
    reach ``budget["tokens"]``. `params` are sampling parameters (``temperature``, ``tool_choice``, ...)."""
    token_budget = _check_limits(max_turns, budget)
    if "tools" in params:
        raise AgentError("kit.llm.agent: pass the tools as tools=[names or functions]")
    resolved = _resolve(tools)
    schemas = [t.schema() for t in resolved.values()]
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    history = [dict(m) for m in messages] if isinstance(messages, (list, tuple)) else messages
    mode = llm._mode()
    usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    calls: list[ToolCall] = []
    answer, stopped, turn = None, "max_turns", 0
    attrs = {
        "gen_ai.operation.name": "invoke_agent",
        "kit.agent.tools": sorted(resolved),
        "kit.agent.max_turns": max_turns,
        "kit.llm.mode": mode,
    }
    if token_budget is not None:
        attrs["kit.agent.budget.tokens"] = token_budget
    with api.span("agent", kind="agent", **attrs) as span:
        for turn in range(1, max_turns + 1):
            request_params = {**params, "tools": schemas or None}
            response, turn_key = llm.call_model(history, model, request_params, extra={"kit.agent.turn": turn})
            for name, value in llm.usage_of(response).items():
                usage[name] += value or 0
            message = _message(response)
            tool_calls = message.get("tool_calls") or []
            history.append(
                {
                    "role": "assistant",
                    "content": message.get("content"),
                    **({"tool_calls": tool_calls} if tool_calls else {}),
                }
            )
            if not tool_calls:
                answer, stopped = llm.response_text(response), "answer"
                break
            if token_budget is not None and usage["total_tokens"] >= token_budget:
                stopped = "budget"
                break
            if turn == max_turns:
                stopped = "max_turns"
                break
            for index, tool_call in enumerate(tool_calls):
                call, content = _tool_call(tool_call, index, turn, turn_key, resolved, mode)
                calls.append(call)
                history.append({"role": "tool", "tool_call_id": call.id, "content": content})
        span.update(
            {
                "kit.agent.stopped": stopped,
                "kit.agent.turns": turn,
                "kit.agent.tool_calls": len(calls),
                "gen_ai.usage.input_tokens": usage["input_tokens"],
                "gen_ai.usage.output_tokens": usage["output_tokens"],
            }
        )
    return AgentResult(answer, stopped, turn, calls, usage, history)


def _message(response: dict) -> dict:
    try:
        message = response["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        raise LLMError(f"kit.llm.agent: the response has no choices[0].message: {json.dumps(response)[:200]}") from None
    if not isinstance(message, dict):
        raise LLMError(f"kit.llm.agent: choices[0].message is not an object: {message!r:.200}")
    if message.get("tool_calls") is not None and not isinstance(message["tool_calls"], list):
        raise LLMError(f"kit.llm.agent: tool_calls is not a list: {message['tool_calls']!r:.200}")
    return message


def _as_content(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def _tool_call(
    tool_call: Any, index: int, turn: int, turn_key: str, tools: dict[str, _Tool], mode: str
) -> tuple[ToolCall, str]:
    """Run (or refuse, or serve) one of the model's tool calls: its record and the content the model reads."""
    fn = tool_call.get("function") if isinstance(tool_call, dict) else None
    fn = fn if isinstance(fn, dict) else {}
    call_id = str((tool_call.get("id") if isinstance(tool_call, dict) else None) or f"call_{turn}_{index + 1}")
    name = fn.get("name")
    name = name if isinstance(name, str) else ""
    call = ToolCall(id=call_id, name=name, turn=turn)
    attrs = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": name,
        "gen_ai.tool.call.id": call_id,
        "gen_ai.tool.type": "function",
        "kit.agent.turn": turn,
    }
    with api.span(name or "(no tool name)", kind="tool", **attrs) as span:
        tool = tools.get(name)
        if tool is None:
            call.outcome = "refused"
            known = ", ".join(sorted(tools)) or "none"
            content = f"error: there is no tool {name!r} for you to call here; the tools you may call: {known}"
            span.update({"kit.tool.outcome": "refused", "kit.tool.message": content})
            return call, content
        span["kit.tool.effects"] = tool.effects
        arguments, problem = _arguments(fn.get("arguments"), tool)
        call.arguments = arguments
        if problem:
            call.outcome = "bad_arguments"
            content = f"error: {problem}; call {name} again with a JSON object that matches its parameters"
            span["kit.tool.outcome"] = "bad_arguments"  # the arguments only by reference (the next turn's request)
            return call, content
        request = _tool_request(name, call_id, arguments, turn_key)
        key = request_key(request)
        span["kit.llm.key"] = key
        t0 = time.perf_counter()
        recorded = _recorded(request, key) if mode == "replay" else None
        try:
            if recorded is not None and tool.effects:
                call.replayed = True
                if "error" in recorded:
                    raise ToolError(
                        f"kit.llm.agent: tool {name!r} (call {call_id}, turn {turn}) failed when recorded: "
                        f"{recorded['error']} (replayed; a tool with effects is not run again)",
                        name,
                        call_id,
                    )
                result = recorded.get("result")
            else:
                result = _run(tool, arguments, call_id, turn)
                call.executed = True
                if recorded is not None:
                    _same_as_recorded(tool, call_id, turn, recorded, result)
                    call.replayed = True
        except ToolError as exc:
            _spool_tool(request, key, {"error": str(exc)}, mode, call, span, t0)
            span["kit.tool.outcome"] = "error"
            raise
        content = _as_content(result)
        call.result = result
        _spool_tool(request, key, {"result": result, "content": content}, mode, call, span, t0)
        span.update({"kit.tool.outcome": "ok", "kit.tool.executed": call.executed, "kit.tool.replayed": call.replayed})
        from kit.base.digests import digest

        span["kit.tool.result.sha256"] = digest({"result": result})
        return call, content


def _arguments(raw: Any, tool: _Tool) -> tuple[Any, str | None]:
    """The call's arguments, parsed and checked against the tool's schema, or what is wrong with them."""
    if raw is None or raw == "":
        arguments: Any = {}
    elif isinstance(raw, dict):
        arguments = raw
    elif isinstance(raw, str):
        try:
            arguments = json.loads(raw)
        except ValueError as exc:
            return None, f"the arguments of {tool.name} are not valid JSON ({exc}): {raw[:200]!r}"
    else:
        return None, f"the arguments of {tool.name} must be a JSON object, got {raw!r:.200}"
    if not isinstance(arguments, dict):
        return arguments, f"the arguments of {tool.name} must be a JSON object, got {json.dumps(arguments)[:200]}"
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(tool.parameters).iter_errors(arguments), key=lambda e: e.path)
    if errors:
        where = lambda e: "/".join(str(p) for p in e.path) or "arguments"  # noqa: E731
        return arguments, f"the arguments of {tool.name} do not match its parameters: " + "; ".join(
            f"{where(e)}: {e.message}" for e in errors[:5]
        )
    return arguments, None


def _tool_request(name: str, call_id: str, arguments: dict, turn_key: str) -> dict:
    """The tool call as a recording's request: keyed by the tool, the call, its arguments and its turn."""
    try:
        return canonical_request(
            TOOL_PROVIDER,
            name,
            [{"role": "tool_call", "id": call_id, "content": arguments}],
            {"turn": turn_key},
        )
    except RecordingError as exc:
        raise AgentError(str(exc)) from None


def _recorded(request: dict, key: str) -> dict:
    """The recorded response of a tool call in replay; a miss fails closed like a model turn's."""
    recordings = load_recordings(os.environ.get(llm.RECORDINGS_ENV))
    if key in recordings:
        return recordings[key]["response"]
    raise llm.ReplayMiss(llm._miss_message(request, key, recordings))


def _run(tool: _Tool, arguments: dict, call_id: str, turn: int) -> Any:
    """Call the tool in a thread of its own, bounded by its timeout; its result as a JSON value."""
    fn = tool.callable()
    box: dict[str, Any] = {}
    context = contextvars.copy_context()  # kit.span inside the tool nests under its span

    def target() -> None:
        try:
            box["value"] = context.run(fn, **arguments)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    what = f"tool {tool.name!r} (call {call_id}, turn {turn})"
    worker = threading.Thread(target=target, name=f"kit-tool-{tool.name}", daemon=True)
    worker.start()
    worker.join(tool.timeout)
    if worker.is_alive():
        raise ToolTimeout(
            f"kit.llm.agent: {what} did not return within its timeout of {tool.timeout:g}s "
            "(raise `timeout:` of the tool in workflow.yaml if it needs longer)",
            tool.name,
            call_id,
        )
    if "error" in box:
        exc = box["error"]
        raise ToolError(f"kit.llm.agent: {what} raised {type(exc).__name__}: {exc}", tool.name, call_id) from exc
    try:
        return json.loads(json.dumps(box.get("value"), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ToolError(
            f"kit.llm.agent: {what} returned {type(box.get('value')).__name__}, which is not a JSON value: {exc}",
            tool.name,
            call_id,
        ) from None


def _same_as_recorded(tool: _Tool, call_id: str, turn: int, recorded: dict, result: Any) -> None:
    """A pure tool in replay returns what it returned when recorded, or the replay fails closed."""
    if "error" in recorded:
        then = f"raised ({recorded['error']})"
    elif json.dumps(recorded.get("result"), sort_keys=True) == json.dumps(result, sort_keys=True):
        return
    else:
        then = None
    import difflib

    before = (
        [] if then else json.dumps(recorded.get("result"), indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    )
    after = json.dumps(result, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    diff = list(difflib.unified_diff(before, after, "recorded", "now", n=2, lineterm=""))[:40]
    raise ToolReplayMismatch(
        f"kit.llm.agent: replay in {_where()}: tool {tool.name!r} (call {call_id}, turn {turn}) is pure "
        f"(effects: false), so it ran again, and returned something other than what was recorded"
        + (f": when recorded it {then}" if then else "")
        + ". Fix the tool, or mark it `effects: true` if it reads a world that changes "
        "(- recorded, + now):\n" + "\n".join(diff)
    )


def _spool_tool(request: dict, key: str, response: dict, mode: str, call: ToolCall, span: dict, t0: float) -> None:
    """The tool call beside the model's calls in the spool: kit keeps it as an artifact and a recording."""
    call_uid = uuid.uuid4().hex
    latency_ms = round((time.perf_counter() - t0) * 1000, 3)
    span.update({"kit.llm.call_id": call_uid, "latency_ms": latency_ms})
    api.spool_record(
        llm.CALLS_FILE,
        {
            "call_id": call_uid,
            "key": key,
            "provider": TOOL_PROVIDER,
            "model": call.name,
            "mode": mode,
            "request": request,
            "response": response,
            "replayed": call.replayed and not call.executed,
            "latency_ms": latency_ms,
            "usage": {},
        },
    )
