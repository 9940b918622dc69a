"""The fuzz section: thousands of generated hostile messages into one `dgls serve` over stdio.

It passes when the server is still running at the end, every request it owed an answer got a
result or a JSON-RPC error, and a plain request afterwards is served.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from .client import RpcClient, position
from .messages import SAMPLE, Fuzzer
from .servers import start_stdio, tracebacks

FAST = {"steps": 2, "maxSpanTokens": 8, "debounceMs": 20}


def settle(futures: list[Future], timeout: float) -> None:
    """Wait until every future is done, or nothing was answered for `timeout` seconds."""
    last_progress, done = time.monotonic(), -1
    while time.monotonic() - last_progress < timeout:
        now_done = sum(f.done() for f in futures)
        if now_done == len(futures):
            return
        if now_done != done:
            done, last_progress = now_done, time.monotonic()
        time.sleep(0.05)


def tally(futures: list[Future]) -> dict[str, Any]:
    """Answered with a result, with an error (by code), or not at all."""
    codes: Counter = Counter()
    results = unanswered = 0
    for fut in futures:
        if not fut.done():
            unanswered += 1
        elif "error" in fut.result():
            codes[str(fut.result()["error"].get("code"))] += 1
        else:
            results += 1
    return {"requests": len(futures), "results": results, "errors": sum(codes.values()),
            "error_codes": dict(sorted(codes.items())), "unanswered": unanswered}


def probe(client: RpcClient, timeout: float = 60) -> bool:
    """Is the server still serving? A fresh document and an invoked inline completion on it."""
    uri = f"file:///tmp/dgls-stress/probe-{time.monotonic_ns()}.py"
    client.open(uri, SAMPLE)
    try:
        reply = client.request("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": position(13, 26), "context": {"triggerKind": 1}}).result(timeout)
    except Exception:
        return False
    finally:
        client.close_doc(uri)
    return "result" in reply


def run_fuzz(model_dir: Path, workdir: Path, count: int, seed: int = 0, answer_timeout: float = 120) -> dict[str, Any]:
    """Send `count` generated messages, then check the server's answers and health."""
    server, client = start_stdio(model_dir, workdir)
    try:
        client.initialize({"dgls": FAST})
        client.wait_status("ready")
        fuzzer = Fuzzer(seed, client.next_id)
        kinds: Counter = Counter()
        owed: list[Future] = []
        started = time.monotonic()
        for msg in fuzzer.messages(count):
            if not client.alive():
                break
            kinds[msg.kind] += 1
            if msg.msg_id is not None:
                owed.append(client.expect(msg.msg_id))
            try:
                client.send_bytes(msg.body)
            except OSError:
                break
        sent_seconds = time.monotonic() - started
        settle(owed, answer_timeout)
        figures = {"messages": sum(kinds.values()), "by_kind": dict(sorted(kinds.items())), **tally(owed),
                   "send_seconds": round(sent_seconds, 1), "seconds": round(time.monotonic() - started, 1)}
        figures["alive"] = client.alive()
        figures["serving_after"] = figures["alive"] and probe(client)
    finally:
        code = server.stop()
    figures["exit_code"] = code
    figures["tracebacks"] = tracebacks(server.log_text())
    figures["failures"] = fuzz_failures(figures, count)
    return figures


def fuzz_failures(f: dict[str, Any], count: int) -> list[str]:
    out = []
    if f["messages"] < count:
        out.append(f"only {f['messages']} of {count} messages could be sent: the server stopped reading")
    if f["unanswered"]:
        out.append(f"{f['unanswered']} requests were never answered")
    if not f["alive"]:
        out.append("the server died")
    elif not f["serving_after"]:
        out.append("the server no longer serves a plain request")
    if f["exit_code"] != 0:
        out.append(f"exit status {f['exit_code']} after shutdown")
    return out
