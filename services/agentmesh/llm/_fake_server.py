"""A scripted model server: a real HTTP server on 127.0.0.1 speaking both wire formats.

Public as :class:`agentmesh.testing.FakeModel`, and behind the ``mock`` provider
kind (``AGENTMESH_LLM_PROVIDER=mock``), which starts one in the agent's process
that answers every request with :func:`mock_reply` (offline demos).

``FakeModelServer`` listens on 127.0.0.1 (port 0) in a thread and answers each
request with the next scripted reply, rendered in the wire format of the
request's path (``.../chat/completions``: OpenAI, ``.../v1/messages``:
Anthropic) and as SSE when the body asks for ``"stream": true``. With no
scripted reply left it answers with ``default(request_body)`` when given one,
else 500. Streams are written chunk by chunk with chunked transfer encoding,
one flush per event; a stream can pause on a ``threading.Event`` (to prove the
client yields before the rest is sent) or drop the connection part way. "Hang"
replies never answer. Every wait in the server is bounded and released by
``close()``, which also closes every connection and joins every handler
thread. Every request is recorded with its headers and body.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agentmesh.llm._settings import ProviderConfig

#: Upper bound of every wait inside the server (teardown releases waits sooner).
WAIT_LIMIT = 20.0
API_KEY = "sk-test-0123456789abcdefSECRET"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class _Text:
    chunks: tuple[str, ...]
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str
    model: str | None
    gate: threading.Event | None
    gate_after: int
    drop_after: int | None


@dataclass(frozen=True)
class _Status:
    status: int
    message: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None


@dataclass(frozen=True)
class _RawSSE:
    events: tuple[str, ...]
    gate: threading.Event | None
    gate_after: int
    drop_after: int | None


@dataclass(frozen=True)
class _Hang:
    pass


_Reply = _Text | _Status | _RawSSE | _Hang

_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens"}


def _sse(data: Any, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n"


class _Drop(Exception):
    """Raised inside a handler to cut the connection without finishing the reply."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    unexpected_errors: list[BaseException]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-reply is expected here; anything else is a bug
        # in the fake server, reported when the fixture tears it down.
        error = sys.exc_info()[1]
        if error is not None and not isinstance(error, OSError):
            self.unexpected_errors.append(error)


