"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions protocol.

It is the edge of the world for the tests: the service's real `langchain-openai` client, retries,
timeouts and OpenTelemetry instrumentation all run against it over loopback.

What it speaks (the subset of https://platform.openai.com/docs/api-reference/chat that the service uses):

- ``POST /v1/chat/completions`` (OpenAI, vLLM, llama.cpp style) and
  ``POST /openai/deployments/{deployment}/chat/completions?api-version=…`` (Azure OpenAI style).
- Forced function calls (``tools`` + ``tool_choice``), which is how the service asks for structured
  output: the arguments are generated from the tool's JSON schema, with per-tool overrides a test sets
  (``script("Grade", verdict="incorrect")``).
- ``stream: true`` as server-sent events, with a final usage chunk when ``stream_options.include_usage``.
- Faults, queued per request: an HTTP status with headers (429 + ``Retry-After``, 500, 401, …),
  a hang (never answers), malformed JSON, arguments that break the schema; plus a fixed latency.

Every request is recorded (path, headers, JSON body) so tests can assert what the service sent.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # listen backlog: many clients connect at once under load
    daemon_threads = True


@dataclass
class Fault:
    """One injected failure, consumed by the next matching request.

    kind: ``status`` (answer ``status`` with ``headers`` and an OpenAI error body), ``hang`` (sleep
    ``seconds`` before closing without an answer), ``trickle`` (a valid answer sent one byte every
    ``seconds``), ``malformed`` (200 with a body that is not JSON),
    ``bad_arguments`` (200 with tool-call arguments that do not match the schema).
    """

    kind: str
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 30.0


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    query: str = ""
    received_at: float = field(default_factory=time.monotonic)  # when it arrived, monotonic seconds

    @property
    def prompt_text(self) -> str:
        """All message contents of the request, joined: what the model was shown."""
        parts = []
        for message in self.body.get("messages", []):
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
        return "\n".join(parts)

    @property
    def tool_name(self) -> str | None:
        choice = self.body.get("tool_choice")
        if isinstance(choice, dict):
            return choice.get("function", {}).get("name")
        tools = self.body.get("tools") or []
        return tools[0]["function"]["name"] if len(tools) == 1 else None


class FakeOpenAI:
    """Start with ``with FakeOpenAI() as server:``; ``server.base_url`` ends in ``/v1``."""

    def __init__(self, latency_s: float = 0.0, port: int = 0) -> None:
        self.latency_s = latency_s
        # Fixed token counts for every completion (prompt, completion, cached prompt tokens), as OpenAI reports
        # them: ``usage.prompt_tokens``, ``completion_tokens``, ``prompt_tokens_details.cached_tokens``. None: a
        # word count of the request and the reply, and no cached tokens.
        self.usage: tuple[int, int, int] | None = None
        self.requests: list[RecordedRequest] = []
        # Requests whose client closed the connection while their answer was being made (after ``latency_s``):
        # a cancelled call, as the client's side of the socket tells it.
        self.abandoned: list[RecordedRequest] = []
        self._faults: deque[Fault] = deque()
        self._scripts: dict[str, dict[str, Any]] = {}
        self._responders: dict[str, Callable[[str], dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", port), self._handler_class())
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- scripting ---------------------------------------------------------------------------
    def script(self, tool_name: str, **values: Any) -> None:
        """Make forced calls of ``tool_name`` return these argument values (others from the schema)."""
        self._scripts[tool_name] = values

    def respond(self, tool_name: str, responder: Callable[[str], dict[str, Any]]) -> None:
        """Make forced calls of ``tool_name`` return ``responder(prompt_text)`` (argument values; others from
        the schema): an answer that depends on what the model was asked."""
        self._responders[tool_name] = responder

    def fail_next(self, fault: Fault, times: int = 1) -> None:
        with self._lock:
            self._faults.extend([fault] * times)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self.requests.clear()
            self.abandoned.clear()
        self.usage = None
        self._scripts.clear()
        self._responders.clear()

    def requests_for(self, tool_name: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.tool_name == tool_name]

    # -- protocol ----------------------------------------------------------------------------
    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _arguments(self, tool: dict[str, Any], prompt: str = "") -> dict[str, Any]:
        fn = tool["function"]
        values = dict(self._scripts.get(fn["name"], {}))
        if (responder := self._responders.get(fn["name"])) is not None:
            values.update(responder(prompt))
        schema = fn.get("parameters", {})
        return {name: values.get(name, _example(name, prop, schema)) for name, prop in
                schema.get("properties", {}).items()}

    def _completion(self, body: dict[str, Any], bad_arguments: bool) -> tuple[dict[str, Any], str]:
        """Return (message, text used for token counting)."""
        tools = body.get("tools") or []
        choice = body.get("tool_choice")
        wanted = None
        if isinstance(choice, dict):
            wanted = choice.get("function", {}).get("name")
        elif tools and choice in ("required", "any"):
            wanted = tools[0]["function"]["name"]
        tool = next((t for t in tools if t["function"]["name"] == wanted), None)
        if tool is None:
            text = "This is a fake answer."
            return {"role": "assistant", "content": text}, text
        prompt = RecordedRequest("", {}, body).prompt_text
        args = {"unexpected": True} if bad_arguments else self._arguments(tool, prompt)
        arguments = json.dumps(args, ensure_ascii=False)
        call = {"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                "function": {"name": tool["function"]["name"], "arguments": arguments}}
        return {"role": "assistant", "content": None, "tool_calls": [call]}, arguments

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm holds the body
            # until the client's delayed ACK (40 ms on Linux), three times per round.
            disable_nagle_algorithm = True

            def _peer_closed(self) -> bool:
                """Whether the client has closed its side: the socket reads as ended (a peek, nothing taken)."""
                readable, _, _ = select.select([self.connection], [], [], 0)
                try:
                    return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
                except OSError:  # reset by the peer
                    return True

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    self._json(400, {"error": {"message": "invalid JSON body"}})
                    return
                path, _, query = self.path.partition("?")
                recorded = RecordedRequest(path, {k.lower(): v for k, v in self.headers.items()}, body, query)
                server.requests.append(recorded)
                if not path.endswith("/chat/completions"):
                    self._json(404, {"error": {"message": f"unknown path {path}"}})
                    return
                fault = server._next_fault()
                if server.latency_s:
                    time.sleep(server.latency_s)
                    if self._peer_closed():
                        server.abandoned.append(recorded)
                        self.close_connection = True
                        return
                if fault is not None and fault.kind == "hang":
                    time.sleep(fault.seconds)
                    self.close_connection = True
                    return
                if fault is not None and fault.kind == "status":
                    self._json(fault.status, {"error": {"message": f"injected {fault.status}",
                                                        "type": "fake", "code": str(fault.status)}},
                               fault.headers)
                    return
                if fault is not None and fault.kind == "malformed":
                    self._raw(200, b'{"id": "chatcmpl-broken", "choices": [', "application/json")
                    return
                model = body.get("model") or path.split("/deployments/")[-1].split("/")[0]
                message, text = server._completion(body, fault is not None and fault.kind == "bad_arguments")
                prompt_tokens = max(1, len(json.dumps(body.get("messages", [])).split()))
                completion_tokens = max(1, len(text.split()))
                cached_tokens = 0
                if server.usage is not None:
                    prompt_tokens, completion_tokens, cached_tokens = server.usage
                usage: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                         "total_tokens": prompt_tokens + completion_tokens,
                         "prompt_tokens_details": {"cached_tokens": cached_tokens}}
                cid = f"chatcmpl-{uuid.uuid4().hex[:16]}"
                finish = "tool_calls" if message.get("tool_calls") else "stop"
                if fault is not None and fault.kind == "trickle":
                    data = json.dumps({"id": cid, "object": "chat.completion", "created": int(time.time()),
                                       "model": model, "usage": usage, "choices": [
                                           {"index": 0, "message": message, "finish_reason": finish}]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    try:
                        for i in range(len(data)):
                            self.wfile.write(data[i:i + 1])
                            self.wfile.flush()
                            time.sleep(fault.seconds)
                    except OSError:
                        pass  # the client gave up
                    return
                if body.get("stream"):
                    self._stream(cid, model, message, finish, usage,
                                 bool((body.get("stream_options") or {}).get("include_usage")))
                    return
                self._json(200, {"id": cid, "object": "chat.completion", "created": int(time.time()),
                                 "model": model, "usage": usage,
                                 "choices": [{"index": 0, "message": message, "finish_reason": finish}]})

            def _stream(self, cid: str, model: str, message: dict[str, Any], finish: str,
                        usage: dict[str, Any], include_usage: bool) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True

                def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> None:
                    payload = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
                               "model": model, "choices": [{"index": 0, "delta": delta,
                                                             "finish_reason": finish_reason}], **extra}
                    self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
                    self.wfile.flush()

                chunk({"role": "assistant", "content": ""})
                if message.get("tool_calls"):
                    call = message["tool_calls"][0]
                    chunk({"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                                           "function": {"name": call["function"]["name"], "arguments": ""}}]})
                    chunk({"tool_calls": [{"index": 0, "function": {"arguments": call["function"]["arguments"]}}]})
                else:
                    for word in message["content"].split(" "):
                        chunk({"content": word + " "})
                chunk({}, finish)
                if include_usage:
                    payload = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
                               "model": model, "choices": [], "usage": usage}
                    self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

            def _json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                self._raw(status, json.dumps(payload).encode(), "application/json", headers)

            def _raw(self, status: int, data: bytes, content_type: str,
                     headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler


def _example(name: str, prop: dict[str, Any], root: dict[str, Any]) -> Any:
    """A value that satisfies ``prop`` (a JSON-schema property), for generated tool arguments."""
    if "$ref" in prop:
        ref = prop["$ref"].split("/")[-1]
        prop = root.get("$defs", {}).get(ref, {})
    if "anyOf" in prop:
        prop = next((p for p in prop["anyOf"] if p.get("type") != "null"), prop["anyOf"][0])
    if "enum" in prop:
        return prop["enum"][0]
    kind = prop.get("type", "string")
    if kind == "integer":
        return max(1, int(prop.get("minimum", 1)))
    if kind == "number":
        return float(prop.get("minimum", 0.5))
    if kind == "boolean":
        return True
    if kind == "array":
        return [_example(name, prop.get("items", {}), root)] * int(prop.get("minItems", 1))
    if kind == "object":
        return {k: _example(k, v, root) for k, v in prop.get("properties", {}).items()}
    return f"fake {name.replace('_', ' ')} {uuid.uuid4().hex[:6]}"



def main() -> None:
    """``python -m tests.fakes.openai_server --port P --latency-ms L``: serve until killed (for bench/)."""
    import argparse

    parser = argparse.ArgumentParser(description="Fake OpenAI-protocol server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    with FakeOpenAI(latency_s=args.latency_ms / 1000, port=args.port) as server:
        print(server.base_url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
