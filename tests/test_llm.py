"""kit.llm, in-process: real HTTP against a local OpenAI-compatible server, spool records, replay."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import pytest
from llm_server import DEFAULT_USAGE, llm_server  # noqa: F401 - the fixture

from kit import llm
from kit.base.jsonl import read_jsonl as read_tolerant
from kit.kernel import providers
from kit.kernel import recordings as rec
from kit.kernel.llm import LLMError, ReplayMiss

SECRET = "sk-test-DO-NOT-LEAK-1234567890"
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Summarize case C-1001. The customer was double charged. Refund pending."},
]


@pytest.fixture
def spool(tmp_path, monkeypatch) -> Path:
    """A kernel's view under kit: a spool dir, a clean LLM environment, a neutral working directory."""
    for name in ("KIT_LLM_CONFIG", "KIT_LLM_MODE", "KIT_LLM_RECORDINGS", "KIT_STEP", "OPENAI_TEST_KEY"):
        monkeypatch.delenv(name, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    path = tmp_path / "spool"
    monkeypatch.setenv("KIT_SPOOL", str(path))
    return path


def configure(monkeypatch, **config) -> dict:
    monkeypatch.setenv("KIT_LLM_CONFIG", json.dumps(config))
    return config


def openai_config(monkeypatch, server, **extra) -> dict:
    monkeypatch.setenv("OPENAI_TEST_KEY", SECRET)
    fields = {
        "provider": "openai",
        "model": "gpt-test",
        "base_url": server.base_url,
        "api_key_env": "OPENAI_TEST_KEY",
        "params": {"temperature": 0},
        "timeout": 5,
        "max_retries": 3,
        "backoff": 0.01,
    }
    fields.update(extra)
    return configure(monkeypatch, **fields)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def llm_spans(spool: Path) -> list[dict]:
    return [s for s in read_jsonl(spool / "spans.jsonl") if s["kind"] == "llm"]


def assert_no_secret(spool: Path) -> None:
    for file in spool.rglob("*"):
        if file.is_file():
            assert SECRET not in file.read_text(), file


# --------------------------------------------------------------------------- openai, live


def test_openai_success_sends_request_and_spools_call_and_span(spool, monkeypatch, llm_server):
    openai_config(monkeypatch, llm_server)
    reply = llm.chat(MESSAGES, max_tokens=50, seed=7)
    assert reply == "echo: " + MESSAGES[1]["content"]

    (req,) = llm_server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert req["body"] == {"model": "gpt-test", "messages": MESSAGES, "temperature": 0, "max_tokens": 50, "seed": 7}

    (call,) = read_tolerant(spool / "llm_calls.jsonl")
    assert call["provider"] == "openai" and call["model"] == "gpt-test"
    assert call["mode"] == "live" and call["replayed"] is False
    assert call["request"] == {
        "provider": "openai",
        "model": "gpt-test",
        "messages": MESSAGES,
        "tools": None,
        "params": {"temperature": 0, "max_tokens": 50, "seed": 7},
    }
    assert call["key"] == rec.request_key(call["request"])
    assert call["response"]["id"] == "chatcmpl-test-1"
    assert call["usage"] == {"input_tokens": 11, "output_tokens": 5, "total_tokens": 16}
    assert call["latency_ms"] >= 0

    (span,) = llm_spans(spool)
    assert span["name"] == "chat" and span["status"] == "ok"
    a = span["attributes"]
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-test"
    assert a["gen_ai.request.temperature"] == 0
    assert a["gen_ai.request.max_tokens"] == 50
    assert "gen_ai.request.top_p" not in a
    assert a["gen_ai.response.model"] == "gpt-test-served"
    assert a["gen_ai.response.id"] == "chatcmpl-test-1"
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["gen_ai.usage.input_tokens"] == DEFAULT_USAGE["prompt_tokens"]
    assert a["gen_ai.usage.output_tokens"] == DEFAULT_USAGE["completion_tokens"]
    assert a["kit.llm.call_id"] == call["call_id"]
    assert a["kit.llm.key"] == call["key"]
    assert a["kit.llm.mode"] == "live" and a["kit.llm.replayed"] is False
    assert a["latency_ms"] == call["latency_ms"]
    assert a["server.address"] == "127.0.0.1"
    flat = json.dumps(a)
    assert "double charged" not in flat and "terse" not in flat and "echo:" not in flat

    # the key's variable is declared as a secret (by name) so kit redacts its value; the value is nowhere
    assert read_jsonl(spool / "secrets.jsonl") == [{"name": "OPENAI_TEST_KEY"}]
    assert_no_secret(spool)


def test_429_is_retried_honouring_retry_after_and_recorded_once(spool, monkeypatch, llm_server):
    openai_config(monkeypatch, llm_server)
    llm_server.enqueue(429, {"error": {"message": "rate limited"}}, headers={"Retry-After": "0.05"})
    t0 = time.monotonic()
    assert llm.chat("hello there") == "echo: hello there"
    assert time.monotonic() - t0 >= 0.05
    assert len(llm_server.requests) == 2
    assert len(read_tolerant(spool / "llm_calls.jsonl")) == 1
    assert len(llm_spans(spool)) == 1


def test_retry_after_is_capped(spool, monkeypatch, llm_server):
    openai_config(monkeypatch, llm_server, max_backoff=0.05)
    llm_server.enqueue(503, "busy", headers={"Retry-After": "3600"})
    t0 = time.monotonic()
    assert llm.chat("hi") == "echo: hi"
    assert time.monotonic() - t0 < 1


def test_persistent_500_raises_with_status_body_and_attempts(spool, monkeypatch, llm_server):
    openai_config(monkeypatch, llm_server, max_retries=3)
    for _ in range(4):
        llm_server.enqueue(500, {"error": {"message": "the model fell over"}})
    t0 = time.monotonic()
    with pytest.raises(LLMError) as info:
        llm.chat("hi")
    assert time.monotonic() - t0 < 2
    message = str(info.value)
    assert "provider openai" in message and llm_server.base_url + "/chat/completions" in message
    assert "HTTP 500" in message and "the model fell over" in message
    assert "4 attempts" in message
    assert len(llm_server.requests) == 4
    assert read_tolerant(spool / "llm_calls.jsonl") == []
    (span,) = llm_spans(spool)
    assert span["status"] == "error" and span["attributes"]["error.type"] == "LLMError"
    assert_no_secret(spool)


def test_other_4xx_is_not_retried(spool, monkeypatch, llm_server):
    openai_config(monkeypatch, llm_server)
    llm_server.enqueue(400, {"error": {"message": "unknown parameter: tempreature"}})
    with pytest.raises(LLMError, match=r"HTTP 400: .*unknown parameter: tempreature.*not retried"):
        llm.chat("hi", tempreature=0.2)
    assert len(llm_server.requests) == 1


def test_timeout_is_retried(spool, monkeypatch, llm_server):
    openai_config(monkeypatch, llm_server, timeout=0.2)
    llm_server.enqueue(200, None, delay=0.6)
    assert llm.chat("slow") == "echo: slow"
    assert len(llm_server.requests) == 2


def test_connection_refused_is_retried_then_reported(spool, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    configure(
        monkeypatch, provider="openai", model="m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=2, backoff=0.01
    )
    with pytest.raises(LLMError, match=r"gave up after 3 attempts") as info:
        llm.chat("hi")
    assert f"127.0.0.1:{port}" in str(info.value)


def test_missing_api_key_is_a_clear_error(spool, monkeypatch, llm_server):
    configure(monkeypatch, provider="openai", model="m", base_url=llm_server.base_url, api_key_env="NO_SUCH_KEY_VAR")
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(LLMError, match="'NO_SUCH_KEY_VAR' .* is not set"):
        llm.chat("hi")
    assert llm_server.requests == []


# --------------------------------------------------------------------------- record and replay


def record_one(spool, monkeypatch, server, tmp_path, *args, **params) -> tuple[Path, str]:
    """Record a call live and keep it as `kit capture` would; the recordings file."""
    openai_config(monkeypatch, server)
    monkeypatch.setenv("KIT_LLM_MODE", "record")
    reply = llm.chat(*args, **params)
    calls = read_tolerant(spool / "llm_calls.jsonl")
    assert [c["mode"] for c in calls] == ["record"]
    recordings = tmp_path / "recordings.jsonl"
    assert rec.write_recordings(calls, recordings) == 1
    assert SECRET not in recordings.read_text()
    (spool / "llm_calls.jsonl").unlink()
    (spool / "spans.jsonl").unlink()
    monkeypatch.setenv("KIT_LLM_RECORDINGS", str(recordings))
    monkeypatch.setenv("KIT_LLM_MODE", "replay")
    return recordings, reply


def test_replay_hit_serves_the_recording_without_http(spool, monkeypatch, llm_server, tmp_path):
    _, recorded = record_one(spool, monkeypatch, llm_server, tmp_path, MESSAGES, max_tokens=50)
    before = len(llm_server.requests)
    # a dead endpoint proves the network is never touched
    openai_config(monkeypatch, llm_server, base_url="http://127.0.0.1:9/v1", max_retries=0)
    assert llm.chat(MESSAGES, max_tokens=50) == recorded
    assert len(llm_server.requests) == before
    (call,) = read_tolerant(spool / "llm_calls.jsonl")
    assert call["mode"] == "replay" and call["replayed"] is True
    assert call["usage"]["input_tokens"] == 11
    (span,) = llm_spans(spool)
    assert span["attributes"]["kit.llm.replayed"] is True
    assert span["attributes"]["gen_ai.usage.output_tokens"] == 5


def test_replay_miss_names_the_step_and_shows_the_difference(spool, monkeypatch, llm_server, tmp_path):
    record_one(spool, monkeypatch, llm_server, tmp_path, MESSAGES, max_tokens=50)
    monkeypatch.setenv("KIT_STEP", "summarize")
    before = len(llm_server.requests)
    with pytest.raises(ReplayMiss) as info:
        llm.chat(MESSAGES, max_tokens=50, temperature=0.7)
    message = str(info.value)
    assert "step 'summarize'" in message
    assert "nearest recording" in message
    assert '-    "temperature": 0' in message and '+    "temperature": 0.7' in message
    assert len(message.splitlines()) < 50
    assert len(llm_server.requests) == before
    (span,) = llm_spans(spool)
    assert span["status"] == "error" and span["attributes"]["error.type"] == "ReplayMiss"
    assert read_tolerant(spool / "llm_calls.jsonl") == []


def test_replay_without_recordings_fails_closed(spool, monkeypatch, tmp_path):
    configure(monkeypatch, provider="fake", model="fake")
    monkeypatch.setenv("KIT_LLM_MODE", "replay")
    monkeypatch.setenv("KIT_STEP", "recommend")
    with pytest.raises(ReplayMiss, match=r"step 'recommend'.*no recordings at all \(KIT_LLM_RECORDINGS is not set\)"):
        llm.chat("hi")
    monkeypatch.setenv("KIT_LLM_RECORDINGS", str(tmp_path / "absent.jsonl"))
    with pytest.raises(ReplayMiss, match=r"no recordings at all \(.*absent.jsonl does not exist\)"):
        llm.chat("hi")


def test_bad_mode_is_refused(spool, monkeypatch):
    monkeypatch.setenv("KIT_LLM_MODE", "replya")
    with pytest.raises(LLMError, match="KIT_LLM_MODE='replya'"):
        llm.chat("hi")


# --------------------------------------------------------------------------- fake provider, keys, config


def test_fake_provider_is_deterministic_and_useful(spool, monkeypatch):
    configure(monkeypatch, provider="fake", model="fake-1")
    text = "The invoice was paid twice. The customer wants a refund!  Also, the app crashed. Fix it?"
    first = llm.chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}])
    assert first == "The invoice was paid twice. The customer wants a refund!"
    assert llm.chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]) == first
    assert llm.chat(text, max_tokens=3) == "The invoice was"
    calls = read_tolerant(spool / "llm_calls.jsonl")
    assert calls[0]["response"] == calls[1]["response"]
    assert calls[0]["usage"] == {"input_tokens": 2 + 16, "output_tokens": 10, "total_tokens": 28}
    assert calls[2]["response"]["choices"][0]["finish_reason"] == "length"
    assert llm_spans(spool)[2]["attributes"]["gen_ai.response.finish_reasons"] == ["length"]


