"""Bounded agent steps: kit.llm.agent, tools in the manifest, entitlements, traces, recordings and replay.

The loop itself is tested in-process (a spool, KIT_TOOLS as the coordinator sets it, the fake provider's
script or the local OpenAI-compatible server); the whole path (manifest, coordinator, kernel, ledger,
capture, replay) with real kernels through `kit`.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from llm_server import LLMServer, llm_server  # noqa: F401 - the fixture

from kit import llm
from kit.base.jsonl import read_jsonl
from kit.kernel import agent as agent_mod
from kit.kernel import providers
from kit.kernel.agent import AgentError, ToolError, ToolReplayMismatch, ToolTimeout
from kit.kernel.recordings import write_recordings

TOOLS_PY = '''
import json, os, time
from pathlib import Path
from typing import Literal


def lookup_orders(customer: str, limit: int = 5) -> list:
    """The customer's recent orders."""
    counter = os.environ.get("AGENT_PURE_LOG")
    if counter:
        with open(counter, "a") as fh:
            fh.write(customer + "\\n")
    orders = [{"id": "O-1", "customer": customer, "amount": 40}, {"id": "O-2", "customer": customer, "amount": 25}]
    return orders[:limit]


def send_note(text: str, priority: Literal["low", "high"] = "low") -> dict:
    """Send a note to the reviewer (a side effect)."""
    with open(os.environ["AGENT_EFFECTS_LOG"], "a") as fh:
        fh.write(json.dumps({"text": text, "priority": priority}) + "\\n")
    return {"sent": True, "chars": len(text)}


def explode(reason: str) -> str:
    raise ValueError("the knowledge base is down: " + reason)


def sleepy(seconds: float) -> str:
    time.sleep(seconds)
    return "awake"
