"""Load and soak: several editors typing into one TCP daemon, as people do.

Each typist types words at `keys_per_second` (every key is a didChange and an automatic inline
completion at the new cursor, as an editor sends them), pauses between words, starts a new line
now and then, and in a soak also closes its document, opens a fresh one and reconnects. A
request counts as superseded when a later key was sent for the same document before its answer
came; the latencies reported are of the answers that were not superseded (what the user sees).
"""

from __future__ import annotations

import bisect
import contextlib
import random
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .client import Endpoint, RpcClient, position
from .fuzz import settle
from .messages import SAMPLE
from .servers import ServerRun, idle_fraction, rss_mb, start_daemon, tracebacks

WORDS = ("value", "self", "result", "index", "items", "append", "return", "count", "total", "name")


@dataclass
class Sample:
    sent: float
    latency: float | None  # None: superseded, unanswered or an error
    outcome: str  # "shown" (items), "empty" (an answer with nothing to show), "superseded", "error", "unanswered"


@dataclass
class Typist:
    """One editor on its own connection and document."""

    endpoint: Endpoint
    seed: int
    keys_per_second: float = 10.0
    churn: bool = False  # soak: rotate documents and reconnect
    samples: list[Sample] = field(default_factory=list)
    reconnects: int = 0

    def run(self, until: float) -> None:
        rng = random.Random(self.seed)
        client, uri, words = self._connect(), self._new_doc_name(rng), 0
        client.open(uri, SAMPLE)
        line, col, version, pending, changes = SAMPLE.count("\n"), 0, 1, [], []
        while time.monotonic() < until and client.alive():
            word = rng.choice(WORDS) + rng.choice(["", " ", "(", " = "])
            for ch in word:
                version += 1
                changes.append(time.monotonic())
                client.change(uri, version, [{"range": {"start": position(line, col), "end": position(line, col)},
                                              "text": ch}])
                col += 1
                fut = client.request("textDocument/inlineCompletion", {"textDocument": {"uri": uri},
                                     "position": position(line, col), "context": {"triggerKind": 2}})
                fut.version = version  # type: ignore[attr-defined]
                pending.append(fut)
                time.sleep(1.0 / self.keys_per_second)
            words += 1
            if rng.random() < 0.25:
                changes.append(time.monotonic())
                client.change(uri, version + 1, [{"range": {"start": position(line, col), "end": position(line, col)},
                                                  "text": "\n    "}])
                version, line, col = version + 1, line + 1, 4
            time.sleep(max(0.0, min(rng.uniform(0.5, 3.0), until - time.monotonic())))  # a pause to think
            if self.churn and words % 15 == 0:
                changes.append(time.monotonic())
                client.close_doc(uri)
                settle(pending, 30)
                self._collect(pending, changes)
                if rng.random() < 0.5:
                    client.shutdown()
                    client, self.reconnects = self._connect(), self.reconnects + 1
                uri, line, col, version = self._new_doc_name(rng), SAMPLE.count("\n"), 0, 1
                client.open(uri, SAMPLE)
        settle(pending, 30)
        self._collect(pending, changes)
        client.shutdown()

    def _connect(self) -> RpcClient:
        client = RpcClient.connect(self.endpoint)
        client.initialize()
        return client

    def _new_doc_name(self, rng: random.Random) -> str:
        return f"file:///tmp/dgls-stress/typist{self.seed}-{rng.randrange(10**9)}.py"

    def _collect(self, pending: list[Future], changes: list[float]) -> None:
        """Turn finished requests into samples; a request is superseded when the document changed
        (a key, a new line, a close) after it was sent and before its answer came."""
        for fut in pending:
            later = bisect.bisect_right(changes, fut.sent)  # type: ignore[attr-defined]
            next_key = changes[later] if later < len(changes) else float("inf")
            if not fut.done():
                self.samples.append(Sample(fut.sent, None, "unanswered"))  # type: ignore[attr-defined]
                continue
            reply, answered = fut.result(), fut.answered  # type: ignore[attr-defined]
            if "error" in reply:
                outcome = "error"
            elif answered > next_key:
                outcome = "superseded"
            else:
                outcome = "shown" if reply.get("result") else "empty"
            latency = answered - fut.sent if outcome in ("shown", "empty") else None  # type: ignore[attr-defined]
            self.samples.append(Sample(fut.sent, latency, outcome))  # type: ignore[attr-defined]
        pending.clear()
        changes.clear()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def summarize(samples: list[Sample]) -> dict[str, Any]:
    shown = [s.latency for s in samples if s.latency is not None]
    outcomes = {f"{k}s" if k == "error" else k: sum(s.outcome == k for s in samples)
                for k in ("shown", "empty", "superseded", "error", "unanswered")}
    return {"requests": len(samples), **outcomes, "p50_s": percentile(shown, 0.5), "p95_s": percentile(shown, 0.95),
            "mean_s": round(statistics.fmean(shown), 3) if shown else None}


