"""A real HTTP server on loopback that answers as vLLM's OpenAI-compatible server does.

It implements the two endpoints dgls uses with vLLM's shapes: `GET /v1/models` (a model list with
`max_model_len`) and `POST /v1/chat/completions`, streamed as server-sent events over chunked
HTTP/1.1 (`data: {chat.completion.chunk}` lines, a usage chunk, `data: [DONE]`) or whole JSON;
errors as vLLM sends them (`{"error": {"message", "type", "param", "code"}}`, and
`{"error": "Unauthorized"}` from its API-key check). Each chat request takes the next behaviour
from `script` (else `default`): a normal reply, a slow one, an HTTP error, a dropped connection,
a truncated stream, an error event mid-stream, malformed events. Every request is recorded
(path, headers, body) with the time the server spent on it, and disconnects by the client are
noticed (the server writes a keep-alive comment every 20 ms while it makes a reply wait).
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "google/diffusiongemma-26B-A4B-it"


@dataclass
class Behaviour:
    """How to answer one chat request. kind: stream | json | status | drop | truncate | error_event |
    garbage | no_choices | stall; `delay` seconds before the first byte (stall: after the first
    piece), `chunks` pieces of `reply`."""

    kind: str = "stream"
    reply: str = "a + b"
    delay: float = 0.0
    chunks: int = 2
    status: int = 500
    message: str = "internal error"
    headers: dict = field(default_factory=dict)


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict
    body: Any
    received: float
    served_ms: float | None = None  # from the whole request read to the last byte written
    disconnected: float | None = None  # when the server noticed the client had gone
    peer: tuple = ()  # the client's address: one per connection


class FakeVllm:
    """`with FakeVllm() as server:` serves on 127.0.0.1:`server.port` until the block ends."""

    def __init__(self, port: int = 0, api_key: str | None = None, model: str = MODEL,
                 max_model_len: int = 8192, tls: tuple[str, str] | None = None) -> None:
        self.api_key, self.model, self.max_model_len = api_key, model, max_model_len
        self.default = Behaviour()
        self.drop_idle = False  # close each connection after its reply, as a server's idle timeout would
        self.script: list[Behaviour] = []
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self._httpd.fake = self  # type: ignore[attr-defined]
        self._httpd.daemon_threads = True
        self._httpd.handle_error = lambda *a: None  # clients that hang up (cancel) are expected
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        if tls is not None:  # (certificate file, key file): https on the same port
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
            self.url = f"https://localhost:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def __enter__(self) -> FakeVllm:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def chats(self) -> list[Seen]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def stop(self) -> None:
        """Disappear: cut every open connection, mid-reply or not, and stop listening."""
        with self._lock:
            for sock in list(self._sockets):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._httpd.shutdown()
        self._httpd.server_close()

    def next_behaviour(self) -> Behaviour:
        with self._lock:
            return self.script.pop(0) if self.script else self.default

    def track(self, sock: socket.socket, add: bool) -> None:
        with self._lock:
            (self._sockets.add if add else self._sockets.discard)(sock)


def _chunk(model: str, delta: dict, finish: str | None = None) -> dict:
    return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


class _Handler(BaseHTTPRequestHandler):
    """One connection to the fake server; `self.server.fake` is the FakeVllm it belongs to."""
    protocol_version = "HTTP/1.1"

    @property
    def fake(self) -> FakeVllm:
        return self.server.fake  # type: ignore[attr-defined]

    def log_message(self, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as uvicorn (asyncio) does
        self.fake.track(self.connection, True)

    def finish(self) -> None:
        self.fake.track(self.connection, False)
        try:
            super().finish()
        except OSError:
            pass

    # -- helpers --------------------------------------------------------------------------
    def _record(self, body: Any) -> Seen:
        seen = Seen(self.command, self.path, dict(self.headers.items()), body, time.monotonic(),
                    peer=self.client_address)
        self.fake.requests.append(seen)
        return seen

    def _json(self, status: int, payload: Any, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if self.fake.api_key is None or self.headers.get("Authorization") == f"Bearer {self.fake.api_key}":
            return True
        self._json(401, {"error": "Unauthorized"})
        return False

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event(self, payload: Any) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        self._write_chunk(f"data: {text}\n\n".encode())

    def _wait(self, seconds: float, seen: Seen, streaming: bool) -> bool:
        """Hold the reply back; False when the client went away meanwhile."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
            try:
                if streaming:
                    self._write_chunk(b": ping\n\n")  # SSE comment: how a server notices a gone client
                elif _peer_closed(self.connection):
                    raise ConnectionResetError
            except OSError:
                seen.disconnected = time.monotonic()
                return False
        return True

    # -- endpoints ------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._record(None)
        if not self._authorized():
            return
        if self.path.rstrip("/") != "/v1/models":
            self._json(404, {"detail": "Not Found"})
            return
        self._json(200, {"object": "list", "data": [{
            "id": self.fake.model, "object": "model", "created": 0, "owned_by": "vllm", "root": self.fake.model,
            "parent": None, "max_model_len": self.fake.max_model_len, "permission": []}]})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw
        seen = self._record(body)
        if not self._authorized():
            return
        if self.path != "/v1/chat/completions":
            self._json(404, {"detail": "Not Found"})
            return
        try:
            self._answer(self.fake.next_behaviour(), body, seen)
        except OSError:
            seen.disconnected = seen.disconnected or time.monotonic()
        else:
            if seen.served_ms is None:
                seen.served_ms = (time.monotonic() - seen.received) * 1000
        if self.fake.drop_idle:  # without saying so (no Connection: close), like an idle timeout
            self.close_connection = True

    def _answer(self, how: Behaviour, body: Any, seen: Seen) -> None:
        if how.kind == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if how.kind == "status":
            if not self._wait(how.delay, seen, streaming=False):
                return
            error = {"error": {"message": how.message, "type": "BadRequestError" if how.status < 500
                               else "InternalServerError", "param": None, "code": how.status}}
            self._json(how.status, error if how.status != 502 else {"error": how.message}, how.headers)
            return
        if how.kind == "json" or not (isinstance(body, dict) and body.get("stream")):
            if self._wait(how.delay, seen, streaming=False):
                self._json(200, {"id": "chatcmpl-fake", "object": "chat.completion", "model": self.fake.model,
                                 "choices": [{"index": 0, "message": {"role": "assistant", "content": how.reply},
                                              "finish_reason": "stop"}],
                                 "usage": {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._stream(how, seen)

    def _stream(self, how: Behaviour, seen: Seen) -> None:
        if how.kind != "stall" and not self._wait(how.delay, seen, streaming=True):
            return
        self._event(_chunk(self.fake.model, {"role": "assistant", "content": ""}))
        size = max(1, -(-len(how.reply) // max(1, how.chunks)))
        pieces = [how.reply[i:i + size] for i in range(0, len(how.reply), size)] or [""]
        for i, piece in enumerate(pieces):
            if how.kind == "truncate" and i == len(pieces) // 2 + (len(pieces) == 1):
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)  # gone, with no [DONE] and no last chunk
                return
            self._event(_chunk(self.fake.model, {"content": piece}))
            if how.kind == "stall" and i == 0 and not self._wait(how.delay, seen, streaming=True):
                return  # the first piece, then nothing until the client gives up
        if how.kind == "error_event":
            self._event({"error": {"message": how.message, "type": "InternalServerError", "param": None,
                                   "code": 500}})
        elif how.kind == "garbage":
            self._event("{not json")
        elif how.kind == "no_choices":
            self._event({"id": "x", "object": "chat.completion.chunk"})
        else:
            self._event(_chunk(self.fake.model, {}, finish="stop"))
            self._event({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "choices": [],
                         "usage": {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105}})
        self._event("[DONE]")
        seen.served_ms = (time.monotonic() - seen.received) * 1000  # before the last byte: no race with the client
        self._write_chunk(b"")


def _peer_closed(sock: socket.socket) -> bool:
    """True when the client has closed its side (a zero-byte peek)."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    finally:
        sock.setblocking(True)
