"""Measure the server over stdio (figures, not assertions): initialize-to-ready time, inline
completion latency p50/p95, and the time from `$/cancelRequest` to the RequestCancelled answer.

    python tests/server_figures.py [--model DIR] [-n 20]     (default: a fresh tiny checkpoint)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from lsp_client import LspClient, RpcError, pos

TEXT = "import os\n\n\ndef list_python_files(root):\n    found = []\n    for name in os.listdir(root):\n" \
       "        if name.endswith('.py'):\n            \n    return found\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    parser.add_argument("-n", type=int, default=20)
    parser.add_argument("--at", default="7:12", help="LINE:COL of the cursor (7:12 is an empty block line; "
                                                     "5:15 is mid-line, a single-line span)")
    args = parser.parse_args()
    model = args.model
    if model is None:
        from dgls.engine.testing import make_tiny_checkpoint

        model = str(make_tiny_checkpoint(tempfile.mkdtemp(prefix="dgls-figures-")))
    client = LspClient.spawn("--model", model)
    started = time.monotonic()
    client.initialize()
    answered = time.monotonic()
    client.wait_status("ready", 300)
    ready = time.monotonic()
    print(f"initialize answered in {(answered - started) * 1000:.0f} ms; ready after {ready - started:.2f} s")
    line, col = (int(x) for x in args.at.split(":"))
    uri = client.open(TEXT)
    latencies = []
    client.call("textDocument/inlineCompletion", {"textDocument": {"uri": uri}, "position": pos(line, col),
                                                  "context": {"triggerKind": 1}})  # warm-up, not counted
    for i in range(args.n):
        client.change(uri, i + 2, [{"range": {"start": pos(line, col), "end": pos(line, col)}, "text": ""}])
        t = time.monotonic()
        client.call("textDocument/inlineCompletion", {"textDocument": {"uri": uri}, "position": pos(line, col),
                                                      "context": {"triggerKind": 1}})
        latencies.append((time.monotonic() - t) * 1000)
    q = statistics.quantiles(latencies, n=20)
    print(f"inline completion over stdio, n={len(latencies)}: p50 {statistics.median(latencies):.0f} ms, "
          f"p95 {q[18]:.0f} ms (defaults: planner budget, model's steps)")
    client.notify("workspace/didChangeConfiguration", {"settings": {"dgls": {"steps": 1000, "maxSpanTokens": 48}}})
    cancels = []
    for _ in range(5):
        mark = client.mark()
        fut = client.request("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": pos(line, col), "context": {"triggerKind": 1}})
        client.wait_status("busy", 30, since=mark)
        time.sleep(0.5)
        sent = time.monotonic()
        client.cancel(fut)
        try:
            fut.result(60)
        except RpcError as exc:
            assert exc.code == -32800
        cancels.append((fut.answered - sent) * 1000)
        # the worker takes the next job only once the cancelled loop returned: a 1-step probe
        # finishing soon after shows the denoising stopped (instead of running its 1000 steps)
        client.notify("workspace/didChangeConfiguration", {"settings": {"dgls": {"steps": 1, "maxSpanTokens": 4}}})
        probe = client.request("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": pos(line, col), "context": {"triggerKind": 1}})
        probe.result(60)
        cancels[-1] = (cancels[-1], (probe.answered - sent) * 1000)
        client.notify("workspace/didChangeConfiguration", {"settings": {"dgls": {"steps": 1000, "maxSpanTokens": 48}}})
    print("$/cancelRequest -> RequestCancelled: "
          + ", ".join(f"{a:.1f}" for a, _ in cancels) + " ms; cancel -> a 1-step probe answered: "
          + ", ".join(f"{b:.0f}" for _, b in cancels) + " ms")
    client.close()


if __name__ == "__main__":
    main()
