"""`kit export otlp` and `kit run --export-otlp` against a real OTLP/HTTP receiver on 127.0.0.1: a small
`http.server` that decodes each `ExportTraceServiceRequest` with opentelemetry-proto."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import opentelemetry.proto  # noqa: F401  (the receiver decodes with it)
import pytest

from tests.conftest import Project, copy_example


class Receiver:
    """An OTLP/HTTP traces receiver: POST /v1/traces, protobuf bodies, kept decoded."""

    def __init__(self, status: int = 200, delay: float = 0.0):
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        received, paths = [], []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                time.sleep(delay)
                paths.append(self.path)
                if status == 200:
                    request = ExportTraceServiceRequest()
                    request.ParseFromString(body)
                    received.append(request)
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.received, self.paths = received, paths
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self) -> list[tuple]:
        """(resource attributes, span) of every span received."""
        out = []
        for request in self.received:
            for rs in request.resource_spans:
                resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    out.extend((resource, span) for span in ss.spans)
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def attrs(span) -> dict:
    return {a.key: _value(a.value) for a in span.attributes}


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def casework(tmp_path_factory) -> Project:
    """The example with its scenarios, and one scenario run (its LLM call replayed from recordings)."""
    root = tmp_path_factory.mktemp("otlp-casework")
    project = Project(root)
    copy_example(root, scenarios=True)
    done = project.kit("test", "scenarios/casework/C-1001-missing-loyalty-discount.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    return project


def test_export_otlp_last_delivers_every_span_of_the_run_as_one_trace(casework, receiver):
    done = casework.kit("export", "otlp", "last", "--endpoint", receiver.url)
    assert done.returncode == 0, done.stderr
    ledger = casework.sql(
        "select span_id, parent_id, kind, name, status from spans where run_id = (select max(run_id) from runs)"
    )
    run = casework.sql("select run_id, workflow, version, bundle_id from runs order by run_id desc limit 1")[0]
    got = receiver.spans()
    assert receiver.paths == ["/v1/traces"]
    assert f"exported {len(ledger)} span(s) of 1 run(s)" in done.stdout
    assert len(got) == len(ledger) > 20
    assert len({span.trace_id for _, span in got}) == 1  # one trace per run
    by_id = {span.span_id.hex(): span for _, span in got}
    for row in ledger:  # parent/child as in the ledger
        span = by_id[row["span_id"]]
        assert (span.parent_span_id.hex() or None) == row["parent_id"]
        assert span.end_time_unix_nano >= span.start_time_unix_nano > 0
    resource = got[0][0]
    assert resource["service.name"] == "casework" and resource["kit.workflow"] == "casework"
    assert resource["kit.workflow.version"] == run["version"] == resource["service.version"]
    assert resource["kit.bundle_id"] == run["bundle_id"]

    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    kinds = {attrs(s)["kit.span.kind"]: s for _, s in got}
    assert set(kinds) >= {"run", "step", "cell", "llm", "retrieval"}
    llm = [s for _, s in got if attrs(s)["kit.span.kind"] == "llm"]
    assert len(llm) == 1
    call = attrs(llm[0])
    assert llm[0].kind == Span.SPAN_KIND_CLIENT and llm[0].name == "chat casework-summarizer"
    assert call["gen_ai.operation.name"] == "chat" and call["gen_ai.provider.name"] == "fake"
    assert call["gen_ai.request.model"] == "casework-summarizer"
    assert call["gen_ai.usage.input_tokens"] > 0 and call["gen_ai.usage.output_tokens"] > 0
    assert call["kit.llm.content"].startswith("artifact:sha256:")  # by reference
    assert "gen_ai.input.messages" not in call and "gen_ai.output.messages" not in call
    root = kinds["run"]
    assert not root.parent_span_id and root.status.code == Status.STATUS_CODE_OK
    assert attrs(root)["kit.run_id"] == run["run_id"] and attrs(root)["kit.executor"] == "local"
    assert all(s.kind == Span.SPAN_KIND_INTERNAL for _, s in got if attrs(s)["kit.span.kind"] != "llm")


def test_the_same_run_exported_twice_is_the_same_trace(casework, receiver):
    for _ in range(2):
        assert casework.kit("export", "otlp", "last", "--endpoint", receiver.url + "/v1/traces").returncode == 0
    first, second = receiver.received
    assert first.SerializeToString() == second.SerializeToString()


LLM_STEP = """
import kit
token = kit.secret("CASE_TOKEN")
messages = [
    {"role": "system", "content": "You summarize support cases."},
    {"role": "user", "content": f"The parcel is late. The customer quoted {token} by mistake. Say sorry."},
]
reply = kit.llm.chat(messages)
with kit.span("lookup_order", kind="tool", order_id="O-1") as s:
    s["found"] = True
