"""A run's spans as OpenTelemetry traces over OTLP/HTTP (DESIGN sections 7 and 13).

`kit export otlp RUN... --endpoint URL [--with-content]`, and `kit run --export-otlp URL`
at the end of a run. The spans the ledger recorded are rebuilt as OpenTelemetry spans
and sent by the OpenTelemetry SDK's own OTLP/HTTP exporter, so any receiver takes them
(an OpenTelemetry Collector, Jaeger, Phoenix, Langfuse):

- **One trace per run.** Its trace id is derived from the run id (sha256), so sending
  a run twice gives the same trace; span ids are the ledger's own (64 bits already),
  parents as in the ledger: the run, its steps' attempts, then cells, LLM calls, tool
  calls and the notebook's own spans. A run without a run span (still running, or its
  coordinator was killed) gets one made from its record.
- **Kinds, times, statuses.** LLM calls are ``CLIENT`` spans named
  ``chat {gen_ai.request.model}`` with the GenAI attributes the kernel recorded
  (`gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`,
  `gen_ai.usage.*`, ...); tool calls (kind ``tool``) are ``INTERNAL`` spans named
  ``execute_tool {name}`` with ``gen_ai.operation.name = execute_tool`` and
  ``gen_ai.tool.name``; the rest are ``INTERNAL``. ``ok``/``succeeded`` is ``OK``,
  ``error``/``failed`` is ``ERROR`` (a failed step carries an ``exception`` event with
  its error), anything else (cancelled, waiting) is left ``UNSET`` with
  ``kit.status``. Every span carries ``kit.run_id``, ``kit.span.kind`` and its step.
- **Content by reference.** An LLM span names its request and response as an artifact
  (``kit.llm.content``); only with ``--with-content`` are the messages read from the
  object store (re-hashed) and sent as ``gen_ai.input.messages``,
  ``gen_ai.output.messages`` and ``gen_ai.system_instructions``, redacted by the
  workflow's ``policy.redact`` through `kit.spec.policy.Redactor`.
- **Resource.** ``service.name`` is the workflow, ``service.version`` its version,
  ``service.instance.id`` the run id, and ``kit.workflow``, ``kit.workflow.version``,
  ``kit.bundle_id``, ``kit.env`` name the run.

An endpoint given without a path gets OTLP's ``/v1/traces``. A receiver that refuses,
fails or does not answer within the timeout is an `ExportFailed` (exit 1) quoting what
the exporter said; nothing in the ledger changes either way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from kit.errors import KitError
from kit.ledger.history import History
from kit.ledger.ledger import Ledger
from kit.ledger.objects import ObjectStore
from kit.spec.policy import Redactor

TRACES_PATH = "/v1/traces"
BATCH = 512  # spans per request
DEFAULT_TIMEOUT = 10.0  # seconds
SCOPE = "kit"
_EXPORTER_LOGGERS = ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "opentelemetry.exporter.otlp")


class ExportFailed(KitError):
    """The receiver refused the spans, failed, or did not answer (exit 1)."""


@dataclass
class Exported:
    runs: list[str] = field(default_factory=list)
    spans: int = 0
    endpoint: str = ""
    warnings: list[str] = field(default_factory=list)


def traces_url(endpoint: str) -> str:
    """OTLP/HTTP's traces URL: an endpoint without a path gets ``/v1/traces``; one with a path is kept."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        from kit.errors import InvalidInput

        raise InvalidInput(f"--endpoint {endpoint}: expected an http:// or https:// URL of an OTLP/HTTP receiver")
    if parts.path in ("", "/"):
        return endpoint.rstrip("/") + TRACES_PATH
    return endpoint


def trace_id_of(run_id: str) -> int:
    """A run's trace id: 128 bits of sha256 over the run id (never zero)."""
    return int.from_bytes(hashlib.sha256(f"kit-trace/{run_id}".encode()).digest()[:16], "big") or 1


def span_id_of(span_id: str) -> int:
    """The ledger's span id (16 hex digits) as OpenTelemetry's 64 bits; anything else hashed to 64 bits."""
    try:
        if len(span_id) == 16:
            value = int(span_id, 16)
            if value:
                return value
    except ValueError:
        pass
    return int.from_bytes(hashlib.sha256(f"kit-span/{span_id}".encode()).digest()[:8], "big") or 1


def _nanos(moment: Any) -> int | None:
    """A ledger time (naive UTC datetime, or its ISO text) as nanoseconds since the epoch."""
    if moment is None:
        return None
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment)
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _attribute(value: Any) -> Any:
    """An attribute value OpenTelemetry takes: a primitive, a list of one primitive type, else JSON text."""
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)) and value:
        kinds = {type(v) for v in value}
        if len(kinds) == 1 and kinds <= {str, bool, int, float}:
            return list(value)
    return json.dumps(value, default=str, ensure_ascii=False, sort_keys=True)


def _attributes(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _attribute(v) for k, v in values.items() if v is not None}


# ---- building the spans -------------------------------------------------------------------------


