"""End-to-end LSP tests over stdio: a real `dgls serve` process, a real tiny model, raw JSON-RPC.

One server process serves the whole module (model loading dominates the cost); each test opens
its own document URI so the tests stay independent.
"""

from __future__ import annotations

import contextlib
import itertools
import time

import pytest
from lsp_client import LspClient, RpcError, pos, rng

FAST = {"steps": 2, "maxSpanTokens": 8, "debounceMs": 30, "deadlineMs": 120_000}  # deadlines: test_deadline.py
_uris = itertools.count()


def new_uri(name: str = "t.py") -> str:
    return f"file:///tmp/dgls-test/{next(_uris)}-{name}"


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    client = LspClient.spawn("--model", str(tiny_model_dir), env={"OMP_NUM_THREADS": "1"})
    started = time.monotonic()
    result = client.initialize(options={"dgls": FAST})
    client.init_result = result
    client.init_seconds = time.monotonic() - started
    client.wait_status("ready", timeout=180)
    yield client
    assert client.close() == 0


@contextlib.contextmanager
def slow_infills(client: LspClient):
    """Many denoising steps, so that a cancel or an edit lands while the engine is still working."""
    slow = {"steps": 400, "maxSpanTokens": 48}
    client.notify("workspace/didChangeConfiguration", {"settings": {"dgls": slow}})
    try:
        yield
    finally:
        client.notify("workspace/didChangeConfiguration", {"settings": {"dgls": FAST}})


def inline(client: LspClient, uri: str, line: int, character: int, kind: int = 1, timeout: float = 60):
    return client.call("textDocument/inlineCompletion", {
        "textDocument": {"uri": uri}, "position": pos(line, character), "context": {"triggerKind": kind}},
        timeout=timeout)


def test_initialize_answers_at_once_and_advertises_features(server):
    caps = server.init_result["capabilities"]
    assert caps["inlineCompletionProvider"] == {}
    assert caps["completionProvider"]["triggerCharacters"] == ["(", "=", ":"]
    assert caps["codeActionProvider"]["codeActionKinds"] == ["refactor.rewrite"]
    assert set(caps["executeCommandProvider"]["commands"]) == {
        "dgls.infillSelection", "dgls.rewriteSelection", "dgls.completeHere"}
    assert caps["textDocumentSync"]["change"] == 2  # incremental
    assert caps["positionEncoding"] == "utf-16"
    assert server.init_result["serverInfo"]["name"] == "dgls"
    # initialize came back before the model was ready: "loading" precedes "ready", with progress
    states = server.statuses()
    assert states.index("loading") < states.index("ready")
    server.wait_for(lambda m, p: m == "$/progress" and p["value"]["kind"] == "begin", 5)
    server.wait_for(lambda m, p: m == "$/progress" and p["value"]["kind"] == "end", 5)


def test_inline_completion_range_is_the_span(server):
    # a half-written line: the file does not parse without an answer, so the random tiny model's
    # draft is held to tree-sitter's check alone (where it parses, CPython would drop the draft)
    uri = server.open("def add(a, b):\n    return a +\n\nprint(add(1, 2))\n", uri=new_uri())
    items = inline(server, uri, 1, 14)
    assert items and isinstance(items, list)
    r = items[0]["range"]
    assert r["start"]["line"] == 1 and r["start"]["character"] <= 14
    assert (r["end"]["line"], r["end"]["character"]) >= (1, 14)
    assert isinstance(items[0]["insertText"], str)
    assert server.statuses()[-1] == "ready"


def test_inline_completion_for_an_old_version_is_dropped(server):
    uri = server.open("x = 1\ny = \n", uri=new_uri())
    fut = server.request("textDocument/inlineCompletion", {
        "textDocument": {"uri": uri}, "position": pos(1, 4), "context": {"triggerKind": 1}})
    server.change(uri, 2, [{"range": rng(0, 4, 0, 5), "text": "2"}])
    assert fut.result(60) in (None, [])  # the document moved on: no text for version 1
    assert inline(server, uri, 1, 4)  # the new version is served


def test_automatic_requests_are_debounced_and_superseded(server):
    uri = server.open("total = 0\nfor i in range(3):\n    total += \n", uri=new_uri())
    first = server.request("textDocument/inlineCompletion", {
        "textDocument": {"uri": uri}, "position": pos(2, 13), "context": {"triggerKind": 2}})
    second = server.request("textDocument/inlineCompletion", {
        "textDocument": {"uri": uri}, "position": pos(2, 13), "context": {"triggerKind": 2}})
    assert first.result(60) in (None, [])  # superseded by the newer request for the same document
    assert second.result(60)