kit.output("reply", reply)
"""


def llm_project(project: Project, failing: bool = True) -> Project:
    """A step asking the (fake, offline) LLM with a secret in its prompt, and, with `failing`, one failing."""
    project.notebook("ask.ipynb", "case: str = 'C-1'", LLM_STEP)
    project.notebook("bad.ipynb", "case: str = 'C-1'", "raise ValueError('the case cannot be read')")
    bad = "  bad: {notebook: bad.ipynb, after: [ask]}\n" if failing else ""
    project.manifest(
        "workflow: asker\nversion: 2.1.0\nsteps:\n  ask: {notebook: ask.ipynb, outputs: {reply: string}}\n"
        + bad
        + "policy:\n  redact: ['*token*']\n"
    )
    return project


SECRET = "sk-live-4242-abcd-secret"


def test_with_content_sends_the_messages_redacted_and_tool_calls_and_errors_as_genai_spans(project, receiver):
    llm_project(project)
    ran = project.kit("run", "wf", env={"CASE_TOKEN": SECRET, "KIT_LLM_MODE": "live"})
    assert ran.returncode == 1  # the `bad` step fails: its span is an error with an exception event
    done = project.kit("export", "otlp", "last", "--endpoint", receiver.url, "--with-content")
    assert done.returncode == 0, done.stderr
    assert "with message content (redacted)" in done.stdout
    got = [s for _, s in receiver.spans()]
    payload = b"".join(r.SerializeToString() for r in receiver.received)
    assert SECRET.encode() not in payload
    llm = [s for s in got if attrs(s)["kit.span.kind"] == "llm"][0]
    call = attrs(llm)
    inputs = json.loads(call["gen_ai.input.messages"])
    outputs = json.loads(call["gen_ai.output.messages"])
    assert inputs[0]["role"] == "user" and "[REDACTED]" in inputs[0]["parts"][0]["content"]
    assert "The parcel is late." in inputs[0]["parts"][0]["content"]
    assert outputs[0]["role"] == "assistant" and outputs[0]["finish_reason"] == "stop"
    assert json.loads(call["gen_ai.system_instructions"]) == [
        {"type": "text", "content": "You summarize support cases."}
    ]
    tool = [s for s in got if attrs(s)["kit.span.kind"] == "tool"][0]
    assert tool.name == "execute_tool lookup_order"
    assert attrs(tool)["gen_ai.operation.name"] == "execute_tool" and attrs(tool)["gen_ai.tool.name"] == "lookup_order"
    assert attrs(tool)["order_id"] == "O-1" and attrs(tool)["found"] is True

    from opentelemetry.proto.trace.v1.trace_pb2 import Status

    bad = [s for s in got if attrs(s)["kit.span.kind"] == "step" and attrs(s)["kit.step_id"] == "bad"][0]
    assert bad.status.code == Status.STATUS_CODE_ERROR and bad.status.message == "ValueError"
    event = bad.events[0]
    assert event.name == "exception" and attrs(event)["exception.message"] == "the case cannot be read"
    root = [s for s in got if attrs(s)["kit.span.kind"] == "run"][0]
    assert root.status.code == Status.STATUS_CODE_ERROR


def test_several_runs_are_several_traces(project, receiver):
    llm_project(project)
    for _ in range(2):
        project.kit("run", "wf", env={"CASE_TOKEN": SECRET})
    runs = [r["run_id"] for r in project.sql("select run_id from runs order by run_id")]
    done = project.kit("export", "otlp", *runs, "--endpoint", receiver.url)
    assert done.returncode == 0, done.stderr
    by_run = {}
    for _, span in receiver.spans():
        by_run.setdefault(attrs(span)["kit.run_id"], set()).add(span.trace_id)
    assert set(by_run) == set(runs) and all(len(t) == 1 for t in by_run.values())
    assert len({next(iter(t)) for t in by_run.values()}) == 2


def test_run_with_export_otlp_sends_the_run_when_it_ends(project, receiver):
    llm_project(project)
    done = project.kit("run", "wf", "--export-otlp", receiver.url, env={"CASE_TOKEN": SECRET})
    assert done.returncode == 1  # the run's own exit code (its `bad` step failed)
    total = project.sql("select count(*) as n from spans")[0]["n"]
    assert len(receiver.spans()) == total and "exported" in done.stdout


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_endpoint_that_refuses_is_exit_1_with_a_clear_message_and_the_run_is_unaffected(project):
    llm_project(project, failing=False)
    url = f"http://127.0.0.1:{closed_port()}"
    done = project.kit(
        "run", "wf", "--export-otlp", url, env={"CASE_TOKEN": SECRET, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "2"}
    )
    assert done.returncode == 1, done.stderr  # the run succeeded; sending it did not
    assert f"OTLP export to {url}/v1/traces failed" in done.stderr and "Traceback" not in done.stderr
    assert "is recorded as succeeded" in done.stderr
    assert project.sql("select status from runs") == [{"status": "succeeded"}]
    refused = project.kit("export", "otlp", "last", "--endpoint", url, "--timeout", "2")
    assert refused.returncode == 1, refused.stderr
    assert f"OTLP export to {url}/v1/traces failed" in refused.stderr and "Traceback" not in refused.stderr
    assert project.sql("select status from runs") == [{"status": "succeeded"}]


def test_an_endpoint_that_times_out_or_fails_is_exit_1(project):
    llm_project(project)
    project.kit("run", "wf", env={"CASE_TOKEN": SECRET})
    slow = Receiver(delay=3.0)
    failing = Receiver(status=400)
    try:
        t0 = time.monotonic()
        timed_out = project.kit("export", "otlp", "last", "--endpoint", slow.url, "--timeout", "1")
        assert timed_out.returncode == 1 and "failed" in timed_out.stderr
        assert time.monotonic() - t0 < 30
        refused = project.kit("export", "otlp", "last", "--endpoint", failing.url)
        assert refused.returncode == 1 and "400" in refused.stderr
    finally:
        slow.close()
        failing.close()


def test_bad_input(project):
    llm_project(project)
    assert project.kit("export", "otlp", "last", "--endpoint", "http://127.0.0.1:9").returncode == 2  # no runs
    project.kit("run", "wf", env={"CASE_TOKEN": SECRET})
    bad_url = project.kit("export", "otlp", "last", "--endpoint", "localhost:4318")
    assert bad_url.returncode == 2 and "expected an http:// or https:// URL" in bad_url.stderr
