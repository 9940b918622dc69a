"""`dgls latency`: single-line inline completion latency through `dgls serve` over stdio, as a
user sees it, quiet or beside busy processes, for chosen thread counts and OpenMP wait policies.

Each configuration starts its own `dgls serve`, waits for the model, sends one warm-up request,
then for every item opens a held-out standard-library file (never trained on) with one line
blanked after its indentation, asks for an inline completion at the cursor there (invoked, so no
debounce) and closes it. `--busy N` runs N plain Python loops beside the server meanwhile. The
load average is recorded with every figure: on a shared machine the figures mean little without.

    dgls latency -n 40 --threads 1,2 --wait passive,active --busy 0,1 [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUSY_LOOP = "while True: pass"
MAX_FILE_CHARS = 60_000


@dataclass(frozen=True)
class Item:
    """One held-out cursor: the file with a line blanked after its indentation."""

    relpath: str
    text: str
    line: int
    character: int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .cli import add_model_arguments

    add_model_arguments(parser)
    parser.add_argument("-n", type=int, default=40, help="timed requests per configuration")
    parser.add_argument("--seed", type=int, default=0, help="which held-out cursors")
    parser.add_argument("--threads", default="0", help="comma-separated thread counts to try (0: auto)")
    parser.add_argument("--wait", default="passive", help="comma-separated OpenMP wait policies: passive,active")
    parser.add_argument("--busy", default="0", help="comma-separated numbers of busy neighbour processes")
    parser.add_argument("--deadline-ms", type=int, default=None, help="dgls.deadlineMs for the session")
    parser.add_argument("--json", action="store_true", help="print one JSON object per configuration")


def held_out_items(n: int, seed: int) -> list[Item]:
    """`n` cursors in held-out standard-library files (the training split never saw them)."""
    from dgls.engine.train.data import SKIP_DIRS, is_held_out, stdlib_root

    root = stdlib_root()
    files = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in SKIP_DIRS for part in rel.parts) or not is_held_out(f"stdlib/{rel.as_posix()}"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if 200 < len(text) <= MAX_FILE_CHARS:
            files.append((f"stdlib/{rel.as_posix()}", text))
    if not files:
        raise SystemExit(f"dgls latency: no held-out files found under {root}")
    rng, items = random.Random(seed), []
    while len(items) < n:
        relpath, text = rng.choice(files)
        lines = text.split("\n")
        code = [i for i, ln in enumerate(lines) if len(ln.strip()) >= 2 and not ln.lstrip().startswith("#")]
        i = rng.choice(code)
        indent = len(lines[i]) - len(lines[i].lstrip())
        lines[i] = lines[i][:indent]
        items.append(Item(relpath, "\n".join(lines), i, indent))
    return items


class StdioClient:
    """Just enough of an LSP client to time requests: answers the server's own requests with null."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env)
        self._ids = itertools.count(1)
        self.statuses: list[str] = []

    def send(self, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def read(self) -> dict:
        length = 0
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise EOFError("the server exited")
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return json.loads(self.proc.stdout.read(length))

    def call(self, method: str, params: Any) -> Any:
        msg_id = next(self._ids)
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        while True:
            msg = self.read()
            if "method" in msg:
                if "id" in msg:
                    self.send({"jsonrpc": "2.0", "id": msg["id"], "result": None})
                elif msg["method"] == "dgls/status":
                    self.statuses.append(msg["params"]["state"])
            elif msg.get("id") == msg_id:
                return msg

    def notify(self, method: str, params: Any) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def wait_ready(self, timeout: float = 600) -> None:
        end = time.monotonic() + timeout
        while "ready" not in self.statuses and "error" not in self.statuses:
            if time.monotonic() > end:
                raise TimeoutError("the model did not load")
            msg = self.read()
            if msg.get("method") == "dgls/status":
                self.statuses.append(msg["params"]["state"])
        if "error" in self.statuses:
            raise SystemExit("dgls latency: the model failed to load")

    def close(self) -> None:
        try:
            self.call("shutdown", None)
            self.notify("exit", None)
            self.proc.wait(10)
        except (OSError, EOFError, subprocess.TimeoutExpired):
            self.proc.kill()


def complete(client: StdioClient, item: Item, uri: str) -> tuple[float, bool, bool]:
    """(seconds, answered without error, had an item) for one cursor."""
    client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                            "text": item.text}})
    started = time.monotonic()
    reply = client.call("textDocument/inlineCompletion", {
        "textDocument": {"uri": uri}, "position": {"line": item.line, "character": item.character},
        "context": {"triggerKind": 1}})
    seconds = time.monotonic() - started
    client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    result = reply.get("result")
    items = result.get("items") if isinstance(result, dict) else result
    return seconds, "error" not in reply, bool(items)


def measure(args: argparse.Namespace, threads: int, wait: str, busy: int, items: list[Item]) -> dict:
    """One configuration: a fresh server, its busy neighbours, the timed requests."""
    command = [os.path.join(os.path.dirname(sys.executable), "dgls"), "serve", "--threads", str(threads)]
    for flag in ("model", "device", "dtype"):
        if getattr(args, flag):
            command += [f"--{flag}", getattr(args, flag)]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env["OMP_WAIT_POLICY"] = wait.upper()
    client = StdioClient(command, env)
    neighbours: list[subprocess.Popen] = []
    try:
        options = {"dgls": {"deadlineMs": args.deadline_ms}} if args.deadline_ms else None
        client.call("initialize", {"processId": os.getpid(), "rootUri": None, "capabilities": {},
                                   "initializationOptions": options})
        client.notify("initialized", {})
        client.wait_ready()
        complete(client, items[0], "file:///dgls-latency/warmup.py")
        neighbours = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(busy)]
        load_before = os.getloadavg()[0]
        times, errors, filled = [], 0, 0
        for i, item in enumerate(items):
            seconds, ok, had = complete(client, item, f"file:///dgls-latency/{i}/{Path(item.relpath).name}")
            times.append(seconds * 1000)
            errors += not ok
            filled += had
        load_after = os.getloadavg()[0]
    finally:
        for proc in neighbours:
            proc.kill()
            proc.wait()
        client.close()
    return {"threads": threads, "wait": wait, "busy": busy, "n": len(times),
            "p50_ms": round(statistics.median(times)), "p95_ms": round(_p95(times)), "max_ms": round(max(times)),
            "errors": errors, "with_items": filled, "load1_before": load_before, "load1_after": load_after}


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop the server and busy loops
    items = held_out_items(args.n, args.seed)
    configs = itertools.product([int(t) for t in args.threads.split(",")], args.wait.split(","),
                                [int(b) for b in args.busy.split(",")])
    for threads, wait, busy in configs:
        row = measure(args, threads, wait, busy, items)
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print(f"threads {threads or 'auto'} wait {wait:<7} busy {busy}: n={row['n']} p50 {row['p50_ms']} ms "
                  f"p95 {row['p95_ms']} ms max {row['max_ms']} ms errors {row['errors']} with items {row['with_items']} "
                  f"(load {row['load1_before']:.2f} -> {row['load1_after']:.2f})", flush=True)
    return 0