def test_request_key_is_canonical():
    a = rec.canonical_request("openai", "m", MESSAGES, {"temperature": 0, "top_p": 1, "seed": 3})
    b = rec.canonical_request("openai", "m", MESSAGES, {"seed": 3, "top_p": 1, "temperature": 0})
    assert rec.request_key(a) == rec.request_key(b)
    assert len(rec.request_key(a)) == 64
    c = rec.canonical_request("openai", "m", MESSAGES, {"temperature": 0.5, "top_p": 1, "seed": 3})
    assert rec.request_key(a) != rec.request_key(c)
    assert rec.request_key(
        rec.canonical_request("fake", "m", MESSAGES, {"temperature": 0, "top_p": 1, "seed": 3})
    ) != rec.request_key(a)
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    d = rec.canonical_request("openai", "m", MESSAGES, {"tools": tools, "temperature": None})
    assert d["tools"] == tools and d["params"] == {}
    assert rec.request_key(d) != rec.request_key(rec.canonical_request("openai", "m", MESSAGES, {}))
    # a plain string is one user message
    assert rec.canonical_request("fake", "m", "hi", {})["messages"] == [{"role": "user", "content": "hi"}]


def test_call_params_override_component_params(spool, monkeypatch):
    configure(monkeypatch, provider="fake", model="fake", params={"temperature": 0, "top_p": 0.9})
    llm.chat("hi", temperature=0.3)
    (call,) = read_tolerant(spool / "llm_calls.jsonl")
    assert call["request"]["params"] == {"temperature": 0.3, "top_p": 0.9}
    attrs = llm_spans(spool)[0]["attributes"]
    assert attrs["gen_ai.request.temperature"] == 0.3 and attrs["gen_ai.request.top_p"] == 0.9


