"""The TCP daemon's door: loopback by default, a 0600 token required before any message is read,
`dgls connect` for editors, and each connection hearing only its own log messages."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest
from lsp_client import LspClient, pos, server_command

from dgls import auth

FAST = {"steps": 2, "maxSpanTokens": 8}
SECRET_DOC = "def f():\n    return 1\n"


def start_daemon(runtime: str, *args: str) -> tuple[subprocess.Popen, int, list[str]]:
    """`dgls serve --tcp --port 0 ...` with its own runtime dir; (process, port, stderr lines so far)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_RUNTIME_DIR": runtime}
    proc = subprocess.Popen(server_command("--tcp", "--port", "0", *args), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    lines: list[str] = []
    port = None
    end = time.monotonic() + 60
    while port is None and time.monotonic() < end:
        line = proc.stderr.readline().decode()
        if not line:
            break
        lines.append(line)
        if m := re.search(r"listening on \S+:(\d+)", line):
            port = int(m.group(1))
    assert port, f"the daemon did not report its port: {lines}"

    def drain() -> None:
        for raw in proc.stderr:
            lines.append(raw.decode())

    threading.Thread(target=drain, daemon=True).start()
    return proc, port, lines


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(60)  # a loaded machine may still be loading the model when SIGTERM arrives


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    path = tmp_path_factory.mktemp("runtime")
    os.chmod(path, 0o700)
    old = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(path)  # this process reads the tokens the daemons write here
    yield str(path)
    if old is None:
        os.environ.pop("XDG_RUNTIME_DIR", None)
    else:
        os.environ["XDG_RUNTIME_DIR"] = old


@pytest.fixture(scope="module")
def daemon(runtime, tiny_model_dir):
    proc, port, lines = start_daemon(runtime, "--model", str(tiny_model_dir))
    yield port, lines
    stop(proc)


def lsp_bytes(method: str, params: dict, msg_id: int | None = 1) -> bytes:
    msg = {"jsonrpc": "2.0", "method": method, "params": params}
    if msg_id is not None:
        msg["id"] = msg_id
    body = json.dumps(msg).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def refused(port: int, first: bytes) -> bytes:
    """Send `first` then an initialize and a didOpen; what the daemon sent back before closing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    try:
        sock.sendall(first + lsp_bytes("initialize", {"processId": None, "rootUri": None, "capabilities": {}}))
        sock.sendall(lsp_bytes("textDocument/didOpen", {"textDocument": {
            "uri": "file:///x.py", "languageId": "python", "version": 1, "text": SECRET_DOC}}, None))
    except OSError:
        pass  # closed already
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except OSError:
        pass
    sock.close()
    return received


def test_token_file_is_private(daemon, runtime):
    port, _ = daemon
    path = auth.token_path(port)
    assert path.parent == auth.runtime_dir() and str(path).startswith(runtime)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert len(auth.read_token(path)) == 2 * auth.TOKEN_BYTES


@pytest.mark.parametrize("first", [b"", b"DGLS-TOKEN " + b"0" * 64 + b"\r\n", b"DGLS-TOKEN \r\n"],
                         ids=["no token", "wrong token", "empty token"])
def test_connection_without_the_right_token_is_closed_unread(daemon, first):
    port, lines = daemon
    before = len([ln for ln in lines if "refused a connection" in ln])
    assert refused(port, first) == b""  # closed: no answer to initialize
    end = time.monotonic() + 10
    while len([ln for ln in lines if "refused a connection" in ln]) == before and time.monotonic() < end:
        time.sleep(0.05)
    assert len([ln for ln in lines if "refused a connection" in ln]) == before + 1
    assert not any("connected from" in ln for ln in lines)  # no connection ever got a server


def test_right_token_serves_and_log_messages_stay_with_their_connection(daemon):
    port, _ = daemon
    a, b = LspClient.connect(port), LspClient.connect(port)
    a.initialize(options={"dgls": FAST})
    b.initialize(options={"dgls": FAST})
    a.wait_status("ready", 120)
    b.wait_status("ready", 120)
    uri = b.open("x = 1\ny = \n")
    assert isinstance(b.call("textDocument/inlineCompletion", {
        "textDocument": {"uri": uri}, "position": pos(1, 4), "context": {"triggerKind": 1}}, 60), (list, type(None)))
    a.notify("workspace/didChangeConfiguration", {"settings": {"dgls": {"anotherUnknownOfA": 2}}})
    a.wait_for(lambda m, p: m == "window/logMessage" and "anotherUnknownOfA" in p["message"], 30)
    time.sleep(0.3)
    b_logs = [p["message"] for _, m, p in b.notifications if m == "window/logMessage"]
    a_logs = [p["message"] for _, m, p in a.notifications if m == "window/logMessage"]
    assert any("anotherUnknownOfA" in msg for msg in a_logs)
    assert not any("OfA" in msg for msg in b_logs)
    assert sum("ready" in msg for msg in b_logs) <= 1  # its own engine-ready line, not one per editor
    a.close()
    b.close()


@pytest.mark.parametrize("bridge", [["connect"], ["serve", "--connect"]], ids=["connect", "serve --connect"])
def test_dgls_connect_bridges_an_editor_end_to_end(daemon, bridge):
    port, _ = daemon
    command = [server_command()[0], *bridge, "--port", str(port)]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    client = LspClient(proc.stdout, proc.stdin, proc=proc)
    caps = client.initialize(options={"dgls": FAST})["capabilities"]
    assert caps["inlineCompletionProvider"] == {}
    client.wait_status("ready", 120)
    uri = client.open("def f(x):\n    y = \n    return y\n")
    result = client.call("textDocument/inlineCompletion", {
        "textDocument": {"uri": uri}, "position": pos(1, 8), "context": {"triggerKind": 1}}, 60)
    assert result is None or all(item["range"]["start"] == pos(1, 8) for item in result)
    assert client.close() == 0


def test_dgls_connect_with_a_wrong_token_file_says_so(daemon, tmp_path):
    port, _ = daemon
    bad = tmp_path / "token"
    auth.write_token(bad, "ab" * auth.TOKEN_BYTES)
    out = subprocess.run([server_command()[0], "connect", "--port", str(port), "--token-file", str(bad)],
                         input=lsp_bytes("initialize", {"processId": None, "rootUri": None, "capabilities": {}}),
                         capture_output=True, timeout=60)
    assert out.returncode == 1 and out.stdout == b""
    assert b"wrong token" in out.stderr


def test_non_loopback_needs_allow_remote_and_still_the_token(runtime, tiny_model_dir):
    out = subprocess.run(server_command("--tcp", "--host", "0.0.0.0", "--port", "0"), capture_output=True,
                         timeout=120, env={**os.environ, "XDG_RUNTIME_DIR": runtime})
    assert out.returncode == 1 and b"--allow-remote" in out.stderr
    proc, port, _ = start_daemon(runtime, "--host", "0.0.0.0", "--allow-remote", "--model", str(tiny_model_dir))
    try:
        assert refused(port, b"") == b""
        client = LspClient.connect(port)
        assert "capabilities" in client.initialize(options={"dgls": FAST})
        client.close()
    finally:
        stop(proc)
    assert not auth.token_path(port).exists()  # removed when the daemon stops


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_with_an_editor_mid_request_exits_cleanly(runtime, tiny_model_dir, signum):
    """The signal lands while a connection is busy (progress, a completion in flight): the daemon
    still exits 0, removes its token file and closes the editor's connection. Raising out of the
    signal handler instead sometimes skipped the token's removal or hung the exit."""
    proc, port, lines = start_daemon(runtime, "--model", str(tiny_model_dir))
    client = LspClient.connect(port)
    try:
        client.initialize(options={"dgls": FAST})
        uri = client.open("def f(x):\n    y = \n    return y\n")
        pending = client.request("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": pos(1, 8), "context": {"triggerKind": 1}})
        proc.send_signal(signum)
        assert proc.wait(60) == 0, "".join(lines)
        assert not auth.token_path(port).exists()
        end = time.monotonic() + 10
        while not client.closed and time.monotonic() < end:
            time.sleep(0.05)
        assert client.closed  # the editor sees the connection end, it is not left hanging
        assert pending.done()
    finally:
        if proc.poll() is None:
            proc.kill()
        client.close()


def test_handshake_and_loopback_rules():
    token = auth.new_token()
    assert auth.check_handshake(auth.handshake_line(token), token)
    assert not auth.check_handshake(auth.handshake_line(auth.new_token()), token)
    assert not auth.check_handshake(b"Content-Length: 10\r\n", token)
    assert not auth.check_handshake(auth.handshake_line(token) + b"x" * 10, token)
    assert all(auth.is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "127.0.0.2"))
    assert not any(auth.is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.com"))


def test_a_token_file_others_can_read_is_refused(tmp_path):
    path = tmp_path / "t"
    auth.write_token(path, auth.new_token())
    os.chmod(path, 0o644)
    with pytest.raises(auth.AuthError, match="readable by others"):
        auth.read_token(path)


def test_dgls_connect_without_a_daemon_says_how_to_start_one(runtime):
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    out = subprocess.run([server_command()[0], "connect", "--port", str(port)], input=b"", capture_output=True,
                         timeout=60)
    assert out.returncode == 1 and out.stdout == b""
    assert b"dgls serve --tcp" in out.stderr and len(out.stderr.decode().strip().splitlines()) == 1