def _redactor_of(ledger: Ledger, store: ObjectStore, run: dict[str, Any]) -> Redactor:
    """The run's `policy.redact`, from its bundle's manifest as snapshotted (else none)."""
    import yaml

    lock = ledger.bundle_lock(run.get("bundle_id") or "") or {}
    manifest = (lock.get("files") or {}).get(lock.get("manifest", "workflow.yaml"))
    patterns: list[str] = []
    if manifest:
        try:
            spec = yaml.safe_load(store.read_bytes(manifest)) or {}
            patterns = list(((spec.get("policy") or {}).get("redact")) or [])
        except (KitError, yaml.YAMLError, AttributeError):
            patterns = []
    return Redactor(patterns)


def _parts(content: Any) -> list[dict[str, Any]]:
    """A message's content as GenAI message parts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if isinstance(content, list):
        return [
            {"type": "text", "content": p.get("text", "")}
            if isinstance(p, dict) and "text" in p
            else {"type": "json", "content": p}
            for p in content
        ]
    return [{"type": "json", "content": content}]


def _content_attributes(body: dict[str, Any], redactor: Redactor) -> dict[str, Any]:
    """GenAI's message attributes (JSON text) from a recorded call, redacted: system instructions,
    input messages (with the tool calls of assistant turns), output messages."""
    request = body.get("request") or {}
    response = body.get("response") or {}
    system, inputs = [], []
    for message in request.get("messages") or []:
        if message.get("role") == "system":
            system.extend(_parts(message.get("content")))
            continue
        parts = _parts(message.get("content"))
        for call in message.get("tool_calls") or []:
            fn = call.get("function") or {}
            parts.append(
                {"type": "tool_call", "id": call.get("id"), "name": fn.get("name"), "arguments": fn.get("arguments")}
            )
        if message.get("role") == "tool":
            parts = [
                {"type": "tool_call_response", "id": message.get("tool_call_id"), "response": message.get("content")}
            ]
        inputs.append({"role": message.get("role"), "parts": parts})
    outputs = []
    for choice in response.get("choices") or []:
        message = choice.get("message") or {}
        parts = _parts(message.get("content"))
        for call in message.get("tool_calls") or []:
            fn = call.get("function") or {}
            parts.append(
                {"type": "tool_call", "id": call.get("id"), "name": fn.get("name"), "arguments": fn.get("arguments")}
            )
        outputs.append(
            {"role": message.get("role", "assistant"), "parts": parts, "finish_reason": choice.get("finish_reason")}
        )
    out = {
        "gen_ai.input.messages": redactor.value(inputs),
        "gen_ai.output.messages": redactor.value(outputs),
    }
    if system:
        out["gen_ai.system_instructions"] = redactor.value(system)
    if request.get("tools"):
        out["gen_ai.tool.definitions"] = redactor.value(request["tools"])
    return {k: json.dumps(v, ensure_ascii=False, default=str) for k, v in out.items()}


def run_spans(ledger: Ledger, store: ObjectStore, run_id: str, with_content: bool = False) -> tuple[list, list[str]]:
    """The run's spans as OpenTelemetry `ReadableSpan`s (one trace), and warnings (content that could not be read)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    from kit.base.version import __version__ as kit_version

    run = ledger.run(run_id)
    if run is None:
        from kit.errors import NotFound

        raise NotFound(f"no run {run_id!r} in {ledger.path}")
    rows = History(ledger).spans(run_id)
    steps = {s["step_id"]: s for s in ledger.steps(run_id)}
    resource = Resource.create(
        _attributes(
            {
                "service.name": run["workflow"],
                "service.version": run["version"],
                "service.instance.id": run_id,  # stable: the same run sent twice is the same telemetry
                "kit.workflow": run["workflow"],
                "kit.workflow.version": run["version"],
                "kit.bundle_id": run["bundle_id"],
                "kit.env": run.get("env"),
                "kit.version": kit_version,
            }
        )
    )
    scope = InstrumentationScope(SCOPE, kit_version)
    trace_id = trace_id_of(run_id)
    redactor = _redactor_of(ledger, store, run) if with_content else None
    warnings: list[str] = []

    if not any(r["kind"] == "run" for r in rows):  # a run the coordinator never closed: its root from the record
        ids = {r["span_id"] for r in rows}
        orphans = {r["parent_id"] for r in rows if r["parent_id"] and r["parent_id"] not in ids}
        rows.insert(
            0,
            {
                "span_id": next(iter(orphans)) if len(orphans) == 1 else "run:" + run_id,
                "parent_id": None,
                "step_id": None,
                "name": run["workflow"],
                "kind": "run",
                "started_at": run["started_at"],
                "ended_at": run["ended_at"] or max((r["ended_at"] for r in rows if r["ended_at"]), default=None),
                "status": run["status"],
                "attributes": {"params": run["params"]},
            },
        )

    def context(span_id: str) -> SpanContext:
        return SpanContext(trace_id, span_id_of(span_id), is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))

    spans = []
    for row in rows:
        attrs = dict(row["attributes"] or {})
        kind, name, otel_kind = row["kind"], row["name"], SpanKind.INTERNAL
        if kind == "llm":
            otel_kind = SpanKind.CLIENT
            name = f"{attrs.get('gen_ai.operation.name', 'chat')} {attrs.get('gen_ai.request.model', '')}".strip()
            if with_content and isinstance(attrs.get("kit.llm.content"), str):
                try:
                    body = json.loads(store.read_bytes(attrs["kit.llm.content"]))
                    attrs.update(_content_attributes(body, redactor))
                except (KitError, ValueError) as exc:
                    message = getattr(exc, "message", str(exc))
                    warnings.append(f"run {run_id}, step {row['step_id']}: LLM call content not sent: {message}")
        elif kind == "tool":
            attrs.setdefault("gen_ai.operation.name", "execute_tool")
            attrs.setdefault("gen_ai.tool.name", name)
            name = f"execute_tool {name}"
        attrs.update({"kit.run_id": run_id, "kit.span.kind": kind, "kit.step_id": row["step_id"]})
        if kind == "run":
            attrs.update({"kit.run.status": run["status"], "kit.principal": run.get("principal")})
            attrs.update({"kit.scenario_id": run.get("scenario_id"), "kit.engine": run.get("engine")})
            attrs["kit.executor"] = run.get("executor") or "local"
        status_text = str(row["status"] or "")
        events = []
        if status_text in ("ok", "succeeded"):
            status = Status(StatusCode.OK)
        elif status_text in ("error", "failed"):
            step = steps.get(row["step_id"]) if kind == "step" else None
            description = attrs.get("error.type") or (step or {}).get("error_type") or status_text
            status = Status(StatusCode.ERROR, str(description))
            if step and step.get("error_type"):
                events.append(
                    Event(
                        "exception",
                        _attributes(
                            {
                                "exception.type": step["error_type"],
                                "exception.message": step.get("error_message"),
                                "exception.stacktrace": step.get("traceback"),
                            }
                        ),
                        _nanos(row["ended_at"]) or _nanos(row["started_at"]),
                    )
                )
        else:
            status = Status(StatusCode.UNSET)
            attrs["kit.status"] = status_text
        start = _nanos(row["started_at"]) or _nanos(run["started_at"])
        spans.append(
            ReadableSpan(
                name=name or kind,
                context=context(row["span_id"]),
                parent=context(row["parent_id"]) if row["parent_id"] else None,
                resource=resource,
                attributes=_attributes(attrs),
                events=events,
                kind=otel_kind,
                status=status,
                start_time=start,
                end_time=_nanos(row["ended_at"]) or start,
                instrumentation_scope=scope,
            )
        )
    return spans, warnings


