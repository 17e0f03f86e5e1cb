"""A small fake OpenAI-compatible HTTP server for tests that drive the real ``openai`` SDK.

Endpoints (with or without the ``/v1`` prefix):

* ``POST /chat/completions``: answers ``"Hello from fake: <last user text>"`` with
  :data:`PROMPT_TOKENS` / :data:`COMPLETION_TOKENS` usage, the response model being the requested
  one plus :data:`MODEL_SUFFIX` (as OpenAI answers ``gpt-4o-mini-2024-07-18`` to ``gpt-4o-mini``).
  With ``tools`` in the request (and no tool result yet) it answers one call of the first tool.
  ``"stream": true`` answers server-sent events, a pause of :data:`FIRST_TOKEN_DELAY_S` before the
  first content chunk, and a last chunk with usage when ``stream_options.include_usage`` is set.
* ``POST /embeddings``: one vector of :data:`EMBEDDING_DIMENSIONS` per input, float or base64
  (the SDK asks for base64 by default), with :data:`EMBEDDING_TOKENS` usage.
* model names ``fake-error-400`` / ``fake-error-429`` / ``fake-error-500`` answer that status with
  OpenAI's error shape (use ``max_retries=0`` in the client: the SDK retries 429 and 5xx).

Usage::

    with serve() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)

It listens on a free loopback port in a daemon thread; every request body is kept in
``server.requests`` (path, JSON) so a test can check what the client sent.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PROMPT_TOKENS = 21
COMPLETION_TOKENS = 9
EMBEDDING_TOKENS = 5
EMBEDDING_DIMENSIONS = 8
MODEL_SUFFIX = "-2024-07-18"
FIRST_TOKEN_DELAY_S = 0.05
ERROR_MODELS = {"fake-error-400": 400, "fake-error-429": 429, "fake-error-500": 500}
_ERROR_TYPES = {400: "invalid_request_error", 429: "rate_limit_exceeded", 500: "server_error"}


def reply_text(request: dict[str, Any]) -> str:
    """The answer the fake gives to a chat request: it echoes the last user text."""
    last = ""
    for msg in request.get("messages") or []:
        if msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, list):
                content = " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
            last = str(content)
    return f"Hello from fake: {last}"


def _usage() -> dict[str, int]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
    }


def _tool_call(request: dict[str, Any]) -> dict[str, Any] | None:
    """The tool call the fake answers with, when the request offers tools and has no tool result."""
    tools = request.get("tools") or []
    if not tools or any(m.get("role") == "tool" for m in request.get("messages") or []):
        return None
    name = tools[0].get("function", {}).get("name", "tool")
    return {"id": "call_fake_1", "type": "function", "function": {"name": name, "arguments": '{"city": "Paris"}'}}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._json(400, {"error": {"message": "invalid JSON", "type": "invalid_request_error", "code": None}})
            return
        path = self.path.removeprefix("/v1")
        self.server.fake.requests.append((path, body))
        status = ERROR_MODELS.get(str(body.get("model")))
        if status is not None:
            message = f"fake error {status} for model {body.get('model')}"
            self._json(status, {"error": {"message": message, "type": _ERROR_TYPES[status], "code": str(status)}})
        elif path == "/chat/completions":
            if body.get("stream"):
                self._stream(body)
            else:
                self._json(200, self._completion(body))
        elif path == "/embeddings":
            self._json(200, self._embeddings(body))
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", f"req_fake_{len(self.server.fake.requests)}")
        self.end_headers()
        self.wfile.write(data)

    def _completion(self, request: dict[str, Any]) -> dict[str, Any]:
        call = _tool_call(request)
        message: dict[str, Any] = {"role": "assistant", "content": None if call else reply_text(request)}
        if call:
            message["tool_calls"] = [call]
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": f"{request.get('model')}{MODEL_SUFFIX}",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if call else "stop"}],
            "usage": _usage(),
            "system_fingerprint": "fp_fake",
        }

    def _stream(self, request: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        model = f"{request.get('model')}{MODEL_SUFFIX}"
        base = {"id": "chatcmpl-fake-stream", "object": "chat.completion.chunk", "created": int(time.time())}
        base["model"] = model
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))

        def send(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> None:
            chunk = {**base, "choices": choices, "usage": usage}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()

        send([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        time.sleep(FIRST_TOKEN_DELAY_S)
        words = reply_text(request).split(" ")
        for i, word in enumerate(words):
            send([{"index": 0, "delta": {"content": word if i == 0 else " " + word}, "finish_reason": None}])
        send([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if include_usage:
            send([], _usage())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def _embeddings(self, request: dict[str, Any]) -> dict[str, Any]:
        inputs = request.get("input")
        count = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
        vector = [round(0.1 * (i + 1), 3) for i in range(EMBEDDING_DIMENSIONS)]
        encoded: Any = vector
        if request.get("encoding_format") == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": encoded} for i in range(count)],
            "model": request.get("model"),
            "usage": {"prompt_tokens": EMBEDDING_TOKENS, "total_tokens": EMBEDDING_TOKENS},
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOpenAI


@dataclass
class FakeOpenAI:
    """A running fake: ``base_url`` for ``openai.OpenAI(base_url=...)``, the requests it received."""

    host: str
    port: int
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"


@contextmanager
def serve() -> Iterator[FakeOpenAI]:
    """Run a fake OpenAI server on a free loopback port for the duration of the block."""
    httpd = _Server(("127.0.0.1", 0), _Handler)
    fake = FakeOpenAI("127.0.0.1", httpd.server_address[1])
    httpd.fake = fake
    thread = threading.Thread(target=httpd.serve_forever, name="fake-openai", daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def main() -> None:
    """``python tests/helpers/fake_openai.py``: serve until interrupted, printing the base URL."""
    with serve() as fake:
        print(fake.base_url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
