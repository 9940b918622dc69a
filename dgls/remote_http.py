"""HTTP for the remote engine: one request to an OpenAI-compatible server (vLLM), that a
`threading.Event` can abort at any moment, with every failure turned into one clear line.

Stdlib only (`http.client`, `ssl`). TLS is verified against the system's certificates; the
bearer token goes into the Authorization header and nowhere else (never into a message or a
log); plain http is refused for any host but loopback unless the user allows it. A request is
aborted by shutting its socket down from a small watcher thread, so a blocked read returns at
once and the server sees the connection close (vLLM then aborts the generation).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from dgls.engine import EngineError

from .auth import is_loopback

CANCEL_POLL_S = 0.01  # how often a request's watcher looks at its cancel event
CONNECT_TIMEOUT_S = 3.0
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_LINE_BYTES = 4 * 1024 * 1024


class RemoteError(EngineError):
    """The server gave no usable answer; the message says what happened and where, in one line."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Cancelled(Exception):
    """The caller's cancel event was set; the connection has been closed."""


@dataclass(frozen=True)
class Endpoint:
    """Where the server is and how to talk to it: scheme, host, port, base path, token, timeout."""

    scheme: str
    host: str
    port: int
    base_path: str
    timeout: float = 30.0
    token: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str, token: str | None = None, allow_http: bool = False,
              timeout: float = 30.0) -> Endpoint:
        """Check a base URL such as `http://127.0.0.1:8000` or `https://gpu.example.com/v1`."""
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise EngineError(f"engine URL {url!r} is not a valid URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EngineError(f"engine URL {url!r} must look like http://HOST:PORT or https://HOST[:PORT]")
        if parts.username or parts.password:
            raise EngineError("engine URL must not carry a user or password; name an environment variable "
                              "holding the API key instead (engineApiKeyEnv / --engine-api-key-env)")
        if parts.query or parts.fragment:
            raise EngineError(f"engine URL {_safe(url)!r} must not have a query or fragment")
        host = parts.hostname
        if parts.scheme == "http" and not allow_http and not is_loopback(host):
            raise EngineError(f"plain http to {host} would send your code unencrypted; use https, or allow it "
                              "explicitly (engineAllowHttp / --engine-allow-http) on a network you trust")
        if not timeout > 0:
            raise EngineError(f"engine timeout must be a positive number of seconds, got {timeout!r}")
        base = parts.path.rstrip("/")
        if base.endswith("/v1"):
            base = base[:-3]  # users paste vLLM's OpenAI base URL; the paths below add /v1
        default_port = 443 if parts.scheme == "https" else 80
        return cls(parts.scheme, host, port or default_port, base, float(timeout), token)

    @property
    def where(self) -> str:
        """The server as messages name it (no token, no path)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def connection(self) -> http.client.HTTPConnection:
        timeout = min(CONNECT_TIMEOUT_S, self.timeout)
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def headers(self, body: bytes | None) -> dict[str, str]:
        headers = {"Accept": "application/json, text/event-stream", "User-Agent": "dgls"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers


def _safe(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}" if parts.username or parts.password else url


class Pool:
    """Idle keep-alive connections to one server, so that a request need not pay for a new TCP and
    TLS handshake. A connection goes back only after a reply read to its end; never after a
    cancel, a timeout or an error (those close it)."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def take(self) -> http.client.HTTPConnection | None:
        with self._lock:
            return self._idle.pop() if self._idle else None

    def give(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self.size:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


@contextmanager
def exchange(endpoint: Endpoint, method: str, path: str, body: dict | None, cancel: threading.Event,
             pool: Pool | None = None) -> Iterator[http.client.HTTPResponse]:
    """Send one request and yield its response (status already checked: >= 400 raises RemoteError).

    Reads from the response inside the block may raise; wrap them with `failure()`. Setting
    `cancel` shuts the socket down within CANCEL_POLL_S, and so does the request running past
    `endpoint.timeout` in all (then the block's error becomes a timeout). Leaving the block closes
    the connection, or hands it back to `pool` when the reply was read to its end.
    """
    data = None if body is None else json.dumps(body).encode()
    watch = _Watch(cancel, time.monotonic() + endpoint.timeout)
    conn, reusable = None, False
    try:
        conn, response = _send(endpoint, method, path, data, cancel, pool, watch)
        if response.status >= 400:
            raise watch.translate(status_error(response, endpoint, cancel), endpoint)
        try:
            yield response
        except RemoteError as exc:
            raise watch.translate(exc, endpoint) from None
        reusable = pool is not None and _drained(response)
    finally:
        watch.done.set()
        if conn is not None:
            if reusable and not cancel.is_set() and not watch.expired:
                pool.give(conn)
            else:
                conn.close()


def _send(endpoint: Endpoint, method: str, path: str, data: bytes | None, cancel: threading.Event,
          pool: Pool | None, watch: _Watch) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """Connect (or reuse an idle connection; one the server closed meanwhile is replaced once) and send."""
    while True:
        conn = pool.take() if pool is not None else None
        reused = conn is not None
        conn = conn or endpoint.connection()
        try:
            if not reused:
                conn.connect()
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle wait on small writes
            conn.sock.settimeout(endpoint.timeout)
            watch.start(conn.sock)
            conn.request(method, endpoint.base_path + path, body=data, headers=endpoint.headers(data))
            return conn, conn.getresponse()
        except Exception as exc:
            conn.close()
            if reused and isinstance(exc, _STALE) and not cancel.is_set():
                continue  # the server dropped the idle connection: nothing was processed, send again
            raise watch.translate(failure(exc, endpoint, cancel), endpoint) from None


def _drained(response: http.client.HTTPResponse) -> bool:
    """Whether the reply was read to its end (a stream's closing chunk included) on a keep-alive connection."""
    try:
        while not response.isclosed() and response.read(65536):
            pass
    except Exception:
        return False
    return response.isclosed() and not response.will_close


class _Watch:
    """A request's watcher thread: shuts the socket down when `cancel` is set or the deadline passes
    (a blocked read then returns at once)."""

    def __init__(self, cancel: threading.Event, deadline: float) -> None:
        self.cancel, self.deadline = cancel, deadline
        self.done = threading.Event()
        self.expired = False

    def start(self, sock: socket.socket) -> None:
        threading.Thread(target=self._run, args=(sock,), name="dgls-http-watch", daemon=True).start()

    def _run(self, sock: socket.socket) -> None:
        while not self.done.is_set():
            expired = time.monotonic() > self.deadline
            if self.cancel.wait(CANCEL_POLL_S) or expired:
                if not self.done.is_set():
                    self.expired = expired and not self.cancel.is_set()
                    try:
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)
                    except OSError:
                        pass
                return

    def translate(self, exc: Exception, endpoint: Endpoint) -> Exception:
        """A failure caused by the deadline reads as a timeout, whatever the socket said."""
        if self.expired and not isinstance(exc, Cancelled):
            return RemoteError(f"the engine server at {endpoint.where} did not answer within {endpoint.timeout:g} s")
        return exc


def failure(exc: BaseException, endpoint: Endpoint, cancel: threading.Event) -> Exception:
    """The exception to raise for a transport failure: Cancelled, or a one-line RemoteError."""
    if cancel.is_set():
        return Cancelled()
    where = endpoint.where
    if isinstance(exc, RemoteError):
        return exc
    if isinstance(exc, ConnectionRefusedError):
        return RemoteError(f"cannot reach the engine server at {where}: connection refused (is it running?)")
    if isinstance(exc, socket.gaierror):
        return RemoteError(f"cannot resolve the engine server's host {endpoint.host}: {exc.strerror}")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return RemoteError(f"the engine server at {where} did not answer within {endpoint.timeout:g} s")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return RemoteError(f"the TLS certificate of {endpoint.host} is not trusted: {exc.verify_message}")
    if isinstance(exc, ssl.SSLError):
        return RemoteError(f"TLS with {where} failed: {exc.reason or exc}")
    if isinstance(exc, (http.client.RemoteDisconnected, http.client.IncompleteRead, ConnectionResetError,
                        BrokenPipeError, ConnectionAbortedError)):
        return RemoteError(f"the engine server at {where} closed the connection before the reply was complete")
    if isinstance(exc, http.client.HTTPException):
        return RemoteError(f"the engine server at {where} sent a malformed HTTP reply ({type(exc).__name__})")
    if isinstance(exc, OSError):
        return RemoteError(f"cannot talk to the engine server at {where}: {exc.strerror or exc}")
    return RemoteError(f"the request to {where} failed: {type(exc).__name__}: {exc}")


_STATUS_HINTS = {
    401: "the server wants an API key, or refused this one: name the environment variable that holds it "
         "(engineApiKeyEnv / --engine-api-key-env)",
    403: "the server refused this API key",
    404: "is the engine URL the server's base URL (e.g. http://HOST:8000) and the model one it serves?",
    429: "the server is rate limiting; try again shortly",
}


def status_error(response: http.client.HTTPResponse, endpoint: Endpoint, cancel: threading.Event) -> Exception:
    """A RemoteError for an HTTP error status, with the server's own message when it sent one."""
    try:
        body = response.read(64 * 1024)
    except Exception:
        if cancel.is_set():
            return Cancelled()
        body = b""
    detail = error_message(body) or response.reason or ""
    status = response.status
    kind = "is busy" if status == 429 else "refused the request" if status < 500 else "failed"
    text = f"the engine server at {endpoint.where} {kind} (HTTP {status}"
    text += f": {detail})" if detail else ")"
    hint = _STATUS_HINTS.get(status)
    retry = response.getheader("Retry-After")
    if status == 429 and retry:
        hint = f"the server asks to retry after {retry} s"
    return RemoteError(f"{text}; {hint}" if hint else text, status=status)


def error_message(body: bytes) -> str:
    """The message inside an error body: vLLM's {"error": {"message"}}, older {"message"}, FastAPI's
    {"detail"}, or a short plain-text body; one line, at most 300 characters."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data: Any = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        inner = data.get("error", data)
        if isinstance(inner, dict):
            text = str(inner.get("message") or inner.get("detail") or data.get("detail") or "")
        else:
            text = str(inner)
    elif text.startswith("<"):
        text = ""  # an HTML error page says nothing useful in one line
    return " ".join(text.split())[:300]


def read_json(response: http.client.HTTPResponse, endpoint: Endpoint, cancel: threading.Event) -> Any:
    """The whole response body as JSON; a body that is not JSON is a RemoteError."""
    try:
        body = response.read(MAX_BODY_BYTES)
    except Exception as exc:
        raise failure(exc, endpoint, cancel) from None
    try:
        return json.loads(body)
    except ValueError:
        raise RemoteError(f"the engine server at {endpoint.where} sent a malformed reply (not JSON)") from None


def sse_events(response: http.client.HTTPResponse, endpoint: Endpoint, cancel: threading.Event) -> Iterator[Any]:
    """The JSON payloads of a server-sent event stream, up to `data: [DONE]`.

    An `{"error": ...}` event (how vLLM reports a failure after the stream started) raises
    RemoteError; a stream that ends without [DONE] raises RemoteError (truncated).
    """
    data: list[bytes] = []
    while True:
        try:
            line = response.readline(MAX_LINE_BYTES)
        except Exception as exc:
            raise failure(exc, endpoint, cancel) from None
        if cancel.is_set():
            raise Cancelled()
        if not line:
            raise RemoteError(f"the engine server at {endpoint.where} closed the connection mid-reply "
                              "(truncated stream)")
        line = line.rstrip(b"\r\n")
        if line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
            continue
        if line or not data:
            continue  # comments (": ping"), event/id fields, blank keep-alives
        payload, data = b"\n".join(data), []
        if payload.strip() == b"[DONE]":
            return
        try:
            event = json.loads(payload)
        except ValueError:
            raise RemoteError(f"the engine server at {endpoint.where} sent a malformed stream event "
                              f"({payload[:60]!r})") from None
        if isinstance(event, dict) and ("error" in event or event.get("object") == "error"):
            message = error_message(json.dumps(event).encode())
            raise RemoteError(f"the engine server at {endpoint.where} failed mid-reply: {message or 'unknown error'}")
        yield event
