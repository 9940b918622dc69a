"""No document text in logs at the default level: a session whose document holds a unique secret,
driven through every feature and through the malformed messages that make pygls log their params,
leaves the secret in neither stderr nor any window/logMessage or showMessage."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import threading
import time
import traceback
import uuid

from lsp_client import LspClient, pos, rng, server_command

from dgls.privacy import HideMessageData, describe

FAST = {"steps": 2, "maxSpanTokens": 8, "debounceMs": 0}


def test_no_document_text_in_logs_at_the_default_level(tiny_model_dir):
    secret = f"zq{uuid.uuid4().hex}"
    proc = subprocess.Popen(server_command("--model", str(tiny_model_dir)), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    stderr: list[bytes] = []
    threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True).start()
    client = LspClient(proc.stdout, proc.stdin, proc=proc)
    client.initialize(options={"dgls": FAST})
    client.wait_status("ready", 180)
    text = f"def {secret}(x):\n    y = \n    return '{secret}'\n"
    uri = client.open(text)
    where = {"textDocument": {"uri": uri}, "position": pos(1, 8)}
    client.call("textDocument/inlineCompletion", {**where, "context": {"triggerKind": 1}}, 60)
    client.call("textDocument/completion", where, 60)
    actions = client.call("textDocument/codeAction", {"textDocument": {"uri": uri}, "range": rng(1, 4, 1, 8),
                                                      "context": {"diagnostics": []}}, 60)
    for action in actions:
        client.call("workspace/executeCommand", action["command"], 60)
    # what makes pygls log a message's params or a traceback: an edit that does not fit, a didOpen
    # of the wrong shape, an unknown notification, a request with bad params, bytes that are not JSON
    client.change(uri, 2, [{"range": rng(99, 0, 99, 1), "text": secret}])
    client.notify("textDocument/didOpen", {"textDocument": {"uri": "file:///b.py", "languageId": "python",
                                                            "version": "one", "text": secret}})
    client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 3},
                                             "contentChanges": [{"range": secret, "text": secret}]})
    client.notify(f"custom/{secret}", {"text": secret})
    client.request("textDocument/inlineCompletion", {"textDocument": {"uri": uri}, "position": secret,
                                                     "context": {"triggerKind": 1, "x": secret}})
    client.request("workspace/executeCommand", {"command": "dgls.infillSelection",
                                                "arguments": [{"textDocument": {"uri": secret}, secret: 1}]})
    client.send(f'{{"jsonrpc": "2.0", "id": 99, "method": "x", "params": "{secret}'.encode())
    client.notify("workspace/didChangeConfiguration", {"settings": {"dgls": {"logLevel": "info"}}})
    client.call("textDocument/inlineCompletion", {**where, "context": {"triggerKind": 1}}, 60)  # still serving
    time.sleep(0.5)
    assert client.close() == 0
    logs = [p["message"] for _, m, p in client.notifications if m in ("window/logMessage", "window/showMessage")]
    err = b"".join(stderr).decode(errors="replace")
    assert "Unable to handle message" in err or "Failed to handle" in err  # the bad messages were logged...
    assert secret not in err  # ...without their text
    assert not [msg for msg in logs if secret in msg]


def _logged(filtered: bool, secret: str) -> str:
    """What a stderr handler prints of pygls' own error records (the calls as pygls makes them)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    if filtered:
        handler.addFilter(HideMessageData())
    logger = logging.getLogger("pygls.protocol.json_rpc")
    logger.addHandler(handler)
    try:
        params = {"textDocument": {"uri": "file:///a.py", "text": f"x = '{secret}'"}}
        try:
            raise ValueError(f"invalid literal: {secret!r}")
        except ValueError:
            logger.exception("Failed to handle notification %r: %s", "textDocument/didOpen", params, exc_info=True)
            logger.error("Unable to deserialize message\n%s", traceback.format_exc())
            logger.exception("Failed to handle request %s %s %s", 7, "textDocument/inlineCompletion", params)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_pygls_error_records_lose_their_params_below_debug():
    secret = f"zq{uuid.uuid4().hex}"
    assert secret in _logged(False, secret)  # what pygls would print unfiltered
    shown = _logged(True, secret)
    assert secret not in shown
    assert "textDocument/didOpen" in shown and "ValueError" in shown  # still says what failed
    assert describe(ValueError(secret)).startswith("ValueError") and secret not in describe(ValueError(secret))
    assert secret in describe(ValueError(secret), debug=True)
