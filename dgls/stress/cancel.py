"""The cancel storm: many requests, each cancelled at a random moment, while the document changes.

Passes when every request is answered (a result, or the RequestCancelled error), the server's
engine is idle once the answers are in (its process stops using CPU and the last status is not
"busy"), and no `workspace/applyEdit` names a version older than one the server had already read.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from .client import RpcClient, position
from .fuzz import probe, settle, tally
from .messages import SAMPLE
from .servers import idle_fraction, start_stdio, tracebacks

# Slow enough that a cancel often lands while the denoising loop runs.
SLOW = {"steps": 6, "maxSpanTokens": 16, "debounceMs": 0}
CURSOR = (13, 26)  # the end of "return self.size * " in SAMPLE
MAX_IN_FLIGHT = 4


def _request(client: RpcClient, rng: random.Random, uri: str) -> Future:
    """An inline completion, a completion, or a complete-here command on the live version."""
    pick = rng.random()
    if pick < 0.55:
        return client.request("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": position(*CURSOR), "context": {"triggerKind": 1}})
    if pick < 0.7:
        return client.request("textDocument/completion", {
            "textDocument": {"uri": uri}, "position": position(*CURSOR), "context": {"triggerKind": 1}})
    here = {"start": position(*CURSOR), "end": position(*CURSOR)}
    return client.request("workspace/executeCommand", {"command": "dgls.completeHere", "arguments": [
        {"textDocument": {"uri": uri, "version": client.versions[uri]}, "range": here}]})


def _edit(client: RpcClient, uri: str, version: int) -> Future:
    """Type a character at the end of the file and remove it again: positions stay valid."""
    line = SAMPLE.count("\n")
    change = ({"range": {"start": position(line, 0), "end": position(line, 0)}, "text": "x"} if version % 2 == 0
              else {"range": {"start": position(line, 0), "end": position(line, 1)}, "text": ""})
    client.change(uri, version, [change])
    return client.ack(uri)


def _baseline(client: RpcClient, uri: str) -> float:
    """The median time of an uncancelled request here, so cancels land before, during and after."""
    times = []
    for _ in range(3):
        fut = _request(client, random.Random(0), uri)
        fut.result(120)
        times.append(fut.answered - fut.sent)  # type: ignore[attr-defined]
    return sorted(times)[1]


def run_cancel(model_dir: Path, workdir: Path, count: int, seed: int = 0, answer_timeout: float = 120) -> dict[str, Any]:
    """`count` requests, each cancelled after a random delay of up to 1.5x an uncancelled request's time."""
    rng = random.Random(seed)
    server, client = start_stdio(model_dir, workdir)
    uri = "file:///tmp/dgls-stress/cancel.py"
    try:
        client.initialize({"dgls": SLOW})
        client.wait_status("ready")
        client.open(uri, SAMPLE)
        max_delay = 1.5 * _baseline(client, uri)
        version, owed, acks = 1, [], []
        started = time.monotonic()
        for _ in range(count):
            while sum(not f.done() for f in owed[-MAX_IN_FLIGHT * 2:]) >= MAX_IN_FLIGHT and client.alive():
                time.sleep(0.005)
            fut = _request(client, rng, uri)
            owed.append(fut)
            time.sleep(rng.random() * max_delay)
            client.cancel(fut)
            if rng.random() < 0.3:
                version += 1
                acks.append(_edit(client, uri, version))
        settle(owed + acks, answer_timeout)
        seconds = time.monotonic() - started
        figures: dict[str, Any] = {**tally(owed), "seconds": round(seconds, 1), "edits": version - 1,
                                   "max_cancel_delay_s": round(max_delay, 3)}
        figures["cancelled"] = figures["error_codes"].get("-32800", 0)
        figures["cpu_after"] = round(idle_fraction(server.pid, 1.5), 3)
        statuses = [p.get("state") for _, m, p in client.notifications if m == "dgls/status"]
        figures["last_status"] = statuses[-1] if statuses else None
        figures.update(applied_edits=client.applied, refused_edits=client.refused, stale_edits=client.stale_edits)
        figures["alive"] = client.alive()
        figures["serving_after"] = figures["alive"] and probe(client)
    finally:
        figures_code = server.stop()
    figures["exit_code"] = figures_code
    figures["tracebacks"] = tracebacks(server.log_text())
    figures["failures"] = cancel_failures(figures)
    return figures


def cancel_failures(f: dict[str, Any]) -> list[str]:
    out = []
    if f["unanswered"]:
        out.append(f"{f['unanswered']} requests were never answered")
    if f["cpu_after"] > 0.25:
        out.append(f"the engine kept working after the storm ({f['cpu_after']:.0%} of a core)")
    if f["last_status"] == "busy":
        out.append("the last status is still 'busy'")
    if f["stale_edits"]:
        out.append(f"{f['stale_edits']} edits named a version the server knew was stale")
    if not f["alive"] or not f["serving_after"]:
        out.append("the server stopped serving")
    if f["exit_code"] != 0:
        out.append(f"exit status {f['exit_code']} after shutdown")
    return out