# ---- sending ----------------------------------------------------------------------------------


class _Said(logging.Handler):
    """What the exporter logged while sending (its reasons for failing), kept for the error message."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def export_timeout(given: float | None) -> float:
    """Seconds to wait: as given, else OpenTelemetry's ``OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`` or
    ``OTEL_EXPORTER_OTLP_TIMEOUT``, else 10."""
    if given is not None:
        return given
    for name in ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        try:
            return float(os.environ[name])
        except (KeyError, ValueError):
            continue
    return DEFAULT_TIMEOUT


def send(spans: list, endpoint: str, timeout: float | None = None, headers: dict[str, str] | None = None) -> None:
    """Send spans to an OTLP/HTTP receiver, in batches; ExportFailed quoting the exporter when it cannot."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    url = traces_url(endpoint)
    timeout = export_timeout(timeout)
    exporter = OTLPSpanExporter(endpoint=url, timeout=timeout, headers=headers)
    said = _Said()
    loggers = [logging.getLogger(name) for name in _EXPORTER_LOGGERS]
    kept = [(lg.propagate, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(said)
        lg.propagate = False
        lg.setLevel(logging.WARNING)
    try:
        for start in range(0, len(spans), BATCH):
            if exporter.export(spans[start : start + BATCH]) is not SpanExportResult.SUCCESS:
                why = "; ".join(dict.fromkeys(said.lines[-2:])) or "no reason given"
                raise ExportFailed(
                    f"OTLP export to {url} failed after {start} of {len(spans)} span(s) were sent: {why} "
                    f"(is an OTLP/HTTP receiver listening there? timeout {timeout:g}s)"
                )
    finally:
        exporter.shutdown()
        for lg, (propagate, level) in zip(loggers, kept):
            lg.removeHandler(said)
            lg.propagate, lg.level = propagate, level


def export_runs(
    ledger: Ledger,
    store: ObjectStore,
    run_ids: Iterable[str],
    endpoint: str,
    with_content: bool = False,
    timeout: float | None = None,
    headers: dict[str, str] | None = None,
) -> Exported:
    """Every span of each run, one trace per run, to `endpoint` (see the module's doc)."""
    out = Exported(endpoint=traces_url(endpoint))
    spans = []
    for run_id in run_ids:
        built, warnings = run_spans(ledger, store, run_id, with_content)
        spans.extend(built)
        out.runs.append(run_id)
        out.warnings.extend(warnings)
    send(spans, endpoint, timeout, headers)
    out.spans = len(spans)
    return out
