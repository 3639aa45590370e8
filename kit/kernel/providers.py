"""LLM providers: who answers a chat request. ``openai`` (any OpenAI-compatible endpoint)
and ``fake`` (deterministic, offline) are kit's own; others come from the entry point
group ``kit.llm_providers``, found the same way (`kit.base.plugins`).

A provider is a callable ``provider(request: dict, config: dict) -> dict``: ``request``
is the canonical request (`kit.kernel.recordings.canonical_request`), ``config`` the
model config (no secret values: read a key from the variable ``config["api_key_env"]``
names). It returns an OpenAI-shaped chat completion: ``{"id", "model", "choices":
[{"index": 0, "message": {"role": "assistant", "content": ...}, "finish_reason": ...}],
"usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}``, and raises
`LLMError` for a failure it has already reported clearly; any other exception is
wrapped in one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from kit.base.plugins import Registry, UnknownPlugin
from kit.kernel import api
from kit.kernel.recordings import request_key

ENTRY_POINT_GROUP = "kit.llm_providers"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 4
DEFAULT_BACKOFF = 0.5
DEFAULT_MAX_BACKOFF = 30.0
RETRIED_STATUSES = frozenset([429, *range(500, 600)])

Provider = Callable[[dict, dict], dict]


class LLMError(Exception):
    """An LLM call failed: a bad config, an endpoint error, a provider's failure."""


def _callable(obj: Any, name: str) -> Provider:
    if not callable(obj):
        raise TypeError(f"{obj!r} is not callable")
    return obj


PROVIDERS = Registry(ENTRY_POINT_GROUP, "provider", _callable)


def register_provider(name: str, provider: Provider) -> None:
    """Make `provider` available under `name` in this process (ahead of entry points)."""
    PROVIDERS.register(name, provider)


def call_provider(name: str, request: dict, config: dict) -> dict:
    """Ask provider `name`; its answer checked to be OpenAI-shaped, any failure an `LLMError`."""
    try:
        fn = PROVIDERS.get(name)
    except UnknownPlugin as exc:
        if exc.load_error:
            raise LLMError(f"kit.llm: provider {name!r} could not be loaded from {exc.load_error}") from None
        raise LLMError(
            f"kit.llm: unknown provider {name!r}; known providers: {', '.join(exc.known)}. A plugin "
            f"registers one in the entry point group {ENTRY_POINT_GROUP!r}."
        ) from None
    try:
        response = fn(request, config)
    except LLMError:
        raise
    except Exception as exc:  # a plugin's own failure, made readable
        raise LLMError(f"kit.llm: provider {name!r} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(response, dict) or not isinstance(response.get("choices"), list):
        raise LLMError(
            f"kit.llm: provider {name!r} returned {type(response).__name__}, "
            "expected an OpenAI-shaped response dict with 'choices'"
        )
    return response


# --------------------------------------------------------------------------- fake


def content_text(content: Any) -> str:
    """A message's content as text (content parts joined)."""
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _last_user_text(messages: list) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def _words(text: str) -> int:
    return len(text.split())


def _scripted(request: dict, config: dict) -> dict | None:
    """The scripted message for an agent's turn (a request with ``tools``), or None.

    ``script`` in the model config is a list of turns, served by the number of assistant messages
    the request already holds (turn 1 is ``script[0]``): ``{tool_calls: [{name, arguments}]}``
    (``arguments`` a mapping, or a string sent as is, e.g. to script malformed JSON; an optional
    ``id``), or ``{content: TEXT}`` (the answer). Past the script's end the fake answers as usual.
    """
    script = config.get("script")
    if not request.get("tools") or not isinstance(script, list):
        return None
    turn = sum(1 for m in request["messages"] if m.get("role") == "assistant")
    if turn >= len(script):
        return None
    entry = script[turn]
    if not isinstance(entry, dict) or not ("tool_calls" in entry or "content" in entry):
        raise LLMError(f"kit.llm: provider fake: script[{turn}] must be {{tool_calls: [...]}} or {{content: TEXT}}")
    if "tool_calls" not in entry:
        return {"role": "assistant", "content": str(entry["content"])}
    calls = []
    for index, call in enumerate(entry["tool_calls"] or []):
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise LLMError(f"kit.llm: provider fake: script[{turn}].tool_calls[{index}] needs a `name`")
        arguments = call.get("arguments", {})
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, sort_keys=True)
        calls.append(
            {
                "id": str(call.get("id") or f"call_{turn + 1}_{index + 1}"),
                "type": "function",
                "function": {"name": call["name"], "arguments": arguments},
            }
        )
    return {"role": "assistant", "content": entry.get("content"), "tool_calls": calls}