def _drive(endpoint: Endpoint, clients: int, seconds: float, churn: bool, seed: int,
           on_tick: Any = None) -> list[Typist]:
    typists = [Typist(endpoint, seed + i, churn=churn) for i in range(clients)]
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=t.run, args=(until,), daemon=True) for t in typists]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        if on_tick is not None:
            on_tick()
        time.sleep(1.0)
    return typists


def _warm(endpoint: Endpoint) -> None:
    """One answered request first, so the figures start from a loaded, warmed engine."""
    client = RpcClient.connect(endpoint)
    client.initialize()
    client.wait_status("ready")
    client.open("file:///tmp/dgls-stress/warm.py", SAMPLE)
    client.request("textDocument/inlineCompletion", {"textDocument": {"uri": "file:///tmp/dgls-stress/warm.py"},
                   "position": position(13, 26), "context": {"triggerKind": 1}}).result(300)
    client.shutdown()


@contextlib.contextmanager
def serving(model_dir: Path, workdir: Path, daemon: ServerRun | None = None) -> Iterator[ServerRun]:
    """The daemon given, or a new one that is stopped afterwards."""
    server = daemon or start_daemon(model_dir, workdir)
    try:
        yield server
    finally:
        if daemon is None:
            server.stop()


def run_load(model_dir: Path, workdir: Path, clients: int = 3, seconds: float = 30, seed: int = 0,
             daemon: ServerRun | None = None) -> dict[str, Any]:
    """`clients` typists for `seconds` against one daemon: latency of shown answers and memory."""
    with serving(model_dir, workdir, daemon) as server:
        _warm(server.endpoint)
        rss_before = rss_mb(server.pid)
        typists = _drive(server.endpoint, clients, seconds, churn=False, seed=seed)
        rss_after = rss_mb(server.pid)
        figures = {"clients": clients, "seconds": seconds, **summarize([s for t in typists for s in t.samples]),
                   "rss_before_mb": round(rss_before, 1), "rss_after_mb": round(rss_after, 1),
                   "cpu_after": round(idle_fraction(server.pid), 3), "alive": server.proc.poll() is None}
    figures["tracebacks"] = tracebacks(server.log_text())
    figures["failures"] = _failures(figures)
    return figures


def run_soak(model_dir: Path, workdir: Path, seconds: float, clients: int = 2, seed: int = 100,
             daemon: ServerRun | None = None) -> dict[str, Any]:
    """Typing with document and connection churn for `seconds`: RSS growth and latency drift,
    first fifth against last fifth."""
    rss: list[tuple[float, float]] = []
    with serving(model_dir, workdir, daemon) as server:
        _warm(server.endpoint)
        start = time.monotonic()
        rss.append((start, rss_mb(server.pid)))
        typists = _drive(server.endpoint, clients, seconds, churn=True, seed=seed,
                         on_tick=lambda: rss.append((time.monotonic(), rss_mb(server.pid))))
        samples = [s for t in typists for s in t.samples]
        fifth, end = seconds / 5, start + seconds
        first = summarize([s for s in samples if s.sent < start + fifth])
        last = summarize([s for s in samples if s.sent >= end - fifth])
        rss_first = statistics.median(v for t, v in rss if t < start + fifth)
        rss_last = statistics.median([v for t, v in rss if t >= end - fifth] or [rss[-1][1]])
        figures = {"clients": clients, "seconds": seconds, **summarize(samples),
                   "reconnects": sum(t.reconnects for t in typists),
                   "first_fifth_p50_s": first["p50_s"], "last_fifth_p50_s": last["p50_s"],
                   "first_fifth_p95_s": first["p95_s"], "last_fifth_p95_s": last["p95_s"],
                   "rss_first_fifth_mb": round(rss_first, 1), "rss_last_fifth_mb": round(rss_last, 1),
                   "rss_growth_mb": round(rss_last - rss_first, 1),
                   "rss_by_minute_mb": [round(v, 1) for t, v in rss[::60]],
                   "cpu_after": round(idle_fraction(server.pid), 3), "alive": server.proc.poll() is None}
        if first["p50_s"] and last["p50_s"]:
            figures["p50_drift"] = round(last["p50_s"] / first["p50_s"], 2)
    figures["tracebacks"] = tracebacks(server.log_text())
    figures["failures"] = _failures(figures)
    return figures


def _failures(f: dict[str, Any]) -> list[str]:
    out = []
    if f["unanswered"]:
        out.append(f"{f['unanswered']} requests were never answered")
    if f["errors"]:
        out.append(f"{f['errors']} requests failed")
    if not f["shown"] + f["empty"]:
        out.append("no answer reached the user: every request was superseded")
    if f["cpu_after"] > 0.25:
        out.append(f"the engine kept working after the typing stopped ({f['cpu_after']:.0%} of a core)")
    if not f["alive"]:
        out.append("the daemon died")
    return out