class FakeModelServer:
    """A scripted OpenAI-compatible and Anthropic server. Close it with ``close()``.

    ``default`` answers a request when no scripted reply is left: it receives
    the request's JSON body and returns the answer's text.
    """

    api_key = API_KEY

    def __init__(self, *, default: Callable[[dict[str, Any]], str] | None = None) -> None:
        self._default = default
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._replies: deque[_Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self._stop = threading.Event()
        self._gates: list[threading.Event] = []
        self._connections: set[socket.socket] = set()
        self._httpd = _HTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.unexpected_errors = []
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    # -- addresses and configs ----------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def config(
        self, kind: str = "openai", *, model: str | None = None, **overrides: Any
    ) -> ProviderConfig:
        """A provider config pointing at this server (with ``API_KEY`` unless overridden)."""
        default_model = "gpt-4o-mini" if kind == "openai" else "claude-3-5-haiku-20241022"
        base_url = f"{self.url}/v1" if kind == "openai" else self.url
        data: dict[str, Any] = {
            "kind": kind,
            "model": model or default_model,
            "base_url": base_url,
            "api_key": API_KEY,
            **overrides,
        }
        return ProviderConfig.model_validate(data)

    # -- scripting ----------------------------------------------------------------------------

    def reply_text(
        self,
        text: str = "Hello!",
        *,
        chunks: Sequence[str] | None = None,
        prompt_tokens: int | None = 11,
        completion_tokens: int | None = 7,
        finish_reason: str = "stop",
        model: str | None = None,
        gate: threading.Event | None = None,
        gate_after: int = 1,
        drop_after: int | None = None,
    ) -> None:
        """A successful answer; streamed as ``chunks`` (default: the whole text at once).

        ``prompt_tokens``/``completion_tokens`` ``None``: usage is not sent.
        ``gate``: a stream pauses after ``gate_after`` text chunks until it is set
        (and drops the connection if it is not set within the wait limit).
        ``drop_after``: a stream is cut after that many text chunks.
        """
        self._push(
            _Text(
                tuple(chunks) if chunks is not None else (text,),
                prompt_tokens,
                completion_tokens,
                finish_reason,
                model,
                gate,
                gate_after,
                drop_after,
            ),
            gate,
        )

    def reply_status(
        self,
        status: int,
        message: str = "something went wrong",
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> None:
        """An error status with an error body in the request's wire format (or ``body``)."""
        self._push(_Status(status, message, tuple((headers or {}).items()), body), None)

    def reply_sse(
        self,
        *events: str,
        gate: threading.Event | None = None,
        gate_after: int = 1,
        drop_after: int | None = None,
    ) -> None:
        """A 200 event stream made of the given raw SSE text, one flush per item."""
        self._push(_RawSSE(events, gate, gate_after, drop_after), gate)

    def reply_hang(self) -> None:
        """Accept the request and never answer (until teardown)."""
        self._push(_Hang(), None)

    def _push(self, reply: _Reply, gate: threading.Event | None) -> None:
        with self._lock:
            self._replies.append(reply)
            if gate is not None:
                self._gates.append(gate)

    # -- inspection ---------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def wait_for_requests(self, count: int) -> list[RecordedRequest]:
        """Block until ``count`` requests arrived (bounded), then return them all."""
        with self._arrived:
            self._arrived.wait_for(lambda: len(self._requests) >= count, timeout=WAIT_LIMIT)
            return list(self._requests)

    @property
    def unexpected_errors(self) -> list[BaseException]:
        """Exceptions raised by the server's own handler code (bugs in this fixture)."""
        return list(self._httpd.unexpected_errors)

    @property
    def pending_replies(self) -> int:
        with self._lock:
            return len(self._replies)

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> FakeModelServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            gates = list(self._gates)
        for gate in gates:
            gate.set()
        self._httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()  # joins the handler threads
        self._thread.join(WAIT_LIMIT)

    # -- request handling (server threads) ----------------------------------------------------

    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(length)
        record = RecordedRequest(
            handler.command,
            handler.path,
            {k.lower(): v for k, v in handler.headers.items()},
            body,
        )
        with self._arrived:
            self._requests.append(record)
            self._arrived.notify_all()
            reply = self._replies.popleft() if self._replies else None
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        if reply is None and self._default is not None:
            text = self._default(payload)
            reply = _Text((text,), None, None, "stop", None, None, 1, None)
        anthropic = handler.path.rstrip("/").endswith("/v1/messages")
        stream = payload.get("stream") is True
        model = str(payload.get("model", "unknown"))
        try:
            if reply is None:
                self._send_status(
                    handler, _Status(500, "no scripted reply left", (), None), anthropic
                )
            elif isinstance(reply, _Hang):
                self._stop.wait(WAIT_LIMIT)
                handler.close_connection = True
            elif isinstance(reply, _Status):
                self._send_status(handler, reply, anthropic)
            elif isinstance(reply, _RawSSE):
                self._send_stream(
                    handler,
                    list(reply.events),
                    reply.gate,
                    reply.gate_after,
                    reply.drop_after,
                    text_indexes=None,
                )
            elif stream:
                events, text_indexes = (
                    _anthropic_stream(reply, model) if anthropic else _openai_stream(reply, model)
                )
                self._send_stream(
                    handler,
                    events,
                    reply.gate,
                    reply.gate_after,
                    reply.drop_after,
                    text_indexes=text_indexes,
                )
            else:
                whole = _anthropic_body(reply, model) if anthropic else _openai_body(reply, model)
                self._send_json(handler, 200, whole, ())
        except (_Drop, OSError):
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)

    def _send_json(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        body: Any,
        headers: Sequence[tuple[str, str]],
    ) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
        handler.wfile.flush()

    def _send_status(
        self, handler: BaseHTTPRequestHandler, reply: _Status, anthropic: bool
    ) -> None:
        if reply.body is not None:
            body: Any = reply.body
        elif anthropic:
            body = {"type": "error", "error": {"type": "api_error", "message": reply.message}}
        else:
            body = {"error": {"message": reply.message, "type": "error", "code": reply.status}}
        self._send_json(handler, reply.status, body, reply.headers)

    def _send_stream(
        self,
        handler: BaseHTTPRequestHandler,
        events: list[str],
        gate: threading.Event | None,
        gate_after: int,
        drop_after: int | None,
        *,
        text_indexes: list[int] | None,
    ) -> None:
        """Write ``events`` one chunk each; gates and drops count text events
        (``text_indexes``; for raw streams every event counts)."""
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        counted = set(range(len(events))) if text_indexes is None else set(text_indexes)
        sent = 0
        for index, event in enumerate(events):
            _write_chunk(handler, event.encode())
            if index not in counted:
                continue
            sent += 1
            if drop_after is not None and sent >= drop_after:
                raise _Drop
            if gate is not None and sent == gate_after and not gate.wait(WAIT_LIMIT):
                raise _Drop
            if self._stop.is_set():
                raise _Drop
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()


