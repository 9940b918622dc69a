"""The TCP daemon: two editors at once over one engine, a model that fails to load, a reload."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time

import pytest
from lsp_client import LspClient, RpcError, pos, server_command

FAST = {"steps": 2, "maxSpanTokens": 8}


@pytest.fixture(scope="module")
def daemon():
    """`dgls serve --tcp --port 0` with a model path that does not exist (yet)."""
    proc = subprocess.Popen(server_command("--tcp", "--port", "0", "--model", "/nonexistent/dgls-model"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    port = None
    deadline = time.monotonic() + 60
    while port is None and time.monotonic() < deadline:
        line = proc.stderr.readline().decode()
        if not line:
            break
        if m := re.search(r"listening on 127\.0\.0\.1:(\d+)", line):
            port = int(m.group(1))
    assert port, "the daemon did not report its port"
    echo = os.environ.get("DGLS_TEST_STDERR")
    threading.Thread(target=lambda: [print(ln.decode(), end="") if echo else None for ln in proc.stderr],
                     daemon=True).start()  # keep the pipe drained
    yield port
    proc.terminate()
    proc.wait(10)


def complete(client: LspClient, uri: str, line: int, character: int):
    return client.request("textDocument/inlineCompletion", {
        "textDocument": {"uri": uri}, "position": pos(line, character), "context": {"triggerKind": 1}})


def test_missing_model_then_reload_then_two_editors(daemon, tiny_model_dir):
    a = LspClient.connect(daemon)
    a.initialize(options={"dgls": FAST})
    error = a.wait_status("error", timeout=120)
    assert "does not exist" in error["message"]
    shown = a.wait_for(lambda m, p: m == "window/showMessage", 5)[2]
    assert shown["type"] == 1 and "/nonexistent/dgls-model" in shown["message"]
    uri = a.open("x = 1\ny = \n", uri="file:///shared/name.py")
    with pytest.raises(RpcError) as err:  # a clear error, not a hang
        complete(a, uri, 1, 4).result(30)
    assert err.value.code == -32803 and "does not exist" in err.value.message

    # the setting that fixes it reloads the engine without restarting the server
    mark = a.mark()
    a.notify("workspace/didChangeConfiguration", {"settings": {"dgls": {"model": str(tiny_model_dir)}}})
    a.wait_status("loading", 30, since=mark)
    a.wait_status("ready", 120, since=mark)

    # a second editor joins the same daemon: its own documents (same URI, other text), same engine
    b = LspClient.connect(daemon)
    b.initialize(options={"dgls": FAST})
    b.wait_status("ready", 30)
    b.open("def g():\n    return \n", uri="file:///shared/name.py")
    fa, fb = complete(a, uri, 1, 4), complete(b, "file:///shared/name.py", 1, 11)
    items_a, items_b = fa.result(60), fb.result(60)
    assert isinstance(items_a, list) and isinstance(items_b, list)
    # each answer is positioned in its own client's document (random weights may fill nothing)
    assert all(item["range"]["start"] == pos(1, 4) for item in items_a)
    assert all(item["range"]["start"] == pos(1, 11) for item in items_b)

    # one editor leaving (shutdown + exit) does not stop the daemon for the other
    a.close()
    time.sleep(0.2)
    assert isinstance(complete(b, "file:///shared/name.py", 1, 11).result(60), list)
    b.close()