'''


def declared(folder: Path, **overrides) -> dict:
    """KIT_TOOLS as the coordinator would set it for a step listing every tool of TOOLS_PY."""
    schemas = {
        "lookup_orders": {
            "type": "object",
            "properties": {"customer": {"type": "string"}, "limit": {"type": "integer", "default": 5}},
            "required": ["customer"],
            "additionalProperties": False,
        },
        "send_note": {
            "type": "object",
            "properties": {"text": {"type": "string"}, "priority": {"enum": ["low", "high"], "default": "low"}},
            "required": ["text"],
            "additionalProperties": False,
        },
        "explode": {
            "type": "object",
            "properties": {"reason": {"type": "string"}},
            "required": ["reason"],
            "additionalProperties": False,
        },
        "sleepy": {
            "type": "object",
            "properties": {"seconds": {"type": "number"}},
            "required": ["seconds"],
            "additionalProperties": False,
        },
    }
    out = {}
    for name, schema in schemas.items():
        out[name] = {
            "file": str(folder / "tools.py"),
            "relative": "tools.py",
            "function": name,
            "parameters": schema,
            "description": "",
            "effects": name == "send_note",
            "timeout": 5.0,
        }
        out[name].update(overrides.get(name, {}))
    return out


@pytest.fixture
def kernel(tmp_path, monkeypatch) -> Path:
    """A kernel's view under kit: a spool, the step's tools, a clean LLM environment. Returns the spool."""
    for name in ("KIT_LLM_CONFIG", "KIT_LLM_MODE", "KIT_LLM_RECORDINGS", "KIT_STEP", "KIT_TOOLS"):
        monkeypatch.delenv(name, raising=False)
    work = tmp_path / "wf"
    work.mkdir()
    (work / "tools.py").write_text(TOOLS_PY)
    monkeypatch.chdir(work)
    monkeypatch.setenv("KIT_SPOOL", str(tmp_path / "spool"))
    monkeypatch.setenv("KIT_STEP", "investigate")
    monkeypatch.setenv("KIT_TOOLS", json.dumps(declared(work)))
    monkeypatch.setenv("AGENT_EFFECTS_LOG", str(tmp_path / "effects.log"))
    monkeypatch.setenv("AGENT_PURE_LOG", str(tmp_path / "pure.log"))
    return tmp_path / "spool"


def script(monkeypatch, *turns) -> None:
    monkeypatch.setenv("KIT_LLM_CONFIG", json.dumps({"provider": "fake", "model": "fake", "script": list(turns)}))


def spans(spool: Path) -> list[dict]:
    return read_jsonl(spool / "spans.jsonl")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


ASK = [{"role": "user", "content": "Draft a case note for customer C-7."}]


# --------------------------------------------------------------------------- the loop, offline


def test_the_fake_provider_scripts_tool_calls_and_the_loop_answers(kernel, monkeypatch, tmp_path):
    script(
        monkeypatch,
        {"tool_calls": [{"name": "lookup_orders", "arguments": {"customer": "C-7"}}]},
        {"tool_calls": [{"name": "send_note", "arguments": {"text": "two orders"}}]},
        {"content": "C-7 has two orders; the reviewer was told."},
    )
    result = llm.agent(ASK, tools=["lookup_orders", "send_note"], max_turns=5)
    assert result.stopped == "answer" and result.turns == 3
    assert result.answer == "C-7 has two orders; the reviewer was told."
    assert [(c.name, c.id, c.outcome, c.executed) for c in result.tool_calls] == [
        ("lookup_orders", "call_1_1", "ok", True),
        ("send_note", "call_2_1", "ok", True),
    ]
    assert result.tool_calls[0].result[0]["id"] == "O-1"
    assert result.tokens == result.usage["input_tokens"] + result.usage["output_tokens"] > 0
    # the conversation: the tool results went back as role: tool messages with their call ids
    tool_messages = [m for m in result.messages if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["call_1_1", "call_2_1"]
    assert json.loads(tool_messages[1]["content"]) == {"sent": True, "chars": 10}
    assert lines(tmp_path / "effects.log") == ['{"text": "two orders", "priority": "low"}']

    found = spans(kernel)
    (agent_span,) = [s for s in found if s["kind"] == "agent"]
    turns = [s for s in found if s["kind"] == "llm"]
    tools = [s for s in found if s["kind"] == "tool"]
    assert len(turns) == 3 and len(tools) == 2
    assert all(s["parent_id"] == agent_span["span_id"] for s in turns + tools)
    assert [t["attributes"]["kit.agent.turn"] for t in turns] == [1, 2, 3]
    assert turns[0]["attributes"]["gen_ai.response.finish_reasons"] == ["tool_calls"]
    a = tools[0]["attributes"]
    assert tools[0]["name"] == "lookup_orders"
    assert a["gen_ai.tool.name"] == "lookup_orders" and a["gen_ai.tool.call.id"] == "call_1_1"
    assert a["kit.tool.outcome"] == "ok" and a["kit.tool.executed"] is True and a["kit.tool.effects"] is False
    assert "C-7" not in json.dumps(tools[0]["attributes"])  # arguments and result only by reference
    assert agent_span["attributes"]["kit.agent.stopped"] == "answer"
    assert agent_span["attributes"]["kit.agent.tool_calls"] == 2

    calls = read_jsonl(kernel / "llm_calls.jsonl")
    assert [c["provider"] for c in calls] == ["fake", "kit.tool", "fake", "kit.tool", "fake"]
    tool_call = calls[1]
    assert tool_call["request"]["messages"] == [{"role": "tool_call", "id": "call_1_1", "content": {"customer": "C-7"}}]
    assert tool_call["request"]["params"] == {"turn": calls[0]["key"]}  # keyed by the turn that asked
    assert tool_call["response"]["result"] == result.tool_calls[0].result
    assert a["kit.llm.call_id"] == tool_call["call_id"]
    # the model saw the tools' schemas
    assert [t["function"]["name"] for t in calls[0]["request"]["tools"]] == ["lookup_orders", "send_note"]


def test_replay_serves_effects_and_reruns_pure_tools(kernel, monkeypatch, tmp_path):
    script(
        monkeypatch,
        {"tool_calls": [{"name": "lookup_orders", "arguments": {"customer": "C-7"}}]},
        {"tool_calls": [{"name": "send_note", "arguments": {"text": "two orders", "priority": "high"}}]},
        {"content": "done"},
    )
    live = llm.agent(ASK, tools=["lookup_orders", "send_note"])
    recordings = tmp_path / "rec.jsonl"
    assert write_recordings(read_jsonl(kernel / "llm_calls.jsonl"), recordings) == 5
    assert len(lines(tmp_path / "effects.log")) == 1 and len(lines(tmp_path / "pure.log")) == 1

    monkeypatch.setenv("KIT_LLM_MODE", "replay")
    monkeypatch.setenv("KIT_LLM_RECORDINGS", str(recordings))
    monkeypatch.setenv("KIT_LLM_CONFIG", json.dumps({"provider": "fake", "model": "fake"}))  # no script: replayed
    again = llm.agent(ASK, tools=["lookup_orders", "send_note"])
    assert again.answer == live.answer == "done"
    assert [(c.name, c.executed, c.replayed) for c in again.tool_calls] == [
        ("lookup_orders", True, True),
        ("send_note", False, True),
    ]
    assert again.tool_calls[1].result == {"sent": True, "chars": 10}
    assert len(lines(tmp_path / "effects.log")) == 1  # the side effect happened once
    assert len(lines(tmp_path / "pure.log")) == 2  # the pure tool ran again

    # a pure tool that now returns something else fails closed, with a diff
    (Path.cwd() / "tools.py").write_text(TOOLS_PY.replace('"amount": 40', '"amount": 41'))
    monkeypatch.setenv("KIT_TOOLS", json.dumps(declared(Path.cwd())))
    import sys

    for name in [m for m in sys.modules if m.startswith("kit_tools_")]:
        del sys.modules[name]
    with pytest.raises(ToolReplayMismatch) as caught:
        llm.agent(ASK, tools=["lookup_orders", "send_note"])
    message = str(caught.value)
    assert "'lookup_orders'" in message and "effects: false" in message
    assert '-    "amount": 40,' in message and '+    "amount": 41,' in message
    assert len(lines(tmp_path / "effects.log")) == 1


def test_a_tool_the_step_does_not_list_is_refused(kernel, monkeypatch):
    monkeypatch.setenv("KIT_TOOLS", json.dumps({"lookup_orders": declared(Path.cwd())["lookup_orders"]}))
    script(monkeypatch, {"content": "never"})
    with pytest.raises(AgentError, match=r"tool 'send_note' refused: step 'investigate' does not list it"):
        llm.agent(ASK, tools=["lookup_orders", "send_note"])

    def send_note(text: str) -> dict:
        return {}

    with pytest.raises(AgentError, match="tool 'send_note' refused"):
        llm.agent(ASK, tools=[send_note])
    monkeypatch.delenv("KIT_TOOLS")  # a step that lists no tools
    with pytest.raises(AgentError, match=r"tool 'lookup_orders' refused: .*it may use: none"):
        llm.agent(ASK, tools=["lookup_orders"])


def test_the_model_calling_an_unlisted_tool_is_told_and_the_loop_goes_on(kernel, monkeypatch, tmp_path):
    script(
        monkeypatch,
        {"tool_calls": [{"name": "send_note", "arguments": {"text": "sneaky"}}]},
        {"content": "ok, no note then"},
    )
    result = llm.agent(ASK, tools=["lookup_orders"])
    assert result.stopped == "answer" and result.answer == "ok, no note then"
    (call,) = result.tool_calls
    assert call.outcome == "refused" and not call.executed
    told = [m for m in result.messages if m["role"] == "tool"][0]["content"]
    assert "no tool 'send_note'" in told and "lookup_orders" in told
    assert not (tmp_path / "effects.log").exists()
    (span,) = [s for s in spans(kernel) if s["kind"] == "tool"]
    assert span["attributes"]["kit.tool.outcome"] == "refused"
    assert span["attributes"]["gen_ai.tool.name"] == "send_note"


def test_malformed_arguments_are_told_to_the_model_and_cost_a_turn(kernel, monkeypatch):
    script(
        monkeypatch,
        {"tool_calls": [{"name": "lookup_orders", "arguments": '{"customer": "C-7"'}]},
        {"tool_calls": [{"name": "lookup_orders", "arguments": {"customer": 7}}]},
        {"tool_calls": [{"name": "lookup_orders", "arguments": {"customer": "C-7"}}]},
        {"content": "found them"},
    )
    result = llm.agent(ASK, tools=["lookup_orders"], max_turns=4)
    assert result.stopped == "answer" and result.turns == 4
    assert [c.outcome for c in result.tool_calls] == ["bad_arguments", "bad_arguments", "ok"]
    told = [m["content"] for m in result.messages if m["role"] == "tool"]
    assert "not valid JSON" in told[0] and "customer: 7 is not of type 'string'" in told[1]
    # the same script with one turn fewer runs out of turns
    result = llm.agent(ASK, tools=["lookup_orders"], max_turns=3)
    assert result.stopped == "max_turns" and result.answer is None and result.turns == 3
    assert len(result.tool_calls) == 2  # the last turn's call was not run


def test_max_turns_and_budget_stop_the_loop(kernel, monkeypatch, tmp_path):
    looping = [{"tool_calls": [{"name": "send_note", "arguments": {"text": f"note {i}"}}]} for i in range(10)]
    script(monkeypatch, *looping)
    result = llm.agent(ASK, tools=["send_note"], max_turns=3)
    assert (result.stopped, result.turns, result.answer) == ("max_turns", 3, None)
    assert len(lines(tmp_path / "effects.log")) == 2  # the third turn's call was not run
    (agent_span,) = [s for s in spans(kernel) if s["kind"] == "agent"]
    assert agent_span["attributes"]["kit.agent.stopped"] == "max_turns"

    per_turn = llm.usage_of(
        providers.fake_provider(
            {"provider": "fake", "model": "fake", "messages": ASK, "tools": [{}], "params": {}},
            {"script": looping},
        )
    )["total_tokens"]
    result = llm.agent(ASK, tools=["send_note"], max_turns=10, budget={"tokens": per_turn + 1})
    assert result.stopped == "budget" and result.turns == 2 and result.tokens >= per_turn + 1
    assert len(lines(tmp_path / "effects.log")) == 3  # one more: turn 1's call; turn 2's was not run
    with pytest.raises(AgentError, match="max_turns must be a positive integer"):
        llm.agent(ASK, tools=["send_note"], max_turns=0)
    with pytest.raises(AgentError, match="budget must be"):
        llm.agent(ASK, tools=["send_note"], budget={"dollars": 3})


def test_a_tool_that_raises_ends_the_loop_with_a_clear_error(kernel, monkeypatch):
    script(monkeypatch, {"tool_calls": [{"name": "explode", "arguments": {"reason": "maintenance"}}]})
    with pytest.raises(ToolError) as caught:
        llm.agent(ASK, tools=["explode"])
    assert caught.value.tool == "explode" and caught.value.call_id == "call_1_1"
    assert "tool 'explode' (call call_1_1, turn 1) raised ValueError: the knowledge base is down: maintenance" in str(
        caught.value
    )
    (span,) = [s for s in spans(kernel) if s["kind"] == "tool"]
    assert span["status"] == "error" and span["attributes"]["error.type"] == "ToolError"
    # a notebook may handle it
    try:
        llm.agent(ASK, tools=["explode"])
    except ToolError as exc:
        assert exc.tool == "explode"


def test_a_tool_that_hangs_times_out(kernel, monkeypatch):
    monkeypatch.setenv("KIT_TOOLS", json.dumps(declared(Path.cwd(), sleepy={"timeout": 0.3})))
    script(monkeypatch, {"tool_calls": [{"name": "sleepy", "arguments": {"seconds": 30}}]})
    with pytest.raises(ToolTimeout, match=r"tool 'sleepy' .* did not return within its timeout of 0.3s"):
        llm.agent(ASK, tools=["sleepy"])


def test_standalone_tools_are_described_from_their_hints(tmp_path, monkeypatch):
    for name in ("KIT_SPOOL", "KIT_TOOLS", "KIT_LLM_MODE", "KIT_LLM_RECORDINGS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    script(monkeypatch, {"tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 3}}]}, {"content": "5"})

    def add(a: int, b: int = 0) -> int:
        """Add two numbers."""
        return a + b

    result = llm.agent("What is 2 + 3?", tools=[add])
    assert result.answer == "5" and result.tool_calls[0].result == 5

    def untyped(a):
        return a

    with pytest.raises(AgentError, match="argument 'a' has no type hint"):
        llm.agent("x", tools=[untyped])


def test_the_loop_over_real_http_with_two_tools(kernel, monkeypatch, llm_server):  # noqa: F811
    monkeypatch.setenv(
        "KIT_LLM_CONFIG",
        json.dumps({"provider": "openai", "model": "gpt-test", "base_url": llm_server.base_url, "timeout": 5}),
    )
    llm_server.enqueue_tool_calls(("lookup_orders", {"customer": "C-7"}))
    llm_server.enqueue_tool_calls(("send_note", {"text": "hello"}))
    llm_server.enqueue_answer("all done")
    result = llm.agent(ASK, tools=["lookup_orders", "send_note"])
    assert result.answer == "all done" and [c.name for c in result.tool_calls] == ["lookup_orders", "send_note"]
    bodies = [r["body"] for r in llm_server.requests]
    assert [t["function"]["name"] for t in bodies[0]["tools"]] == ["lookup_orders", "send_note"]
    assert bodies[1]["messages"][-1]["role"] == "tool" and bodies[1]["messages"][-1]["tool_call_id"] == "call_1_1"
    assert bodies[2]["messages"][-2]["tool_calls"][0]["function"]["name"] == "send_note"


def test_tool_errors_are_kit_llm_errors():
    assert issubclass(ToolTimeout, ToolError) and issubclass(ToolError, llm.LLMError)
    assert agent_mod.STOPS == ("answer", "max_turns", "budget")


# --------------------------------------------------------------------------- the whole path, real kernels

AGENT_NOTEBOOK = """
import kit
result = kit.llm.agent(
    [{"role": "user", "content": f"Draft a case note for customer {customer}."}],
    tools=["lookup_orders", "send_note"],
    max_turns=4,
)
kit.output("answer", result.answer)
kit.output("stopped", result.stopped)
kit.output("calls", [[c.name, c.outcome] for c in result.tool_calls])
"""


def agent_project(project, model: str, tools_yaml: str | None = None, step_tools: str = "[lookup_orders, send_note]"):
    """A one-step workflow whose step lets the model use two tools from tools.py."""
    (project.root / "wf").mkdir(parents=True, exist_ok=True)
    (project.root / "wf" / "tools.py").write_text(TOOLS_PY)
    (project.root / "wf" / "model.yaml").write_text(model)
    project.notebook("investigate.ipynb", "customer: str = 'C-0'", AGENT_NOTEBOOK)
    tools = "\n".join("  " + line.strip() for line in (tools_yaml or DEFAULT_TOOLS_YAML).strip().splitlines())
    (project.root / "wf" / "workflow.yaml").write_text(
        "workflow: agentic\n"
        "version: 1.0.0\n"
        "params:\n"
        "  customer: {type: string, default: C-7}\n"
        "components:\n"
        '  model: {path: model.yaml, version: "1"}\n'
        "tools:\n"
        f"{tools}\n"
        "steps:\n"
        "  investigate:\n"
        "    notebook: investigate.ipynb\n"
        "    inputs: {customer: params.customer}\n"
        "    outputs: {answer: string, stopped: string, calls: array}\n"
        f"    tools: {step_tools}\n"
    )
    return project


DEFAULT_TOOLS_YAML = """
  lookup_orders: {function: tools.py:lookup_orders, requires: [orders:read], effects: false, timeout: 10}
  send_note: {function: tools.py:send_note, requires: [notes:write], effects: true}
"""

FAKE_SCRIPT_MODEL = """
provider: fake
model: fake
script:
  - tool_calls: [{name: lookup_orders, arguments: {customer: C-7}}]
  - tool_calls: [{name: send_note, arguments: {text: two orders}}]
  - content: C-7 has two orders.
"""


def decoded(value):
    """A JSON column as `kit sql --format json` gives it: decoded already, or JSON text."""
    return json.loads(value) if isinstance(value, str) else value


def side_effect_env(project) -> dict:
    return {
        "AGENT_EFFECTS_LOG": str(project.root / "effects.log"),
        "AGENT_PURE_LOG": str(project.root / "pure.log"),
        "KIT_PRINCIPAL": "alice",
    }


ENTITLED = "principals: {alice: [investigator]}\nroles: {investigator: [orders:read, notes:write]}\n"


def test_an_agent_step_over_real_http_then_replayed_offline(project):
    project.root.joinpath("kit.yaml").write_text(ENTITLED)
    server = LLMServer().start()
    try:
        model = f"provider: openai\nmodel: gpt-test\nbase_url: {server.base_url}\ntimeout: 5\nmax_retries: 0\n"
        agent_project(project, model)
        server.enqueue_tool_calls(("lookup_orders", {"customer": "C-7"}))
        server.enqueue_tool_calls(("send_note", {"text": "two orders", "priority": "high"}))
        server.enqueue_answer("C-7 has two orders; the reviewer has a note.")
        env = side_effect_env(project)
        ran = project.kit("run", "wf", env=env)
        assert ran.returncode == 0, ran.stderr + ran.stdout
        assert len(server.requests) == 3
    finally:
        server.stop()
    outputs = {o["name"]: o["value"] for o in project.sql("select name, value from outputs")}
    assert outputs == {
        "answer": "C-7 has two orders; the reviewer has a note.",
        "stopped": "answer",
        "calls": [["lookup_orders", "ok"], ["send_note", "ok"]],
    }
    assert len(lines(project.root / "effects.log")) == 1 and len(lines(project.root / "pure.log")) == 1

    found = project.sql("select span_id, parent_id, step_id, name, kind, status, attributes from spans")
    by_kind = {}
    for span in found:
        span["attributes"] = decoded(span["attributes"]) or {}
        by_kind.setdefault(span["kind"], []).append(span)
    (agent_span,) = by_kind["agent"]
    turns, tools = by_kind["llm"], sorted(by_kind["tool"], key=lambda s: s["attributes"]["kit.agent.turn"])
    assert len(turns) == 3 and all(t["parent_id"] == agent_span["span_id"] for t in turns + tools)
    assert {t["step_id"] for t in turns + tools + [agent_span]} == {"investigate"}
    assert [t["attributes"]["gen_ai.tool.name"] for t in tools] == ["lookup_orders", "send_note"]
    assert [t["attributes"]["gen_ai.tool.call.id"] for t in tools] == ["call_1_1", "call_2_1"]
    assert all(t["attributes"]["kit.llm.content"].startswith("artifact:sha256:") for t in tools)
    assert turns[0]["attributes"]["gen_ai.provider.name"] == "openai"
    assert turns[0]["attributes"]["server.port"] == server.port
    run_id = project.sql("select run_id from runs")[0]["run_id"]

    captured = project.kit("capture", run_id, "-o", "scenarios/agent.yaml", env=env)
    assert captured.returncode == 0, captured.stderr
    recorded = read_jsonl(project.root / "scenarios" / "recordings" / "agent.jsonl")
    assert sorted(r["request"]["provider"] for r in recorded) == ["kit.tool", "kit.tool", "openai", "openai", "openai"]

    # offline: the server is gone; kit test replays the recordings
    replayed = project.kit("test", "scenarios/agent.yaml", env=env)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert len(lines(project.root / "effects.log")) == 1  # effects: true was served, not run again
    assert len(lines(project.root / "pure.log")) == 2  # the pure tool ran again
    replay_tools = [
        (s["tool"], s["executed"])
        for s in project.sql(
            "select attributes->>'gen_ai.tool.name' as tool, attributes->>'kit.tool.executed' as executed, "
            f"run_id from spans where kind = 'tool' and run_id <> '{run_id}' order by started_at"
        )
    ]
    assert replay_tools == [("lookup_orders", "true"), ("send_note", "false")]


def test_a_pure_tool_that_changed_fails_the_replay_closed_with_a_diff(project):
    project.root.joinpath("kit.yaml").write_text(ENTITLED)
    agent_project(project, FAKE_SCRIPT_MODEL)
    env = side_effect_env(project)
    ran = project.kit("run", "wf", env=env)  # offline: the fake provider's script calls the tools
    assert ran.returncode == 0, ran.stderr + ran.stdout
    assert project.sql("select value from outputs where name = 'answer'")[0]["value"] == "C-7 has two orders."
    run_id = project.sql("select run_id from runs")[0]["run_id"]
    assert project.kit("capture", run_id, "-o", "scenarios/agent.yaml", env=env).returncode == 0

    tools = project.root / "wf" / "tools.py"
    tools.write_text(TOOLS_PY.replace('"amount": 25', '"amount": 2500'))
    replayed = project.kit("test", "scenarios/agent.yaml", env=env)
    assert replayed.returncode == 1, replayed.stdout + replayed.stderr
    failure = project.sql("select error_type, error_message from steps where status = 'failed'")[0]
    assert failure["error_type"] == "ToolReplayMismatch"
    assert "tool 'lookup_orders'" in failure["error_message"]
    assert '-    "amount": 25,' in failure["error_message"] and '+    "amount": 2500,' in failure["error_message"]
    assert len(lines(project.root / "effects.log")) == 1


def test_a_tool_that_raises_fails_the_step_naming_the_tool(project):
    project.root.joinpath("kit.yaml").write_text("principals: {alice: [x]}\nroles: {x: [kb:read]}\n")
    model = (
        "provider: fake\nmodel: fake\nscript:\n  - tool_calls: [{name: explode, arguments: {reason: maintenance}}]\n"
    )
    tools = "\n  explode: {function: tools.py:explode, requires: [kb:read]}\n"
    agent_project(project, model, tools, step_tools="[explode]")
    project.notebook(
        "investigate.ipynb",
        "customer: str = 'C-0'",
        AGENT_NOTEBOOK.replace('"lookup_orders", "send_note"', '"explode"'),
    )
    ran = project.kit("run", "wf", env=side_effect_env(project))
    assert ran.returncode == 1, ran.stderr + ran.stdout
    failure = project.sql("select error_type, error_message from steps")[0]
    assert failure["error_type"] == "ToolError"
    assert (
        "tool 'explode' (call call_1_1, turn 1) raised ValueError: the knowledge base is down"
        in (failure["error_message"])
    )


def test_a_principal_without_a_tools_entitlement_is_denied_before_any_kernel(project):
    project.root.joinpath("kit.yaml").write_text(
        "principals: {alice: [investigator], bob: [reader]}\n"
        "roles: {investigator: [orders:read, notes:write], reader: [orders:read]}\n"
    )
    agent_project(project, FAKE_SCRIPT_MODEL)
    denied = project.kit("run", "wf", "--as", "bob", env=side_effect_env(project))
    assert denied.returncode == 4, denied.stderr
    assert "step 'investigate' lists tool 'send_note', which requires notes:write" in denied.stderr
    assert project.run_count() == 0
    assert not list((project.root / ".kit").glob("runs/*/*.ipynb"))
    assert not (project.root / "pure.log").exists() and not (project.root / "effects.log").exists()
    (audit,) = project.sql("select actor, action, subject, detail from audit")
    assert (audit["actor"], audit["action"], audit["subject"]) == ("bob", "run.denied", "agentic")
    assert decoded(audit["detail"])["tools"] == {"investigate": {"send_note": ["notes:write"]}}


# --------------------------------------------------------------------------- bad manifests (exit 2)


@pytest.mark.parametrize(
    "case",
    ["missing_file", "missing_function", "no_hints", "undeclared", "bad_reference"],
)
def test_bad_tool_declarations_are_refused_with_file_and_line(project, case):
    tools_yaml, step_tools, needles = {
        "missing_file": (
            "\n  lookup_orders: {function: nope.py:lookup_orders}\n",
            "[lookup_orders]",
            ["workflow.yaml:8: tools.lookup_orders.function", "no such file", "nope.py"],
        ),
        "missing_function": (
            "\n  lookup_orders: {function: tools.py:find_orders}\n",
            "[lookup_orders]",
            ["workflow.yaml:8: tools.lookup_orders.function", "defines no function 'find_orders'"],
        ),
        "no_hints": (
            "\n  vague: {function: tools.py:vague}\n",
            "[vague]",
            ["tools.py:", "tool function vague: argument 'what' has no type hint"],
        ),
        "undeclared": (
            DEFAULT_TOOLS_YAML,
            "[lookup_orders, delete_everything]",
            ["steps.investigate.tools.1", "no tool 'delete_everything' is declared", "lookup_orders, send_note"],
        ),
        "bad_reference": (
            "\n  lookup_orders: {function: lookup_orders}\n",
            "[lookup_orders]",
            ["tools.lookup_orders.function", "expected FILE.py:FUNCTION"],
        ),
    }[case]
    agent_project(project, FAKE_SCRIPT_MODEL, tools_yaml, step_tools)
    (project.root / "wf" / "tools.py").write_text(TOOLS_PY + "\n\ndef vague(what, n: int = 1):\n    return what\n")
    result = project.cli("run", "wf")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output
    if case == "no_hints":
        line = (TOOLS_PY + "\n\ndef vague(").count("\n") + 1
        assert f"tools.py:{line}:" in result.output, result.output
    assert project.run_count() == 0


def test_a_tool_schema_is_derived_from_hints():
    import ast

    from kit.base.toolschema import function_schema

    source = textwrap.dedent(
        '''
        def f(a: str, b: int = 2, *, c: list[str] | None = None, d: Literal["x", "y"] = "x",
              e: dict[str, float] = {}, g: Optional[bool] = None, h: Any = None) -> str:
            """Do f.

            Details."""
        '''
    )
    schema = function_schema(ast.parse(source).body[0], "t.py")
    assert schema.problems == [] and schema.description == "Do f."
    assert schema.parameters == {
        "type": "object",
        "properties": {
            "a": {"type": "string"},
            "b": {"type": "integer", "default": 2},
            "c": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
            "d": {"enum": ["x", "y"], "default": "x"},
            "e": {"type": "object", "additionalProperties": {"type": "number"}, "default": {}},
            "g": {"type": ["boolean", "null"]},
            "h": {},
        },
        "required": ["a"],
        "additionalProperties": False,
    }
    bad = function_schema(ast.parse("def f(x: Foo, *rest: int): pass").body[0], "t.py")
    assert any("the hint Foo has no JSON Schema" in p for p in bad.problems)
    assert any("*rest" in p for p in bad.problems)