def test_write_recordings_dedups_and_appends(tmp_path):
    def call(text, temperature=0):
        request = rec.canonical_request("fake", "m", text, {"temperature": temperature})
        return {"key": rec.request_key(request), "request": request, "response": providers.fake_provider(request, {})}

    path = tmp_path / "sub" / "rec.jsonl"
    assert rec.write_recordings([call("a"), call("b"), call("a")], path) == 2
    assert rec.write_recordings([call("b"), call("c"), call("a", 1), {"key": "x", "response": None}], path) == 2
    assert rec.write_recordings([call("c")], path) == 0
    lines = read_jsonl(path)
    assert len(lines) == 4 and len({r["key"] for r in lines}) == 4
    assert set(lines[0]) == {"key", "request", "response"}
    assert set(rec.load_recordings(path)) == {r["key"] for r in lines}


def test_spooled_calls_read_past_a_torn_line(tmp_path):
    (tmp_path / "llm_calls.jsonl").write_text('{"call_id": "a"}\n{"call_id": "b"}\n{"call_i')
    assert [c["call_id"] for c in read_tolerant(tmp_path / "llm_calls.jsonl")] == ["a", "b"]
    assert read_tolerant(tmp_path / "none" / "llm_calls.jsonl") == []


def test_standalone_writes_nothing_and_reads_the_workflow_model_component(tmp_path, monkeypatch):
    for name in ("KIT_SPOOL", "KIT_LLM_CONFIG", "KIT_LLM_MODE", "KIT_LLM_RECORDINGS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    assert llm.load_config() == {"provider": "fake", "model": "fake", "params": {}}
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "model.yaml").write_text("provider: fake\nmodel: tiny\nparams: {temperature: 0}\n")
    (tmp_path / "workflow.yaml").write_text(
        "workflow: w\nsteps: {}\ncomponents:\n  model: {path: config/model.yaml, version: '2'}\n"
    )
    assert llm.load_config() == {"provider": "fake", "model": "tiny", "params": {"temperature": 0}}
    assert llm.chat("One. Two. Three.") == "One. Two."
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config", "workflow.yaml"]


