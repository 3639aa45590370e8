"""LLM calls from a step notebook: ``kit.llm.chat(messages, model=None, **params) -> str``.

Runs inside the kernel, like the rest of the notebook API. A call goes to the
provider named in the workflow's ``model`` component; under kit every call is
spooled (request, response, usage, latency) and timed as a span with OpenTelemetry
GenAI attributes; recordings make steps replayable without the network.

Configuration
-------------
``KIT_LLM_CONFIG``
    JSON of the model component, environment overrides merged (the coordinator sets
    it). Fields: ``provider`` (required), ``model``, ``base_url``, ``api_key_env``
    (the *name* of the variable holding the key), ``params`` (default sampling
    parameters), ``timeout`` (seconds per HTTP attempt, default 60),
    ``max_retries`` (default 4), ``backoff`` (base delay in seconds, default 0.5,
    doubled per retry, with jitter) and ``max_backoff`` (cap for a delay and for
    ``Retry-After``, default 30). Standalone (unset), ``workflow.yaml`` in the
    working directory is read and its ``components.model.path`` YAML used; without
    one the config is ``{provider: fake, model: fake}``.
``KIT_LLM_MODE``
    ``live`` (default), ``record`` (live; the coordinator keeps the spooled calls
    as recordings) or ``replay`` (serve recordings only, never the network; a
    request without a recording raises `ReplayMiss`).
``KIT_LLM_RECORDINGS``
    The recordings served in replay: a JSON-lines file of
    ``{"key", "request", "response"}``. Unset or absent means no recordings.
``KIT_STEP``
    The step's name, used in error messages.
``KIT_SPOOL``
    The step's spool (see `kit.api`). Each call appends a line to
    ``llm_calls.jsonl`` and a span (``name`` "chat", ``kind`` "llm") to
    ``spans.jsonl``. Message content is never in a span's attributes. Standalone
    nothing is written.

The request and its key
-----------------------
`canonical_request` builds ``{"provider", "model", "messages", "tools", "params"}``
(``params``: the component's ``params`` overlaid with the call's, the call winning;
``tools`` taken out of them; ``None`` values dropped). `request_key` is the sha256
of its canonical JSON (sorted keys, no spaces). The API key is only ever an HTTP
header: it never enters a request, a recording, a span or the spool.

Providers
---------
``openai``: any OpenAI-compatible endpoint, ``POST {base_url}/chat/completions``
(``base_url`` defaults to ``https://api.openai.com/v1``); the key, if
``api_key_env`` names one, is sent as ``Authorization: Bearer``. Timeouts,
connection errors, 429 and 5xx are retried with exponential backoff and jitter
(honouring ``Retry-After``, capped) up to ``max_retries`` times; any other 4xx
fails at once. Either way the `LLMError` names the provider, the URL, the status,
the start of the body and the attempts.

``fake``: deterministic and offline. The reply is the first two sentences of the
last user message (cut to ``max_tokens`` words when given, with finish reason
``length``); usage counts are word counts.

Plugins: an entry point in the group ``kit.llm_providers`` (or `register_provider`
in-process) resolves to a callable::

    def provider(request: dict, config: dict) -> dict

``request`` is the canonical request above; ``config`` the model config (no secret
values: read a key from the variable ``config["api_key_env"]`` names). It returns
an OpenAI-shaped chat completion: ``{"id", "model", "choices": [{"index": 0,
"message": {"role": "assistant", "content": ...}, "finish_reason": ...}],
"usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}``. It raises
`LLMError` for a failure it has already reported clearly; any other exception is
wrapped in one.

Kept to the standard library, and cheap to import: ``urllib``, ``difflib`` and
``yaml`` are imported only when used.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from kit import api

CONFIG_ENV = "KIT_LLM_CONFIG"
MODE_ENV = "KIT_LLM_MODE"
RECORDINGS_ENV = "KIT_LLM_RECORDINGS"
STEP_ENV = "KIT_STEP"
MODES = ("live", "record", "replay")
ENTRY_POINT_GROUP = "kit.llm_providers"
CALLS_FILE = "llm_calls.jsonl"

DEFAULT_CONFIG: dict[str, Any] = {"provider": "fake", "model": "fake"}
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 4
DEFAULT_BACKOFF = 0.5
DEFAULT_MAX_BACKOFF = 30.0
MAX_DIFF_LINES = 40

#: Sampling parameters mirrored on the span, by their GenAI attribute name.
_SPAN_PARAMS = {
    "temperature": "gen_ai.request.temperature",
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "seed": "gen_ai.request.seed",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "n": "gen_ai.request.choice.count",
}


class LLMError(Exception):
    """An LLM call failed: a bad config, an endpoint error, a provider's failure."""


