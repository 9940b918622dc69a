"""`dgls doctor --engine-url URL`: is the team's vLLM server usable from here?

Three checks, each one line: the server answers `/v1/models` (and how fast), the model it serves
(and its context length), and one tiny infill round trip through the chat API with its latency.
"""

from __future__ import annotations

import argparse
import threading
import time

from dgls.engine import EngineError, InfillRequest


def _line(ok: bool, label: str, detail: str) -> bool:
    """One check, as `dgls doctor` prints them."""
    print(f"  [{'ok' if ok else '!!'}] {label:<14} {detail}")
    return ok


def run(args: argparse.Namespace) -> int:
    from .cli import remote_options
    from .remote_engine import RemoteEngine
    from .remote_http import RemoteError, exchange, read_json

    options = remote_options(args)
    print(f"dgls doctor: engine server {options.shown_url}")
    try:
        engine = RemoteEngine(options, model=args.model, raise_errors=True)
    except EngineError as exc:
        _line(False, "settings", str(exc))
        return 1
    _line(True, "settings", f"{engine.endpoint.where}, API key {'from $' + options.api_key_env if options.api_key_env else 'none'}, "
                            f"timeout {options.timeout:g} s")
    cancel = threading.Event()
    started = time.perf_counter()
    try:
        with exchange(engine.endpoint, "GET", "/v1/models", None, cancel) as response:
            listed = read_json(response, engine.endpoint, cancel)
    except RemoteError as exc:
        _line(False, "reachable", str(exc))
        return 1
    ms = (time.perf_counter() - started) * 1000
    ids = [m.get("id") for m in listed.get("data", []) if isinstance(m, dict)] if isinstance(listed, dict) else []
    _line(bool(ids), "reachable", f"/v1/models answered in {ms:.0f} ms" + ("" if ids else ", listing no model"))
    try:
        model = engine.served_model(cancel)
    except RemoteError as exc:
        _line(False, "model", str(exc))
        return 1
    served = model in ids
    length = f", context {engine.max_model_len} tokens" if engine.max_model_len else ""
    _line(served, "model", f"{model}{length}" + ("" if served else f" is not among those served: {', '.join(map(str, ids))}"))
    try:
        res = engine.infill(InfillRequest(prefix="def square(x):\n    return ", suffix="\n\n\nprint(square(3))\n",
                                          single_line=True, max_tokens=8, seed=0, language="python"), cancel=cancel)
    except RemoteError as exc:
        _line(False, "infill", str(exc))
        return 1
    s = res.stats
    _line(True, "infill", f"{res.text!r} in {s.total_ms:.0f} ms (first text after {s.encode_ms:.0f} ms, "
                          f"{s.prefix_tokens} prompt tokens, {s.span_tokens} reply tokens)")
    healthy = served
    print("all good" if healthy else "some checks failed (see !! above)")
    return 0 if healthy else 1
