"""`dgls serve --engine-url` end to end: a real `dgls serve` process, the real LSP client, and a real
HTTP server on loopback answering as vLLM does (fake_vllm). Cancellation, supersession, failures,
the server disappearing mid-request, and several editors' requests going out together."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dgls.engine.infill_prompt import HOLE
from fake_vllm import Behaviour, FakeVllm
from lsp_client import LspClient, RpcError, pos, rng

_uris = itertools.count()
TEXT = "def add(a, b):\n    return \n\n\nprint(add(1, 2))\n"


def new_uri() -> str:
    return f"file:///tmp/dgls-remote/{next(_uris)}.py"


@pytest.fixture()
def vllm():
    with FakeVllm() as srv:
        yield srv


def start(srv: FakeVllm, *args: str, env: dict | None = None) -> LspClient:
    client = LspClient.spawn("--engine-url", srv.url, "--engine-timeout", "5", *args, env=env)
    client.initialize(options={"dgls": {"debounceMs": 0}})
    client.wait_status("ready", 60)
    return client


def inline(client: LspClient, uri: str, line: int = 1, character: int = 11, timeout: float = 30):
    return client.call("textDocument/inlineCompletion", {
        "textDocument": {"uri": uri}, "position": pos(line, character), "context": {"triggerKind": 1}},
        timeout=timeout)


def ask(client: LspClient, uri: str, line: int = 1, character: int = 11):
    return client.request("textDocument/inlineCompletion", {
        "textDocument": {"uri": uri}, "position": pos(line, character), "context": {"triggerKind": 1}})


def wait_until(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_remote_infill_end_to_end(vllm):
    vllm.default = Behaviour(reply="return a + b", chunks=3)  # a chat model restating the line start
    client = start(vllm)
    try:
        uri = client.open(TEXT, uri=new_uri())
        (item,) = inline(client, uri)
        assert item["insertText"] == "a + b"
        assert item["range"] == rng(1, 11, 1, 11)
        chat = vllm.chats()[-1]
        content = chat.body["messages"][0]["content"]
        assert content.endswith("def add(a, b):\n    return " + HOLE + "\n\n\nprint(add(1, 2))\n")
        assert chat.body["stream"] is True and "Authorization" not in chat.headers
        actions = client.call("textDocument/codeAction", {"textDocument": {"uri": uri}, "range": rng(1, 4, 1, 10),
                                                          "context": {"diagnostics": []}})
        before = len(client.applied)
        out = client.call("workspace/executeCommand", actions[1]["command"])  # rewrite, a versioned edit
        assert out["applied"] is True
        (change,) = client.applied[before]["edit"]["documentChanges"]
        assert change["textDocument"] == {"uri": uri, "version": 1}
        assert vllm.chats()[-1].body["messages"][0]["content"].endswith("replace it:\nreturn")
        maps = Path(f"/proc/{client.proc.pid}/maps")
        if maps.exists():  # the model runs on the server: this process never loads torch
            assert "libtorch" not in maps.read_text()
    finally:
        assert client.close() == 0


def test_api_key_from_the_environment(vllm):
    vllm.api_key = "sk-team"
    client = start(vllm, "--engine-api-key-env", "DGLS_E2E_KEY", env={"DGLS_E2E_KEY": "sk-team"})
    try:
        assert inline(client, client.open(TEXT, uri=new_uri()))
        assert {r.headers["Authorization"] for r in vllm.requests} == {"Bearer sk-team"}
    finally:
        client.close()


def test_cancel_request_and_supersession_close_the_http_request(vllm):
    vllm.default = Behaviour(delay=60)
    client = start(vllm)
    try:
        uri = client.open(TEXT, uri=new_uri())
        fut = ask(client, uri)
        wait_until(lambda: len(vllm.chats()) == 1)
        sent = time.monotonic()
        client.cancel(fut)
        with pytest.raises(RpcError) as err:
            fut.result(10)
        assert err.value.code == -32800
        wait_until(lambda: vllm.chats()[0].disconnected is not None)
        print(f"\n$/cancelRequest -> server saw the connection close: {(vllm.chats()[0].disconnected - sent) * 1000:.0f} ms")
        fut = ask(client, uri)  # a newer version of the document supersedes the running request
        wait_until(lambda: len(vllm.chats()) == 2)
        client.change(uri, 2, [{"range": rng(0, 0, 0, 0), "text": "# edited\n"}])
        assert fut.result(10) is None
        wait_until(lambda: vllm.chats()[1].disconnected is not None)
    finally:
        client.close()


def test_failures_answer_empty_and_show_in_the_status(vllm):
    client = start(vllm)
    try:
        uri = client.open(TEXT, uri=new_uri())
        vllm.script = [Behaviour(kind="status", status=503, message="no capacity"),
                       Behaviour(kind="truncate", reply="a + b + c", chunks=3)]
        mark = client.mark()
        assert inline(client, uri) is None
        status = client.wait_status("error", 10, since=mark)
        assert "HTTP 503: no capacity" in status["message"]
        mark = client.mark()
        assert inline(client, uri) is None
        assert "truncated stream" in client.wait_status("error", 10, since=mark)["message"]
        mark = client.mark()
        assert inline(client, uri)  # the server is back: an answer, and the status says ready again
        client.wait_status("ready", 10, since=mark)
    finally:
        assert client.close() == 0


def test_the_server_disappearing_mid_request(vllm):
    port = vllm.port
    vllm.default = Behaviour(delay=60)
    client = start(vllm)
    try:
        uri = client.open(TEXT, uri=new_uri())
        fut = ask(client, uri)
        wait_until(lambda: len(vllm.chats()) == 1)
        mark = client.mark()
        gone = time.monotonic()
        vllm.stop()
        assert fut.result(10) is None  # an empty answer, not an error reply or a hang
        answered = fut.answered - gone  # type: ignore[attr-defined]
        message = client.wait_status("error", 10, since=mark)["message"]
        assert "closed the connection" in message
        print(f"\nserver gone mid-request -> empty answer after {answered * 1000:.0f} ms; status: {message}")
        mark = client.mark()
        assert inline(client, uri) is None
        assert "connection refused" in client.wait_status("error", 10, since=mark)["message"]
        with FakeVllm(port=port) as back:  # it comes back on the same address: serving resumes
            mark = client.mark()
            assert inline(client, uri)
            client.wait_status("ready", 10, since=mark)
            assert len(back.chats()) == 1
    finally:
        assert client.close() == 0


def test_several_editors_requests_go_out_together(vllm):
    vllm.default = Behaviour(delay=1.0)
    client = start(vllm)
    try:
        uris = [client.open(TEXT, uri=new_uri()) for _ in range(3)]
        futures = [ask(client, uri) for uri in uris]
        assert all(f.result(30) for f in futures)
        chats = vllm.chats()
        first_done = min(c.received + c.served_ms / 1000 for c in chats)
        assert len(chats) == 3 and all(c.received < first_done for c in chats)
    finally:
        client.close()


def test_the_engine_url_setting(vllm):
    """An editor can name the server in its settings (initializationOptions) instead of the command line."""
    client = LspClient.spawn()
    try:
        client.initialize(options={"dgls": {"engineUrl": vllm.url, "model": "team-model", "debounceMs": 0}})
        client.wait_status("ready", 60)
        assert inline(client, client.open(TEXT, uri=new_uri()))
        assert vllm.chats()[-1].body["model"] == "team-model"
    finally:
        assert client.close() == 0


def test_doctor_checks_the_server(vllm):
    dgls = str(Path(sys.executable).with_name("dgls"))
    ok = subprocess.run([dgls, "doctor", "--engine-url", vllm.url], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.splitlines()
    assert any(line.startswith("  [ok] reachable") and "/v1/models answered in" in line for line in lines)
    assert any(line.startswith("  [ok] model") and "diffusiongemma" in line and "8192" in line for line in lines)
    assert any(line.startswith("  [ok] infill") and "'a + b' in" in line for line in lines)
    assert [r.path for r in vllm.requests] == ["/v1/models", "/v1/models", "/v1/chat/completions"]
    vllm.stop()
    down = subprocess.run([dgls, "doctor", "--engine-url", vllm.url], capture_output=True, text=True, timeout=60)
    assert down.returncode == 1 and "[!!] reachable" in down.stdout and "connection refused" in down.stdout
