"""A raw JSON-RPC client for the stress suite: it drives a real `dgls serve` over pipes or a socket.

Unlike an editor it can send any bytes at all (the fuzzer needs that), and it keeps the books the
suite reports from: which requests were answered, when, and with what error code. It answers
the server's own requests as an editor would, and refuses a `workspace/applyEdit` whose version
is not the document's current one (counting it: a stale edit is a failure of the server).
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Endpoint:
    """How to reach a TCP daemon: the one place that knows the connection details (address and
    the daemon's token, sent first as dgls.auth's handshake line)."""

    host: str
    port: int
    token: str | None = None

    def open_socket(self, timeout: float = 10.0) -> socket.socket:
        from dgls import auth

        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        if self.token is not None:
            sock.sendall(auth.handshake_line(self.token))
        sock.settimeout(None)
        return sock


def server_command(*args: str) -> list[str]:
    """`python -m dgls.cli serve ...` from this interpreter: the code that is installed here."""
    return [sys.executable, "-m", "dgls.cli", "serve", *args]


class RpcClient:
    """Speaks LSP framing over a byte stream pair; `request` returns a Future of the reply message."""

    def __init__(self, rfile: Any, wfile: Any, proc: subprocess.Popen | None = None, sock: Any = None) -> None:
        self.rfile, self.wfile, self.proc, self.sock = rfile, wfile, proc, sock
        self._ids = itertools.count(1)
        self._pending: dict[Any, Future] = {}
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self.notifications: list[tuple[float, str, Any]] = []
        self.versions: dict[str, int] = {}
        self.acked: dict[str, int] = {}  # per document, a version the server has certainly read
        self.applied = self.refused = self.stale_edits = 0
        self.unexpected_replies = 0
        self.closed = False
        threading.Thread(target=self._read_loop, name="stress-reader", daemon=True).start()

    # -- constructors -----------------------------------------------------------------------------
    @classmethod
    def spawn(cls, args: list[str], env: dict[str, str] | None = None, stderr: Any = subprocess.DEVNULL) -> RpcClient:
        proc = subprocess.Popen(server_command(*args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=stderr, env={**os.environ, **(env or {})})
        return cls(proc.stdout, proc.stdin, proc=proc)

    @classmethod
    def connect(cls, endpoint: Endpoint) -> RpcClient:
        sock = endpoint.open_socket()
        return cls(sock.makefile("rb"), sock.makefile("wb"), sock=sock)

    # -- wire -------------------------------------------------------------------------------------
    def send_bytes(self, body: bytes) -> None:
        """One framed message with any body at all."""
        with self._lock:
            self.wfile.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            self.wfile.flush()

    def send(self, payload: Any) -> None:
        self.send_bytes(json.dumps(payload).encode())

    def request(self, method: str, params: Any = None, msg_id: Any = None) -> Future:
        """Send a request; the Future resolves to the whole reply message (result or error)."""
        fut = self.expect(next(self._ids) if msg_id is None else msg_id)
        self.send({"jsonrpc": "2.0", "id": fut.msg_id, "method": method, "params": params})  # type: ignore[attr-defined]
        return fut

    def expect(self, msg_id: Any) -> Future:
        """Register a reply the suite waits for (for requests it sends as raw bytes)."""
        fut: Future = Future()
        fut.msg_id = msg_id  # type: ignore[attr-defined]
        fut.sent = time.monotonic()  # type: ignore[attr-defined]
        self._pending[msg_id] = fut
        return fut

    def next_id(self) -> int:
        return next(self._ids)

    def call(self, method: str, params: Any = None, timeout: float = 60) -> Any:
        """The result of a request; raises RuntimeError on a JSON-RPC error."""
        reply = self.request(method, params).result(timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error'].get('code')} {reply['error'].get('message')}")
        return reply.get("result")

    def notify(self, method: str, params: Any = None) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def cancel(self, fut: Future) -> None:
        self.notify("$/cancelRequest", {"id": fut.msg_id})  # type: ignore[attr-defined]

    @property
    def unanswered(self) -> list[Future]:
        return [f for f in list(self._pending.values()) if not f.done()]

    def _read_loop(self) -> None:
        try:
            while True:
                length = None
                while True:
                    line = self.rfile.readline()
                    if not line:
                        raise EOFError
                    if line in (b"\r\n", b"\n"):
                        break
                    name, _, value = line.decode("ascii", "replace").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                if length is None:
                    raise ValueError("a message without Content-Length")
                self._dispatch(json.loads(self.rfile.read(length)))
        except (EOFError, OSError, ValueError):
            pass
        finally:
            self.closed = True
            with self._cond:
                self._cond.notify_all()

    def _dispatch(self, msg: dict) -> None:
        if "method" in msg and "id" in msg:
            self.send({"jsonrpc": "2.0", "id": msg["id"], "result": self._answer(msg["method"], msg.get("params"))})
        elif "method" in msg:
            with self._cond:
                self.notifications.append((time.monotonic(), msg["method"], msg.get("params")))
                self._cond.notify_all()
        else:
            fut = self._pending.pop(msg.get("id"), None)
            if fut is None:
                self.unexpected_replies += msg.get("id") is not None
                return
            fut.answered = time.monotonic()  # type: ignore[attr-defined]
            fut.set_result(msg)

    def _answer(self, method: str, params: Any) -> Any:
        if method == "workspace/applyEdit":
            labels = [(c["textDocument"]["uri"], c["textDocument"].get("version"))
                      for c in (params.get("edit") or {}).get("documentChanges") or []]
            current = all(version == self.versions.get(uri) for uri, version in labels)
            self.applied += current
            self.refused += not current
            self.stale_edits += any(version is None or version < self.acked.get(uri, 0) for uri, version in labels)
            return {"applied": True} if current else {"applied": False, "failureReason": "version mismatch"}
        if method == "workspace/configuration":
            return [{} for _ in params.get("items", [])]
        return None

    # -- LSP helpers ------------------------------------------------------------------------------
    def initialize(self, options: dict | None = None, timeout: float = 60) -> dict:
        caps = {"window": {"workDoneProgress": True},
                "workspace": {"applyEdit": True, "configuration": False, "workspaceEdit": {"documentChanges": True}},
                "textDocument": {"inlineCompletion": {"dynamicRegistration": False}}}
        result = self.call("initialize", {"processId": os.getpid(), "rootUri": None, "capabilities": caps,
                                          "initializationOptions": options}, timeout=timeout)
        self.notify("initialized", {})
        return result

    def wait_for(self, predicate: Any, timeout: float = 60, since: int = 0) -> tuple[float, str, Any]:
        """The first notification after index `since` for which predicate(method, params) holds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for item in self.notifications[since:]:
                    if predicate(item[1], item[2]):
                        return item
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise TimeoutError(f"no matching notification within {timeout:.0f}s")
                self._cond.wait(left)

    def wait_status(self, state: str, timeout: float = 180, since: int = 0) -> dict:
        return self.wait_for(lambda m, p: m == "dgls/status" and p.get("state") == state, timeout, since)[2]

    def mark(self) -> int:
        with self._cond:
            return len(self.notifications)

    def messages_since(self, since: int) -> list[str]:
        """Text of the messages and statuses the server sent after `since`."""
        with self._cond:
            return [str(p.get("message", "")) for _, m, p in self.notifications[since:]
                    if m in ("window/showMessage", "window/logMessage", "dgls/status") and isinstance(p, dict)]

    def open(self, uri: str, text: str, version: int = 1, language: str = "python") -> None:
        self.versions[uri] = version
        self.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": language,
                                                              "version": version, "text": text}})

    def change(self, uri: str, version: int, changes: list[dict]) -> None:
        self.versions[uri] = version
        self.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                               "contentChanges": changes})

    def ack(self, uri: str) -> Future:
        """A cheap round trip after a change: once answered, the server has read that version.

        (Replies and server requests share one ordered stream, so an applyEdit that arrives after
        the answer and still names an older version was sent by a server that knew better.)"""
        version = self.versions.get(uri, 0)
        fut = self.request("textDocument/codeAction", {
            "textDocument": {"uri": uri}, "range": {"start": position(0, 0), "end": position(0, 0)},
            "context": {"diagnostics": [], "only": ["quickfix"]}})
        fut.add_done_callback(lambda _: self.acked.__setitem__(uri, max(self.acked.get(uri, 0), version)))
        return fut

    def close_doc(self, uri: str) -> None:
        self.versions.pop(uri, None)
        self.notify("textDocument/didClose", {"textDocument": {"uri": uri}})

    def alive(self) -> bool:
        return not self.closed and (self.proc is None or self.proc.poll() is None)

    def shutdown(self, timeout: float = 15) -> int | None:
        """shutdown + exit; the process's exit status (None over a socket)."""
        try:
            if not self.closed:
                self.request("shutdown").result(timeout)
                self.notify("exit")
        except Exception:
            pass
        if self.sock is not None:
            self.drop()
        if self.proc is None:
            return None
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def drop(self) -> None:
        """Vanish without a word, as a crashed editor does."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def position(line: int, character: int) -> dict:
    return {"line": line, "character": character}