def _write_chunk(handler: BaseHTTPRequestHandler, data: bytes) -> None:
    handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
    handler.wfile.flush()


def _make_handler(server: FakeModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = WAIT_LIMIT  # bounds idle keep-alive reads

        def setup(self) -> None:
            super().setup()
            # Headers and body are separate writes: without this, Nagle's algorithm
            # and the client's delayed ACK add ~40ms to every reply.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            server._track(self.connection, add=True)

        def finish(self) -> None:
            try:
                super().finish()
            finally:
                server._track(self.connection, add=False)

        def do_POST(self) -> None:
            server._handle(self)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


# -- wire formats ---------------------------------------------------------------------------


def _usage(reply: _Text) -> dict[str, int] | None:
    if reply.prompt_tokens is None or reply.completion_tokens is None:
        return None
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


def _openai_body(reply: _Text, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": reply.model or model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(reply.chunks)},
                "finish_reason": reply.finish_reason,
            }
        ],
    }
    usage = _usage(reply)
    if usage is not None:
        body["usage"] = usage
    return body


def _openai_stream(reply: _Text, model: str) -> tuple[list[str], list[int]]:
    name = reply.model or model

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return _sse(
            {
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "model": name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )

    events = [": keep-alive\n\n", chunk({"role": "assistant", "content": ""})]
    text_indexes = []
    for piece in reply.chunks:
        text_indexes.append(len(events))
        events.append(chunk({"content": piece}))
    events.append(chunk({}, reply.finish_reason))
    usage = _usage(reply)
    if usage is not None:
        events.append(_sse({"id": "chatcmpl-test", "model": name, "choices": [], "usage": usage}))
    events.append("data: [DONE]\n\n")
    return events, text_indexes


def _anthropic_body(reply: _Text, model: str) -> dict[str, Any]:
    return {
        "id": "msg_test",
        "type": "message",
        "role": "assistant",
        "model": reply.model or model,
        "content": [{"type": "text", "text": "".join(reply.chunks)}],
        "stop_reason": _ANTHROPIC_STOP.get(reply.finish_reason, reply.finish_reason),
        "stop_sequence": None,
        "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens},
    }


def _anthropic_stream(reply: _Text, model: str) -> tuple[list[str], list[int]]:
    start_usage = {"input_tokens": reply.prompt_tokens, "output_tokens": 1}
    message: dict[str, Any] = {
        "id": "msg_test",
        "type": "message",
        "role": "assistant",
        "model": reply.model or model,
        "content": [],
        "stop_reason": None,
        "usage": start_usage,
    }
    events = [
        _sse({"type": "message_start", "message": message}, "message_start"),
        _sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        ),
        _sse({"type": "ping"}, "ping"),
    ]
    text_indexes = []
    for piece in reply.chunks:
        text_indexes.append(len(events))
        delta = {"type": "text_delta", "text": piece}
        events.append(
            _sse({"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta")
        )
    stop = _ANTHROPIC_STOP.get(reply.finish_reason, reply.finish_reason)
    events += [
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": reply.completion_tokens},
            },
            "message_delta",
        ),
        _sse({"type": "message_stop"}, "message_stop"),
    ]
    return events, text_indexes


def mock_reply(body: dict[str, Any]) -> str:
    """The ``mock`` provider's answer: deterministic, and saying what it was asked."""
    messages = body.get("messages")
    last = ""
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                last = content if isinstance(content, str) else json.dumps(content)
    if body.get("response_format"):  # JSON mode: an empty object is valid JSON
        return "{}"
    words = " ".join(last.split())
    shown = words if len(words) <= 200 else words[:200] + "..."
    return f"(mock model) You said: {shown}" if shown else "(mock model) Hello!"