def test_completion_fallback(server):
    uri = server.open("import os\nname = os.\n", uri=new_uri())
    result = server.call("textDocument/completion", {
        "textDocument": {"uri": uri}, "position": pos(1, 10), "context": {"triggerKind": 1}})
    (item,) = result["items"]
    assert item["detail"] == "dgls" and item["sortText"] == "!dgls"
    assert item["textEdit"]["range"]["start"]["line"] == 1
    assert item["label"] and "\n" not in item["label"]
    assert item["insertTextFormat"] == 1
    # not on every keystroke: other characters and incomplete re-triggers get nothing
    for context in ({"triggerKind": 2, "triggerCharacter": "."}, {"triggerKind": 3}):
        quiet = server.call("textDocument/completion", {
            "textDocument": {"uri": uri}, "position": pos(1, 10), "context": context})
        assert quiet["items"] == []


def test_code_actions_and_command_round_trip(server):
    text = "def area(r):\n    return 3.14 * r * r\n"
    uri = server.open(text, uri=new_uri())
    actions = server.call("textDocument/codeAction", {
        "textDocument": {"uri": uri}, "range": rng(1, 11, 1, 23), "context": {"diagnostics": []}})
    assert [a["title"] for a in actions] == ["dgls: Infill selection", "dgls: Rewrite selection"]
    cursor = server.call("textDocument/codeAction", {
        "textDocument": {"uri": uri}, "range": rng(1, 4, 1, 4), "context": {"diagnostics": []}})
    assert [a["command"]["command"] for a in cursor] == ["dgls.completeHere"]
    before = len(server.applied)
    command = actions[1]["command"]
    out = server.call("workspace/executeCommand", {"command": command["command"],
                                                   "arguments": command["arguments"]})
    assert out["applied"] is True
    (change,) = server.applied[before]["edit"]["documentChanges"]
    assert change["textDocument"] == {"uri": uri, "version": 1}
    assert change["edits"][0]["range"] == rng(1, 11, 1, 23)


def test_stale_command_is_refused(server):
    uri = server.open("a = 1\nb = 2\n", uri=new_uri())
    server.change(uri, 5, [{"text": "a = 1\nb = 3\n"}])
    before = len(server.applied)
    out = server.call("workspace/executeCommand", {"command": "dgls.rewriteSelection", "arguments": [
        {"textDocument": {"uri": uri, "version": 1}, "range": rng(1, 4, 1, 5)}]})
    assert out["applied"] is False and "changed" in out["failureReason"]
    assert len(server.applied) == before  # no applyEdit was even sent
    # a change while the infill runs: the result is dropped instead of applied
    with slow_infills(server):
        mark = server.mark()
        fut = server.request("workspace/executeCommand", {"command": "dgls.rewriteSelection", "arguments": [
            {"textDocument": {"uri": uri, "version": 5}, "range": rng(1, 4, 1, 5)}]})
        server.wait_status("busy", 30, since=mark)
        server.change(uri, 6, [{"range": rng(0, 0, 0, 0), "text": "# edited\n"}])
        assert fut.result(60)["applied"] is False
    assert len(server.applied) == before


def test_holes_become_separate_edits(server):
    text = "def f(x):\n    y = ...\n    # TODO\n    return y\n"
    uri = server.open(text, uri=new_uri())
    actions = server.call("textDocument/codeAction", {
        "textDocument": {"uri": uri}, "range": rng(0, 0, 3, 12), "context": {"diagnostics": []}})
    assert actions[0]["title"] == "dgls: Infill 2 holes"
    before = len(server.applied)
    out = server.call("workspace/executeCommand", actions[0]["command"])
    assert out["applied"] is True and out["edits"] == 2
    edits = server.applied[before]["edit"]["documentChanges"][0]["edits"]
    assert [e["range"]["start"]["line"] for e in edits] == [1, 2]


def test_cancel_request_stops_denoising(server):
    uri = server.open("def slow():\n    \n", uri=new_uri())
    with slow_infills(server):
        mark = server.mark()
        fut = server.request("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": pos(1, 4), "context": {"triggerKind": 1}})
        server.wait_status("busy", 30, since=mark)
        time.sleep(0.3)  # let it get into the denoising loop
        sent = time.monotonic()
        server.cancel(fut)
        with pytest.raises(RpcError) as err:
            fut.result(60)
        assert err.value.code == -32800
        print(f"\n$/cancelRequest -> RequestCancelled: {(fut.answered - sent) * 1000:.1f} ms")
    assert inline(server, uri, 1, 4) is not None  # the engine is free again