class ReplayMiss(LLMError):
    """Replay mode, and no recording matches the request."""


Provider = Callable[[dict, dict], dict]
_registered: dict[str, Provider] = {}
_plugin_cache: dict[str, Provider] = {}


def register_provider(name: str, provider: Provider) -> None:
    """Make `provider` available under `name` in this process (ahead of entry points)."""
    _registered[name] = provider


# --------------------------------------------------------------------------- config


def load_config() -> dict[str, Any]:
    """The model config: ``KIT_LLM_CONFIG``, else the standalone workflow's model component, else fake."""
    raw = os.environ.get(CONFIG_ENV)
    if raw:
        try:
            config = json.loads(raw)
        except ValueError as exc:
            raise LLMError(f"kit.llm: {CONFIG_ENV} is not valid JSON: {exc}") from None
        source = CONFIG_ENV
    else:
        config, source = _standalone_config()
    if not isinstance(config, dict):
        raise LLMError(f"kit.llm: the model config ({source}) must be a mapping, got {type(config).__name__}")
    config = dict(config)
    if "api_key" in config:
        raise LLMError(
            f"kit.llm: the model config ({source}) holds an api_key; keep the key in an environment "
            "variable and name that variable in `api_key_env`"
        )
    if not config.get("provider"):
        raise LLMError(f"kit.llm: the model config ({source}) names no provider (e.g. `provider: openai`)")
    params = config.get("params")
    if params is None:
        config["params"] = {}
    elif not isinstance(params, dict):
        raise LLMError(f"kit.llm: the model config ({source}): params must be a mapping, got {params!r}")
    return config


