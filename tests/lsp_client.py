"""A small raw JSON-RPC LSP client for end-to-end tests: real pipes or sockets, no mocks.

It answers the server's requests the way an editor would (workspace/applyEdit applies the edit
when its version matches, progress tokens are accepted, workspace/configuration returns the
settings given) and records every notification, so tests can wait for `dgls/status`.
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
from typing import Any

FILE_URI = "file:///tmp/dgls-test/example.py"


def server_command(*args: str) -> list[str]:
    """`dgls serve ...` from this interpreter's environment (the console script users run)."""
    return [os.path.join(os.path.dirname(sys.executable), "dgls"), "serve", *args]


class RpcError(Exception):
    def __init__(self, error: dict) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code, self.message = error.get("code"), error.get("message")


class LspClient:
    """Speaks LSP over a byte stream pair; `request` returns a Future of the result."""

    def __init__(self, rfile: Any, wfile: Any, proc: subprocess.Popen | None = None,
                 sock: Any = None) -> None:
        self.rfile, self.wfile, self.proc, self.sock = rfile, wfile, proc, sock
        self._ids = itertools.count(1)
        self._pending: dict[Any, Future] = {}
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self.notifications: list[tuple[float, str, Any]] = []
        self.applied: list[dict] = []
        self.settings: dict = {}
        self.versions: dict[str, int] = {}
        self.apply_result = True
        self.closed = False
        threading.Thread(target=self._read_loop, daemon=True).start()

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def spawn(cls, *args: str, env: dict | None = None) -> LspClient:
        stderr = None if os.environ.get("DGLS_TEST_STDERR") else subprocess.DEVNULL
        proc = subprocess.Popen(server_command(*args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=stderr, env={**os.environ, **(env or {})})
        return cls(proc.stdout, proc.stdin, proc=proc)

    @classmethod
    def connect(cls, port: int, host: str = "127.0.0.1", token: str | None = None) -> LspClient:
        """A daemon connection; the token is read from the daemon's token file unless given."""
        from dgls import auth

        sock = socket.create_connection((host, port), timeout=10)
        sock.settimeout(None)
        sock.sendall(auth.handshake_line(token or auth.read_token(auth.token_path(port))))
        return cls(sock.makefile("rb"), sock.makefile("wb"), sock=sock)

    # -- wire ---------------------------------------------------------------------------------
    def send(self, payload: dict | bytes) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        with self._lock:
            self.wfile.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            self.wfile.flush()

    def request(self, method: str, params: Any = None) -> Future:
        msg_id = next(self._ids)
        fut: Future = Future()
        fut.msg_id = msg_id  # type: ignore[attr-defined]
        fut.sent = time.monotonic()  # type: ignore[attr-defined]
        self._pending[msg_id] = fut
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return fut

    def call(self, method: str, params: Any = None, timeout: float = 60) -> Any:
        return self.request(method, params).result(timeout)

    def notify(self, method: str, params: Any = None) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def cancel(self, fut: Future) -> None:
        self.notify("$/cancelRequest", {"id": fut.msg_id})  # type: ignore[attr-defined]

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
                    name, _, value = line.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                msg = json.loads(self.rfile.read(length))
                self._dispatch(msg)
        except (EOFError, OSError, ValueError):
            pass
        finally:
            self.closed = True
            for fut in list(self._pending.values()):
                if not fut.done():
                    fut.set_exception(EOFError("server closed the connection"))
            with self._cond:
                self._cond.notify_all()

    def _dispatch(self, msg: dict) -> None:
        if "method" in msg and "id" in msg:
            result = self._answer(msg["method"], msg.get("params"))
            self.send({"jsonrpc": "2.0", "id": msg["id"], "result": result})
        elif "method" in msg:
            with self._cond:
                self.notifications.append((time.monotonic(), msg["method"], msg.get("params")))
                self._cond.notify_all()
        else:
            fut = self._pending.pop(msg.get("id"), None)
            if fut is None:
                return
            fut.answered = time.monotonic()  # type: ignore[attr-defined]
            if "error" in msg:
                fut.set_exception(RpcError(msg["error"]))
            else:
                fut.set_result(msg.get("result"))

    def _answer(self, method: str, params: Any) -> Any:
        """What an editor replies to the server's own requests."""
        if method == "workspace/applyEdit":
            self.applied.append(params)
            changes = params["edit"].get("documentChanges") or []
            ok = self.apply_result and all(
                c["textDocument"].get("version") in (None, self.versions.get(c["textDocument"]["uri"]))
                for c in changes)
            return {"applied": ok} if ok else {"applied": False, "failureReason": "version mismatch"}
        if method == "workspace/configuration":
            return [self.settings for _ in params["items"]]
        return None  # window/workDoneProgress/create, client/registerCapability

    # -- LSP helpers --------------------------------------------------------------------------
    def initialize(self, options: dict | None = None, encodings: list[str] | None = None,
                   inline: bool = True) -> dict:
        caps: dict[str, Any] = {
            "window": {"workDoneProgress": True},
            "workspace": {"applyEdit": True, "configuration": True,
                          "workspaceEdit": {"documentChanges": True}},
            "textDocument": {"completion": {"completionItem": {"snippetSupport": False}}},
        }
        if inline:
            caps["textDocument"]["inlineCompletion"] = {"dynamicRegistration": False}
        if encodings:
            caps["general"] = {"positionEncodings": encodings}
        result = self.call("initialize", {"processId": os.getpid(), "rootUri": None, "capabilities": caps,
                                          "initializationOptions": options})
        self.notify("initialized", {})
        return result

    def mark(self) -> int:
        """A point in the notification stream, for `wait_for(..., since=mark)`."""
        with self._cond:
            return len(self.notifications)

    def wait_for(self, predicate: Any, timeout: float = 60, since: int = 0) -> tuple[float, str, Any]:
        """The first notification (t, method, params) after `since` with predicate(method, params) true."""
        deadline = time.monotonic() + timeout
        seen = since
        with self._cond:
            while True:
                for item in self.notifications[seen:]:
                    if predicate(item[1], item[2]):
                        return item
                seen = len(self.notifications)
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise TimeoutError(f"no matching notification; got {[n[1] for n in self.notifications]}")
                self._cond.wait(left)

    def wait_status(self, state: str, timeout: float = 120, since: int = 0) -> dict:
        """Wait for a `dgls/status` notification with this state."""
        return self.wait_for(lambda m, p: m == "dgls/status" and p["state"] == state, timeout, since)[2]

    def statuses(self) -> list[str]:
        return [p["state"] for _, m, p in self.notifications if m == "dgls/status"]

    def open(self, text: str, uri: str = FILE_URI, language: str = "python", version: int = 1) -> str:
        self.versions[uri] = version
        self.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": language,
                                                              "version": version, "text": text}})
        return uri

    def change(self, uri: str, version: int, changes: list[dict]) -> None:
        self.versions[uri] = version
        self.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                               "contentChanges": changes})

    def close(self, timeout: float = 10) -> int | None:
        """shutdown + exit; returns the process exit status (None for sockets)."""
        try:
            if not self.closed:
                self.call("shutdown", None, timeout=timeout)
                self.notify("exit")
        except Exception:
            pass
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        if self.sock is not None:
            self.sock.close()
        return None


def pos(line: int, character: int) -> dict:
    return {"line": line, "character": character}


def rng(l1: int, c1: int, l2: int, c2: int) -> dict:
    return {"start": pos(l1, c1), "end": pos(l2, c2)}
