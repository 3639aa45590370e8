"""A small OpenAI-compatible chat server for tests: real HTTP on 127.0.0.1, scriptable.

    def test_x(llm_server):
        llm_server.enqueue(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "0"})
        ... base_url=llm_server.base_url ...
        assert llm_server.requests[0]["headers"]["Authorization"] == "Bearer ..."

Queued responses are served first, in order; then the default answer: a chat
completion whose reply is ``echo: <last user message>`` with fixed usage counts.

For an agent, script the model's turns: each `enqueue_tool_calls` is one turn that calls
tools, `enqueue_answer` a turn that answers:

    llm_server.enqueue_tool_calls(("lookup_orders", {"customer": "C-1"}))
    llm_server.enqueue_tool_calls(("send_note", {"text": "hi"}), ("lookup_orders", "{not json"))
    llm_server.enqueue_answer("done")
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

DEFAULT_USAGE = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}


def default_reply(body: dict, n: int) -> dict:
    last = ""
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            last = str(message.get("content"))
            break
    return {
        "id": f"chatcmpl-test-{n}",
        "object": "chat.completion",
        "created": 1700000000,
        "model": f"{body.get('model')}-served",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": f"echo: {last}"}, "finish_reason": "stop"}
        ],
        "usage": dict(DEFAULT_USAGE),
    }


def completion(message: dict, finish_reason: str, usage: dict | None = None, n: int = 0) -> dict:
    """A chat completion with this assistant message."""
    return {
        "id": f"chatcmpl-scripted-{n}",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "scripted",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": dict(usage or DEFAULT_USAGE),
    }


class LLMServer:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._queue: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                with server._lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    n = len(server.requests)
                    scripted = server._queue.popleft() if server._queue else None
                if scripted is None:
                    status, payload, headers, delay = 200, default_reply(body or {}, n), {}, 0.0
                else:
                    status, payload, headers, delay = (
                        scripted["status"],
                        scripted["body"],
                        scripted["headers"],
                        scripted["delay"],
                    )
                    if payload is None:
                        payload = default_reply(body or {}, n)
                if delay:
                    time.sleep(delay)
                data = (
                    payload
                    if isinstance(payload, bytes)
                    else (payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
                )
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def enqueue(
        self, status: int = 200, body: Any = None, headers: dict[str, str] | None = None, delay: float = 0.0
    ) -> None:
        """Serve this next: `body` is a dict (JSON), str or bytes; None means the default reply."""
        with self._lock:
            self._queue.append({"status": status, "body": body, "headers": dict(headers or {}), "delay": delay})

    def enqueue_tool_calls(self, *calls: tuple[str, Any], usage: dict | None = None) -> None:
        """One turn in which the model calls these tools: (name, arguments), arguments a dict (sent as
        JSON) or a string (sent as is: malformed JSON, say). Call ids are ``call_<turn>_<i>``."""
        with self._lock:
            turn = len(self._queue) + len(self.requests) + 1
        tool_calls = [
            {
                "id": f"call_{turn}_{i}",
                "type": "function",
                "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
            }
            for i, (name, args) in enumerate(calls, 1)
        ]
        message = {"role": "assistant", "content": None, "tool_calls": tool_calls}
        self.enqueue(200, completion(message, "tool_calls", usage, turn))

    def enqueue_answer(self, text: str, usage: dict | None = None) -> None:
        """One turn in which the model answers `text`."""
        with self._lock:
            turn = len(self._queue) + len(self.requests) + 1
        self.enqueue(200, completion({"role": "assistant", "content": text}, "stop", usage, turn))

    def start(self) -> LLMServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def llm_server():
    server = LLMServer().start()
    try:
        yield server
    finally:
        server.stop()
