"""How one LLM call is made from a step: ``kit.llm.chat(messages, model=None, **params) -> str``.

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
    The step's spool (see `kit.kernel.api`). Each call appends a line to
    ``llm_calls.jsonl`` and a span (``name`` "chat", ``kind`` "llm") to
    ``spans.jsonl``. Message content is never in a span's attributes. Standalone
    nothing is written.

The request and its key
-----------------------
The call's request is canonical (`kit.kernel.recordings.canonical_request`: the
component's ``params`` overlaid with the call's, the call winning; ``tools`` taken
out of them; ``None`` values dropped) and keyed by the sha256 of its RFC 8785 JSON.
The API key is only ever an HTTP header: it never enters a request, a recording, a
span or the spool.

``kit.llm.agent`` (`kit.kernel.agent`), the bounded tool-calling loop, makes each of its model
turns through `call_model` here. ``kit.llm`` itself is the face, `kit.kernel.llm`.

Providers are in `kit.kernel.providers` (``openai``, ``fake`` and plugins of the
entry point group ``kit.llm_providers``).

Cheap to import: ``requests``, ``difflib`` and ``yaml`` are imported only when used.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from kit.kernel import api
from kit.kernel.providers import LLMError, call_provider, register_provider
from kit.kernel.recordings import RecordingError, canonical_request, load_recordings, nearest_diff, request_key

__all__ = [
    "LLMError",
    "ReplayMiss",
    "chat",
    "complete",
    "register_provider",
    "response_text",
    "load_config",
    "check_model_config",
    "config_from_component",
    "usage_of",
    "CALLS_FILE",
]

CONFIG_ENV = "KIT_LLM_CONFIG"
MODE_ENV = "KIT_LLM_MODE"
RECORDINGS_ENV = "KIT_LLM_RECORDINGS"
STEP_ENV = "KIT_STEP"
MODES = ("live", "record", "replay")
CALLS_FILE = "llm_calls.jsonl"

DEFAULT_CONFIG: dict[str, Any] = {"provider": "fake", "model": "fake"}

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


class ReplayMiss(LLMError):
    """Replay mode, and no recording matches the request."""


# --------------------------------------------------------------------------- config


def check_model_config(config: Any, source: str) -> dict[str, Any]:
    """A model config made usable (a copy, ``params`` a dict), or an `LLMError` naming `source`
    (where it came from: ``KIT_LLM_CONFIG``, a file, "the judge's model config"):
    it must be a mapping, name a provider, and hold no ``api_key`` (keys live in the environment)."""
    if isinstance(config, (str, bytes)):
        try:
            config = json.loads(config)
        except ValueError as exc:
            raise LLMError(f"kit.llm: {source} is not valid JSON: {exc}") from None
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
    else:
        config["params"] = dict(params)
    return config


def load_config() -> dict[str, Any]:
    """The model config: ``KIT_LLM_CONFIG``, else the standalone workflow's model component, else fake."""
    raw = os.environ.get(CONFIG_ENV)
    if raw:
        return check_model_config(raw, CONFIG_ENV)
    config, source = _standalone_config()
    return check_model_config(config, source)


def config_from_component(path: str | os.PathLike, overrides: dict | None = None) -> dict[str, Any]:
    """The model component's YAML with an environment's overrides merged (``params`` key by key).

    For the coordinator, which puts ``json.dumps`` of the result in ``KIT_LLM_CONFIG``.
    """
    from kit.base.yamlio import load_mapping
    from kit.errors import KitError

    try:
        config, _ = load_mapping(path, "model settings")
    except KitError as exc:
        raise LLMError(f"kit.llm: the model component: {exc.message}") from None
    merged = dict(config)
    for name, value in (overrides or {}).items():
        if name == "params" and isinstance(value, dict) and isinstance(merged.get("params"), dict):
            merged["params"] = {**merged["params"], **value}
        else:
            merged[name] = value
    return merged


def _standalone_config() -> tuple[Any, str]:
    """Outside kit: the model component named by ``workflow.yaml`` in the working directory."""
    manifest = Path("workflow.yaml")
    if not manifest.is_file():
        return dict(DEFAULT_CONFIG), "default"
    from kit.base.yamlio import load_mapping
    from kit.errors import KitError

    try:
        spec, _ = load_mapping(manifest.resolve(), "workflow fields")
    except KitError as exc:
        raise LLMError(f"kit.llm: {exc.message}") from None
    components = spec.get("components")
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


# --------------------------------------------------------------------------- the call


def chat(messages: Any, model: str | None = None, **params: Any) -> str:
    """One chat completion; the reply's text (``""`` when the reply has no text, e.g. only tool calls)."""
    return response_text(complete(messages, model=model, **params))


def complete(messages: Any, model: str | None = None, **params: Any) -> dict:
    """One chat completion; the whole OpenAI-shaped response (for tool calls, several choices, ...)."""
    return call_model(messages, model, params)[0]


def call_model(
    messages: Any, model: str | None, params: dict[str, Any], extra: dict[str, Any] | None = None
) -> tuple[dict, str]:
    """One chat completion, spooled and spanned like every call: the response and the request's key.
    `extra`: more attributes for its span (an agent's turn)."""
    config = load_config()
    mode = _mode()
    provider = str(config["provider"])
    model = model or config.get("model")
    if not model:
        raise LLMError(f"kit.llm: no model: pass model= or set `model` in the model config (provider {provider})")
    try:
        request = canonical_request(provider, model, messages, {**config["params"], **params})
    except RecordingError as exc:
        raise LLMError(str(exc)) from None
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
    attrs.update({"kit.llm.call_id": call_id, "kit.llm.key": key, "kit.llm.mode": mode, **(extra or {})})

    with api.span("chat", kind="llm", **attrs) as span_attrs:
        t0 = time.perf_counter()
        if mode == "replay":
            response = _replay(request, key)
            replayed = True
        else:
            response = call_provider(provider, request, config)
            replayed = False
        latency_ms = round((time.perf_counter() - t0) * 1000, 3)
        usage = usage_of(response)
        span_attrs.update(_response_attributes(response, usage))
        span_attrs["kit.llm.replayed"] = replayed
        span_attrs["latency_ms"] = latency_ms
        api.spool_record(
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
    return response, key


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


def usage_of(response: dict) -> dict[str, int | None]:
    """Token counts of a response, in GenAI's words (input, output, total)."""
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

    from kit.kernel.providers import DEFAULT_BASE_URL

    try:
        parts = urlsplit(config.get("base_url") or DEFAULT_BASE_URL)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return {}
    return {"server.address": parts.hostname, "server.port": port} if parts.hostname else {}


# --------------------------------------------------------------------------- replay


def _replay(request: dict, key: str) -> dict:
    recordings = load_recordings(os.environ.get(RECORDINGS_ENV))
    if key in recordings:
        return recordings[key]["response"]
    raise ReplayMiss(_miss_message(request, key, recordings))


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