def config_from_component(path: str | os.PathLike, overrides: dict | None = None) -> dict[str, Any]:
    """The model component's YAML with an environment's overrides merged (``params`` key by key).

    For the coordinator, which puts ``json.dumps`` of the result in ``KIT_LLM_CONFIG``.
    """
    import yaml

    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise LLMError(f"kit.llm: cannot read the model component {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise LLMError(f"kit.llm: cannot read the model component {path}: {exc}") from None
    if not isinstance(config, dict):
        raise LLMError(f"kit.llm: the model component {path} must be a mapping, got {type(config).__name__}")
    merged = dict(config)
    for name, value in (overrides or {}).items():
        if name == "params" and isinstance(value, dict) and isinstance(merged.get("params"), dict):
            merged["params"] = {**merged["params"], **value}
        else:
            merged[name] = value
    return merged


def _standalone_config() -> tuple[Any, str]:
    manifest = Path("workflow.yaml")
    if not manifest.is_file():
        return dict(DEFAULT_CONFIG), "default"
    import yaml

    try:
        spec = yaml.safe_load(manifest.read_text()) or {}
    except yaml.YAMLError as exc:
        raise LLMError(f"kit.llm: cannot read {manifest.resolve()}: {exc}") from None
    components = spec.get("components") if isinstance(spec, dict) else None
    model = components.get("model") if isinstance(components, dict) else None
    path = model.get("path") if isinstance(model, dict) else None
    if not path:
        return dict(DEFAULT_CONFIG), "default"
    target = Path(path)
    if not target.is_file():
        raise LLMError(
            f"kit.llm: workflow.yaml's model component names {path!r}, which is not a file "
            f"(working directory {os.getcwd()})"
        )
    return config_from_component(target), str(target)


def _mode() -> str:
    mode = (os.environ.get(MODE_ENV) or "live").strip().lower()
    if mode not in MODES:
        raise LLMError(f"kit.llm: {MODE_ENV}={mode!r}; expected one of {', '.join(MODES)}")
    return mode


def _step() -> str | None:
    return os.environ.get(STEP_ENV) or None


# --------------------------------------------------------------------------- requests and keys


def _jsonable(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise LLMError(f"kit.llm: {what} must be JSON values: {exc}") from None


def canonical_request(provider: str, model: str, messages: Any, params: dict | None = None) -> dict:
    """The request as recorded and keyed: provider, model, messages, tools and sampling params."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if not isinstance(messages, (list, tuple)) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages
    ):
        raise LLMError(
            "kit.llm: messages must be a list of {'role': ..., 'content': ...} dicts (or one string), "
            f"got {messages!r:.200}"
        )
    params = {k: v for k, v in (params or {}).items() if v is not None}
    tools = params.pop("tools", None)
    return {
        "provider": str(provider),
        "model": str(model),
        "messages": _jsonable(list(messages), "messages"),
        "tools": _jsonable(tools, "tools"),
        "params": _jsonable(params, "sampling parameters"),
    }


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_key(request: dict) -> str:
    """sha256 (hex) of the canonical JSON of the request's provider, model, messages, tools and params."""
    core = {k: request.get(k) for k in ("provider", "model", "messages", "tools", "params")}
    core["params"] = core["params"] or {}
    return hashlib.sha256(_canonical_json(core).encode()).hexdigest()


# --------------------------------------------------------------------------- the call


def chat(messages: Any, model: str | None = None, **params: Any) -> str:
    """One chat completion; the reply's text (``""`` when the reply has no text, e.g. only tool calls)."""
    return response_text(complete(messages, model=model, **params))


def complete(messages: Any, model: str | None = None, **params: Any) -> dict:
    """One chat completion; the whole OpenAI-shaped response (for tool calls, several choices, ...)."""
    config = load_config()
    mode = _mode()
    provider = str(config["provider"])
    model = model or config.get("model")
    if not model:
        raise LLMError(f"kit.llm: no model: pass model= or set `model` in the model config (provider {provider})")
    request = canonical_request(provider, model, messages, {**config["params"], **params})
    key = request_key(request)
    call_id = uuid.uuid4().hex
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": request["model"],
    }
    for name, attr in _SPAN_PARAMS.items():
        if name in request["params"]:
            attrs[attr] = request["params"][name]
    stop = request["params"].get("stop")
    if stop is not None:
        attrs["gen_ai.request.stop_sequences"] = stop if isinstance(stop, list) else [stop]
    if provider == "openai":
        attrs.update(_server_attributes(config))
    attrs.update({"kit.llm.call_id": call_id, "kit.llm.key": key, "kit.llm.mode": mode})

    with api.span("chat", kind="llm", **attrs) as span_attrs:
        t0 = time.perf_counter()
        if mode == "replay":
            response = _replay(request, key)
            replayed = True
        else:
            response = _call_provider(provider, request, config)
            replayed = False
        latency_ms = round((time.perf_counter() - t0) * 1000, 3)
        usage = _usage(response)
        span_attrs.update(_response_attributes(response, usage))
        span_attrs["kit.llm.replayed"] = replayed
        span_attrs["latency_ms"] = latency_ms
        api._append_jsonl(
            CALLS_FILE,
            {
                "call_id": call_id,
                "key": key,
                "provider": provider,
                "model": request["model"],
                "mode": mode,
                "request": request,
                "response": response,
                "replayed": replayed,
                "latency_ms": latency_ms,
                "usage": usage,
            },
        )
    return response


def response_text(response: dict) -> str:
    """The first choice's text from an OpenAI-shaped response."""
    try:
        content = response["choices"][0]["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise LLMError(f"kit.llm: the response has no choices[0].message: {json.dumps(response)[:200]}") from None
    if content is None:
        return ""
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def _usage(response: dict) -> dict[str, int | None]:
    raw = response.get("usage") if isinstance(response, dict) else None
    raw = raw if isinstance(raw, dict) else {}
    inp = raw.get("prompt_tokens", raw.get("input_tokens"))
    out = raw.get("completion_tokens", raw.get("output_tokens"))
    total = raw.get("total_tokens")
    if total is None and inp is not None and out is not None:
        total = inp + out
    return {"input_tokens": inp, "output_tokens": out, "total_tokens": total}


def _response_attributes(response: dict, usage: dict) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if response.get("model") is not None:
        attrs["gen_ai.response.model"] = response["model"]
    if response.get("id") is not None:
        attrs["gen_ai.response.id"] = response["id"]
    choices = response.get("choices") or []
    attrs["gen_ai.response.finish_reasons"] = [
        c.get("finish_reason") for c in choices if isinstance(c, dict) and c.get("finish_reason") is not None
    ]
    if usage["input_tokens"] is not None:
        attrs["gen_ai.usage.input_tokens"] = usage["input_tokens"]
    if usage["output_tokens"] is not None:
        attrs["gen_ai.usage.output_tokens"] = usage["output_tokens"]
    return attrs


def _server_attributes(config: dict) -> dict[str, Any]:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(config.get("base_url") or DEFAULT_BASE_URL)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return {}
    return {"server.address": parts.hostname, "server.port": port} if parts.hostname else {}


def _call_provider(provider: str, request: dict, config: dict) -> dict:
    fn = _provider(provider)
    try:
        response = fn(request, config)
    except LLMError:
        raise
    except Exception as exc:  # a plugin's own failure, made readable
        raise LLMError(f"kit.llm: provider {provider!r} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(response, dict) or not isinstance(response.get("choices"), list):
        raise LLMError(
            f"kit.llm: provider {provider!r} returned {type(response).__name__}, "
            "expected an OpenAI-shaped response dict with 'choices'"
        )
    return response


def _provider(name: str) -> Provider:
    if name in _registered:
        return _registered[name]
    if name == "openai":
        return openai_provider
    if name == "fake":
        return fake_provider
    if name in _plugin_cache:
        return _plugin_cache[name]
    from importlib.metadata import entry_points

    try:
        eps = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    except Exception as exc:  # noqa: BLE001 - a broken environment reads as an unknown provider
        eps, listing_error = {}, f" (listing entry points failed: {exc})"
    else:
        listing_error = ""
    if name not in eps:
        known = ", ".join(sorted({"openai", "fake", *_registered, *eps}))
        raise LLMError(
            f"kit.llm: unknown provider {name!r}; known providers: {known}{listing_error}. "
            f"A plugin registers one in the entry point group {ENTRY_POINT_GROUP!r}."
        )
    try:
        fn = eps[name].load()
    except Exception as exc:  # noqa: BLE001
        raise LLMError(
            f"kit.llm: provider {name!r} could not be loaded from {eps[name].value}: {type(exc).__name__}: {exc}"
        ) from exc
    if not callable(fn):
        raise LLMError(f"kit.llm: provider {name!r} ({eps[name].value}) is not callable")
    _plugin_cache[name] = fn
    return fn


# --------------------------------------------------------------------------- providers


def _content_text(content: Any) -> str:
    if isinstance(content, list):  # content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _last_user_text(messages: list) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def _words(text: str) -> int:
    return len(text.split())


def fake_provider(request: dict, config: dict) -> dict:
    """Deterministic, offline: the first two sentences of the last user message."""
    import re

    text = " ".join(_last_user_text(request["messages"]).split())
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if s]
    reply = " ".join(sentences[:2])
    finish = "stop"
    limit = request["params"].get("max_tokens") or request["params"].get("max_completion_tokens")
    if isinstance(limit, int) and limit >= 0 and _words(reply) > limit:
        reply = " ".join(reply.split()[:limit])
        finish = "length"
    prompt_tokens = sum(_words(_content_text(m.get("content"))) for m in request["messages"])
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


def _retry_after(value: str | None, cap: float) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, min(seconds, cap))


def openai_provider(request: dict, config: dict) -> dict:
    """``POST {base_url}/chat/completions`` on any OpenAI-compatible endpoint, with retries."""
    import random
    import socket
    import urllib.error
    import urllib.request
    from http.client import HTTPException

    base_url = str(config.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
    url = f"{base_url}/chat/completions"
    timeout = float(config.get("timeout") or DEFAULT_TIMEOUT)
    max_retries = int(config.get("max_retries", DEFAULT_MAX_RETRIES))
    backoff = float(config.get("backoff", DEFAULT_BACKOFF))
    max_backoff = float(config.get("max_backoff", DEFAULT_MAX_BACKOFF))

    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    key_env = config.get("api_key_env")
    if key_env:
        key = os.environ.get(key_env)
        if not key:
            raise LLMError(
                f"kit.llm: provider openai: the environment variable {key_env!r} (api_key_env) is not set"
            )
        api._append_jsonl("secrets.jsonl", {"name": key_env})  # kit redacts its value from what it keeps
        headers["Authorization"] = f"Bearer {key}"

    body: dict[str, Any] = {"model": request["model"], "messages": request["messages"], **request["params"]}
    if request.get("tools") is not None:
        body["tools"] = request["tools"]
    data = json.dumps(body).encode()

    attempts = max_retries + 1
    for attempt in range(1, attempts + 1):
        problem: str
        wait: float | None = None
        try:
            req = urllib.request.Request(url, data=data, headers=headers, method="POST")
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
            try:
                text = exc.read().decode("utf-8", "replace")
            except Exception:  # noqa: BLE001
                text = ""
            problem = f"HTTP {status}: {text[:200]!r}"
            if status != 429 and status < 500:
                raise LLMError(
                    f"kit.llm: provider openai, POST {url}: {problem} (not retried; attempt {attempt} of {attempts})"
                ) from None
            wait = _retry_after(exc.headers.get("Retry-After") if exc.headers else None, max_backoff)
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            problem = f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
            if isinstance(reason, (socket.timeout, TimeoutError)):
                problem = f"timed out after {timeout:g}s"
        else:
            try:
                response = json.loads(raw)
            except ValueError:
                raise LLMError(
                    f"kit.llm: provider openai, POST {url}: the response is not JSON: "
                    f"{raw[:200].decode('utf-8', 'replace')!r}"
                ) from None
            if not isinstance(response, dict) or "error" in response and "choices" not in response:
                raise LLMError(
                    f"kit.llm: provider openai, POST {url}: an error response: {json.dumps(response)[:200]}"
                )
            return response
        if attempt == attempts:
            raise LLMError(
                f"kit.llm: provider openai, POST {url}: {problem}; gave up after {attempts} "
                f"attempt{'s' if attempts > 1 else ''}"
            )
        if wait is None:
            wait = min(max_backoff, backoff * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
        time.sleep(wait)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- replay


_recordings_cache: dict[str, tuple[tuple[int, int], dict[str, dict]]] = {}


def _read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file; blank and torn (unparseable) lines are skipped."""
    records = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    records.append(record)
    except FileNotFoundError:
        return []
    return records


def load_recordings(path: str | os.PathLike | None = None) -> dict[str, dict]:
    """Recordings by key, from `path` or ``KIT_LLM_RECORDINGS`` (empty when unset or absent)."""
    path = path or os.environ.get(RECORDINGS_ENV)
    if not path:
        return {}
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return {}
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _recordings_cache.get(str(path))
    if cached and cached[0] == stamp:
        return cached[1]
    found: dict[str, dict] = {}
    for record in _read_jsonl(path):
        if not isinstance(record.get("request"), dict) or not isinstance(record.get("response"), dict):
            continue
        key = record.get("key") or request_key(record["request"])
        found.setdefault(key, record)
    _recordings_cache[str(path)] = (stamp, found)
    return found


def _replay(request: dict, key: str) -> dict:
    recordings = load_recordings()
    if key in recordings:
        return recordings[key]["response"]
    raise ReplayMiss(_miss_message(request, key, recordings))


def _pretty(request: dict) -> str:
    """The request as JSON, with message text broken into lines so a diff shows where it differs."""
    import textwrap

    lines = []
    for line in json.dumps(request, sort_keys=True, indent=2, ensure_ascii=False).splitlines():
        stripped = line.lstrip()
        if len(line) <= 100 or not stripped.startswith('"content": "'):
            lines.append(line)
            continue
        indent = " " * (len(line) - len(stripped))
        body = stripped[len('"content": '):]
        lines.append(f'{indent}"content":')
        lines += textwrap.wrap(body, 88, initial_indent=indent + "  ", subsequent_indent=indent + "  ",
                               break_on_hyphens=False, drop_whitespace=False)
    return "\n".join(lines)


def nearest_diff(request: dict, recordings: dict[str, dict], max_lines: int = MAX_DIFF_LINES) -> tuple[str, float, list[str]]:
    """The recording nearest to `request`: its key, the similarity, and a unified diff (- recorded, + requested)."""
    import difflib

    mine = _pretty(request)
    candidates = []
    for rkey, record in recordings.items():
        text = _pretty(record["request"])
        candidates.append((difflib.SequenceMatcher(None, mine, text, autojunk=False).quick_ratio(), rkey, text))
    candidates.sort(key=lambda c: c[0], reverse=True)
    best_key, best_text, best_ratio = "", "", -1.0
    for _, rkey, text in candidates[:20]:  # the exact ratio on the most promising only
        ratio = difflib.SequenceMatcher(None, mine, text, autojunk=False).ratio()
        if ratio > best_ratio:
            best_key, best_text, best_ratio = rkey, text, ratio
    diff = list(difflib.unified_diff(best_text.splitlines(), mine.splitlines(), "recorded", "requested",
                                     n=2, lineterm=""))
    shown = [line if len(line) <= 240 else line[:237] + "..." for line in diff[:max_lines]]
    if len(diff) > max_lines:
        shown.append(f"... ({len(diff) - max_lines} more diff lines)")
    return best_key, best_ratio, shown


def _miss_message(request: dict, key: str, recordings: dict[str, dict]) -> str:
    step = _step()
    where = f"step {step!r}" if step else "this notebook"
    head = f"kit.llm: replay miss in {where}: no recording for this {request['provider']} request (key {key[:12]})"
    path = os.environ.get(RECORDINGS_ENV)
    if not recordings:
        if not path:
            why = f"there are no recordings at all ({RECORDINGS_ENV} is not set)"
        elif not Path(path).exists():
            why = f"there are no recordings at all ({path} does not exist)"
        else:
            why = f"there are no recordings at all ({path} holds none)"
        return f"{head}; {why}. Record the calls first (KIT_LLM_MODE=record, e.g. through `kit capture`)."
    best_key, best_ratio, shown = nearest_diff(request, recordings)
    return (
        f"{head} among {len(recordings)} recording{'s' if len(recordings) != 1 else ''} in {path}.\n"
        f"The nearest recording (key {best_key[:12]}, similarity {best_ratio:.2f}) differs "
        f"(- recorded, + requested):\n" + "\n".join(shown)
    )


# --------------------------------------------------------------------------- coordinator side


def store_calls(spool: str | os.PathLike) -> list[dict]:
    """The calls a step spooled, in order (``<spool>/llm_calls.jsonl``; a torn last line is skipped)."""
    return _read_jsonl(Path(spool) / CALLS_FILE)


def write_recordings(calls: list[dict], path: str | os.PathLike) -> int:
    """Append the calls as recordings (key, request, response) to `path`, once per key; the number written."""
    path = Path(path)
    seen = set(load_recordings(path)) if path.exists() else set()
    lines = []
    for call in calls:
        request, response = call.get("request"), call.get("response")
        if not isinstance(request, dict) or not isinstance(response, dict):
            continue
        key = call.get("key") or request_key(request)
        if key in seen:
            continue
        seen.add(key)
        lines.append(json.dumps({"key": key, "request": request, "response": response}, sort_keys=True, ensure_ascii=False))
    if not lines:
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = ""
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                prefix = "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(prefix + "\n".join(lines) + "\n")
    return len(lines)