def test_utf16_positions_with_emoji_and_cjk(server):
    text = "s = '😀中文'  # 😀\nt = s + \n"
    uri = server.open(text, uri=new_uri())
    # '😀' is 2 UTF-16 units: line 0 ends at character 16, though it has 14 code points
    items = inline(server, uri, 0, 16)
    assert items and items[0]["range"]["start"] == pos(0, 16)
    actions = server.call("textDocument/codeAction", {
        "textDocument": {"uri": uri}, "range": rng(0, 5, 0, 9), "context": {"diagnostics": []}})
    before = len(server.applied)
    server.call("workspace/executeCommand", actions[1]["command"])
    edit = server.applied[before]["edit"]["documentChanges"][0]["edits"][0]
    assert edit["range"] == rng(0, 5, 0, 9)  # exactly '😀中文' in UTF-16 units


def test_bad_input_gets_errors_and_the_server_keeps_serving(server):
    with pytest.raises(RpcError) as err:
        server.call("dgls/noSuchMethod", {})
    assert err.value.code == -32601
    server.notify("dgls/noSuchNotification", {"x": 1})
    with pytest.raises(RpcError) as err:  # malformed params
        server.call("textDocument/inlineCompletion", {"textDocument": 7, "position": "here"})
    assert err.value.code == -32602
    uri = server.open("a = 1\n", uri=new_uri())
    with pytest.raises(RpcError) as err:  # a line past the end of the document
        inline(server, uri, 99, 0)
    assert err.value.code == -32602
    assert inline(server, uri, 0, 999) is not None  # a character past the line end means its end
    assert inline(server, new_uri(), 0, 0) is None  # unknown URI: empty
    with pytest.raises(RpcError) as err:
        server.call("workspace/executeCommand", {"command": "dgls.completeHere", "arguments": [{"range": 1}]})
    assert err.value.code == -32602
    server.notify("textDocument/didChange", {"textDocument": {"uri": new_uri(), "version": 3},
                                             "contentChanges": [{"text": "x"}]})  # not open
    server.send(b"{this is not json")
    # NUL/binary content and invalid surrogates sent as raw JSON escapes
    weird = new_uri("bin.py")
    server.send(b'{"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {"uri": "'
                + weird.encode() + b'", "languageId": "python", "version": 1, '
                b'"text": "x = \\"\\u0000\\u0001\\ud800\\udfff\\"\\n\\ud83d y = "}}}')
    assert inline(server, weird, 1, 6) is not None
    server.send(b'{"jsonrpc": "2.0", "id": "weird-1", "method": "textDocument/inlineCompletion", "params": '
                b'{"textDocument": {"uri": "' + weird.encode() + b'"}, '
                b'"position": {"line": 0, "character": 3}, "context": {"triggerKind": 1}}}')
    assert inline(server, uri, 0, 0) is not None  # still serving


def test_twenty_megabyte_document(server):
    uri = new_uri("big.py")
    text = "value = 1\n" * 2_000_000  # 20 MB
    server.open(text, uri=uri)
    items = inline(server, uri, 2_000_000, 0, timeout=120)
    assert isinstance(items, list)  # random weights may infill nothing worth showing
    assert all(item["range"]["start"]["line"] == 2_000_000 for item in items)
    server.change(uri, 2, [{"range": rng(5, 0, 5, 0), "text": "# edited\n"}])
    assert inline(server, uri, 3, 0) is not None
    server.notify("textDocument/didClose", {"textDocument": {"uri": uri}})


def test_utf8_position_encoding_is_negotiated(tiny_model_dir):
    client = LspClient.spawn("--model", str(tiny_model_dir), env={"OMP_NUM_THREADS": "1"})
    try:
        caps = client.initialize(options=FAST, encodings=["utf-8", "utf-16"])["capabilities"]
        assert caps["positionEncoding"] == "utf-8"
        uri = client.open("s = '😀'\nt = \n")
        actions = client.call("textDocument/codeAction", {
            "textDocument": {"uri": uri}, "range": rng(0, 5, 0, 9), "context": {"diagnostics": []}})
        assert actions[0]["command"]["arguments"][0]["range"] == rng(0, 5, 0, 9)  # 4 UTF-8 bytes
    finally:
        assert client.close() == 0