def test_bad_config_is_a_clear_error(spool, monkeypatch):
    monkeypatch.setenv("KIT_LLM_CONFIG", "{not json")
    with pytest.raises(LLMError, match="KIT_LLM_CONFIG is not valid JSON"):
        llm.chat("hi")
    configure(monkeypatch, model="m")
    with pytest.raises(LLMError, match="names no provider"):
        llm.chat("hi")
    configure(monkeypatch, provider="nope", model="m")
    with pytest.raises(LLMError, match=r"unknown provider 'nope'; known providers: .*fake.*openai"):
        llm.chat("hi")


def test_plugin_provider_through_entry_points(spool, monkeypatch, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "kit_test_llm_provider.py").write_text(
        "def shout(request, config):\n"
        "    text = request['messages'][-1]['content'].upper() + config.get('suffix', '')\n"
        "    return {'id': 'p-1', 'model': request['model'],\n"
        "            'choices': [{'index': 0, 'message': {'role': 'assistant', 'content': text},\n"
        "                         'finish_reason': 'stop'}],\n"
        "            'usage': {'prompt_tokens': 1, 'completion_tokens': 1, 'total_tokens': 2}}\n"
    )
    dist = site / "kit_test_llm_provider-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kit-test-llm-provider\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[kit.llm_providers]\nshouty = kit_test_llm_provider:shout\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "kit_test_llm_provider", raising=False)
    configure(monkeypatch, provider="shouty", model="s", suffix="!")
    assert llm.chat("hey") == "HEY!"
    (span,) = llm_spans(spool)
    assert span["attributes"]["gen_ai.provider.name"] == "shouty"
    assert span["attributes"]["gen_ai.usage.input_tokens"] == 1


def test_config_from_component_merges_overrides(tmp_path, spool, monkeypatch):
    path = tmp_path / "model.yaml"
    path.write_text(
        "provider: openai\nmodel: gpt-4o-mini\napi_key_env: OPENAI_API_KEY\nparams: {temperature: 0, top_p: 1}\n"
    )
    merged = llm.config_from_component(path, {"base_url": "http://127.0.0.1:8000/v1", "params": {"top_p": 0.5}})
    assert merged == {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "api_key_env": "OPENAI_API_KEY",
        "base_url": "http://127.0.0.1:8000/v1",
        "params": {"temperature": 0, "top_p": 0.5},
    }
    configure(monkeypatch, provider="openai", model="m", api_key="sk-inline")
    with pytest.raises(LLMError, match="holds an api_key; .*api_key_env"):
        llm.chat("hi")
