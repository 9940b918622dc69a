"""Measure the server over stdio (figures, not assertions): initialize-to-ready time, inline
completion latency p50/p95, and the time from `$/cancelRequest` to the RequestCancelled answer.

    python tests/server_figures.py [--model DIR] [-n 20]     (default: a fresh tiny checkpoint)
    python tests/server_figures.py --model DIR --functions   (the function tests, through the server)
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
    parser.add_argument("--functions", action="store_true",
                        help="instead: blank each function body of dgls's function tasks, ask for an inline "
                             "completion there, apply the first item and run the function's test")
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
    if args.functions:
        function_tests(client)
        client.close()
        return
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
        time.sleep(0.02)  # land mid-denoise: a trained model may settle long before its step budget
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
          + ", ".join(f"{a:.1f}" if a >= 0 else "answered before the cancel" for a, _ in cancels)
          + " ms; cancel -> a 1-step probe answered: " + ", ".join(f"{b:.0f}" for _, b in cancels) + " ms")
    client.close()


def _offset(text: str, position: dict) -> int:
    """A UTF-16 LSP position as a str offset (the task files are ASCII, so columns are chars)."""
    lines = text.split("\n")
    return sum(len(line) + 1 for line in lines[: position["line"]]) + position["character"]


def function_tests(client: LspClient) -> None:
    """What a user (or a reviewer) gets: the server's first inline item applied, the test run."""
    from dgls.evaluation.functions import TASKS_FILE, function_tasks, passes

    tasks = function_tasks(TASKS_FILE.read_text(encoding="utf-8"))
    passed, empty, latencies = [], 0, []
    for i, task in enumerate(tasks):
        text = task.prefix + task.suffix
        uri = client.open(text, uri=f"file:///tmp/dgls-functions/{i}-{task.name}.py")
        line = task.prefix.count("\n")
        col = len(task.prefix) - task.prefix.rfind("\n") - 1
        t = time.monotonic()
        items = client.call("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": pos(line, col), "context": {"triggerKind": 1}}, timeout=300)
        latencies.append((time.monotonic() - t) * 1000)
        if not items or not items[0]["insertText"].strip():
            empty += 1
            continue
        r = items[0]["range"]
        new = text[: _offset(text, r["start"])] + items[0]["insertText"] + text[_offset(text, r["end"]):]
        if passes(new, f"test_{task.name}"):
            passed.append(task.name)
    print(f"function tests through the server: {len(passed)}/{len(tasks)} pass {passed}; "
          f"{empty} empty answers; inline completion p50 {statistics.median(latencies):.0f} ms")


if __name__ == "__main__":
    main()
