"""The language server's own overhead per remote request (figures, not assertions).

A real `dgls serve --engine-url` process, the real LSP client, and the loopback vLLM stand-in
(fake_vllm) that records how long it spent on each request (from the request read to the last
byte written). Overhead = the editor's round trip - the server's time: LSP framing, planning
(tree-sitter), scheduling, the prompt, the HTTP connection, stream parsing and post-processing
(clean-up and the parse check). Then: what an editor sees when the server disappears mid-request.

    python tests/remote_figures.py [-n 100]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from fake_vllm import Behaviour, FakeVllm
from lsp_client import LspClient, pos

SOURCES = sorted((Path(__file__).resolve().parents[1] / "dgls").glob("*.py"))


def document(lines: int) -> str:
    text = "\n".join(p.read_text(encoding="utf-8") for p in SOURCES).splitlines()
    while len(text) < lines:
        text += text
    return "\n".join(text[:lines]) + "\n"


def cursors(text: str, count: int) -> list[tuple[int, int]]:
    """(line, end of line) of indented code lines spread through the text."""
    lines = text.split("\n")
    picks = [i for i, line in enumerate(lines) if line.startswith("        ") and line.strip()]
    step = max(1, len(picks) // count)
    return [(i, len(lines[i])) for i in picks[::step][:count]]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def overhead(client: LspClient, server: FakeVllm, text: str, n: int, label: str) -> None:
    uri = client.open(text, uri=f"file:///tmp/dgls-figures/{label}.py")
    rows = []
    for line, col in cursors(text, n):
        before = len(server.chats())
        fut = client.request("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": pos(line, col), "context": {"triggerKind": 1}})
        fut.result(30)
        total = (fut.answered - fut.sent) * 1000  # type: ignore[attr-defined]
        served = sum(c.served_ms or 0.0 for c in server.chats()[before:])
        rows.append((total, total - served))
    totals, own = [r[0] for r in rows], [r[1] for r in rows]
    print(f"  {label:<28} n={len(rows):<4} round trip p50 {statistics.median(totals):6.1f} ms   "
          f"own overhead p50 {pct(own, 0.5):5.1f} ms  p95 {pct(own, 0.95):5.1f} ms")


def disappearing(client: LspClient, port: int, rounds: int) -> None:
    text = "def add(a, b):\n    return \n"
    uri = client.open(text, uri="file:///tmp/dgls-figures/gone.py")
    gone_ms, refused_ms = [], []
    for _ in range(rounds):
        with FakeVllm(port=port) as server:
            server.default = Behaviour(delay=60)
            fut = client.request("textDocument/inlineCompletion", {
                "textDocument": {"uri": uri}, "position": pos(1, 11), "context": {"triggerKind": 1}})
            while not server.chats():
                time.sleep(0.005)
            stopped = time.monotonic()
            server.stop()
            assert fut.result(30) is None
            gone_ms.append((fut.answered - stopped) * 1000)  # type: ignore[attr-defined]
        fut = client.request("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": pos(1, 11), "context": {"triggerKind": 1}})
        assert fut.result(30) is None
        refused_ms.append((fut.answered - fut.sent) * 1000)  # type: ignore[attr-defined]
    print(f"  server gone mid-request: empty answer {pct(gone_ms, 0.5):.1f} ms after it went (p95 "
          f"{pct(gone_ms, 0.95):.1f}); next request refused -> empty answer in {pct(refused_ms, 0.5):.1f} ms (p50)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=100)
    args = parser.parse_args()
    with FakeVllm() as server:
        client = LspClient.spawn("--engine-url", server.url)
        client.initialize(options={"dgls": {"debounceMs": 0}})
        client.wait_status("ready", 60)
        print("dgls serve --engine-url, loopback server answering at once (one SSE chunk):")
        server.default = Behaviour(reply="value = compute(item)", chunks=1)
        for lines in (400, 5_000):
            overhead(client, server, document(lines), args.n, f"{lines}-line file")
        server.default = Behaviour(reply="value = compute(item)", chunks=4, delay=0.3)
        print("the same, the server answering after 300 ms (vLLM's median time to first token), 4 chunks:")
        overhead(client, server, document(400), max(10, args.n // 5), "400-line file, 300 ms server")
    disappearing(client, server.port, rounds=10)
    client.close()


if __name__ == "__main__":
    main()