def fake_provider(request: dict, config: dict) -> dict:
    """Deterministic, offline: the first two sentences of the last user message
    (cut to ``max_tokens`` words when given, finish reason ``length``); usage counts words.
    An agent's turns can be scripted, tool calls included (`_scripted`)."""
    import re

    prompt_tokens = sum(_words(content_text(m.get("content"))) for m in request["messages"])
    message = _scripted(request, config)
    if message is not None:
        calls = message.get("tool_calls") or []
        completion_tokens = _words(content_text(message.get("content"))) + sum(
            _words(c["function"]["arguments"]) + 1 for c in calls
        )
        return {
            "id": "fake-" + request_key(request)[:24],
            "object": "chat.completion",
            "created": 0,
            "model": request["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    text = " ".join(_last_user_text(request["messages"]).split())
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if s]
    reply = " ".join(sentences[:2])
    finish = "stop"
    limit = request["params"].get("max_tokens") or request["params"].get("max_completion_tokens")
    if isinstance(limit, int) and limit >= 0 and _words(reply) > limit:
        reply = " ".join(reply.split()[:limit])
        finish = "length"
    completion_tokens = _words(reply)
    return {
        "id": "fake-" + request_key(request)[:24],
        "object": "chat.completion",
        "created": 0,
        "model": request["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


# --------------------------------------------------------------------------- openai


def _retry_policy(max_retries: int, backoff: float, max_backoff: float):
    """urllib3's Retry for a chat request: POST retried on connection errors, timeouts, 429 and 5xx,
    exponential backoff with jitter, ``Retry-After`` honoured but never past ``max_backoff``."""
    from urllib3.util.retry import Retry

    class CappedRetry(Retry):
        def parse_retry_after(self, retry_after: str) -> float:
            try:  # servers send fractions too ("0.5"), which urllib3 alone refuses
                seconds = float(retry_after)
            except ValueError:
                seconds = super().parse_retry_after(retry_after)
            return max(0.0, min(seconds, self.backoff_max))

    return CappedRetry(
        total=max_retries,
        connect=max_retries,
        read=max_retries,
        status=max_retries,
        other=0,
        allowed_methods=None,
        status_forcelist=RETRIED_STATUSES,
        backoff_factor=backoff,
        backoff_max=max_backoff,
        backoff_jitter=backoff,
        respect_retry_after_header=True,
        raise_on_status=False,
    )


def openai_provider(request: dict, config: dict) -> dict:
    """``POST {base_url}/chat/completions`` on any OpenAI-compatible endpoint, with retries.

    Config: ``base_url``, ``api_key_env`` (the key goes in ``Authorization: Bearer``),
    ``timeout`` (seconds per attempt, default 60), ``max_retries`` (default 4),
    ``backoff`` (base delay, default 0.5 s, doubled per retry, with jitter) and
    ``max_backoff`` (cap of a delay and of ``Retry-After``, default 30 s).
    """
    import requests
    from requests.adapters import HTTPAdapter

    base_url = str(config.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
    url = f"{base_url}/chat/completions"
    timeout = float(config.get("timeout") or DEFAULT_TIMEOUT)
    max_retries = int(config.get("max_retries", DEFAULT_MAX_RETRIES))
    attempts = max_retries + 1
    retry = _retry_policy(
        max_retries,
        float(config.get("backoff", DEFAULT_BACKOFF)),
        float(config.get("max_backoff", DEFAULT_MAX_BACKOFF)),
    )

    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    key_env = config.get("api_key_env")
    if key_env:
        key = os.environ.get(key_env)
        if not key:
            raise LLMError(f"kit.llm: provider openai: the environment variable {key_env!r} (api_key_env) is not set")
        api.declare_secret(key_env)  # kit redacts its value from everything it keeps
        headers["Authorization"] = f"Bearer {key}"

    body: dict[str, Any] = {"model": request["model"], "messages": request["messages"], **request["params"]}
    if request.get("tools") is not None:
        body["tools"] = request["tools"]

    where = f"kit.llm: provider openai, POST {url}"
    with requests.Session() as session:
        session.mount("http://", HTTPAdapter(max_retries=retry))
        session.mount("https://", HTTPAdapter(max_retries=retry))
        try:
            resp = session.post(url, data=json.dumps(body).encode(), headers=headers, timeout=timeout)
        except requests.exceptions.RequestException as exc:
            reason = _reason(exc, timeout)
            raise LLMError(
                f"{where}: {reason}; gave up after {attempts} attempt{'s' if attempts > 1 else ''}"
            ) from None
    tried = len(resp.raw.retries.history) + 1 if getattr(resp.raw, "retries", None) else 1
    if resp.status_code >= 400:
        problem = f"HTTP {resp.status_code}: {resp.text[:200]!r}"
        if resp.status_code in RETRIED_STATUSES:
            raise LLMError(f"{where}: {problem}; gave up after {tried} attempt{'s' if tried > 1 else ''}")
        raise LLMError(f"{where}: {problem} (not retried; attempt {tried} of {attempts})")
    try:
        response = resp.json()
    except ValueError:
        raise LLMError(f"{where}: the response is not JSON: {resp.text[:200]!r}") from None
    if not isinstance(response, dict) or ("error" in response and "choices" not in response):
        raise LLMError(f"{where}: an error response: {json.dumps(response)[:200]}")
    return response


def _reason(exc: Exception, timeout: float) -> str:
    """What went wrong, in a few words, from requests' and urllib3's nested exceptions."""
    import requests

    if isinstance(exc, requests.exceptions.Timeout):
        return f"timed out after {timeout:g}s"
    inner = exc.args[0] if exc.args else exc
    reason = getattr(inner, "reason", inner)
    text = str(reason)
    return f"{type(reason).__name__}: {text}" if text else type(reason).__name__
