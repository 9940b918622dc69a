"""The fault section: what happens inside a real server when things break, one scenario at a time.

- an exception inside the engine and a MemoryError (armed through the `DGLS_FAULT_FILE` seam):
  the request gets a JSON-RPC error that says what failed, the next request is served;
- the model file corrupted, truncated or deleted while serving: no crash, requests answered, a
  message names the problem; once the file is back the engine reloads by itself;
- an editor that disconnects mid-request from the TCP daemon: the others keep being served and
  the abandoned work stops.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .client import RpcClient, position
from .fuzz import FAST, probe
from .messages import SAMPLE
from .servers import ServerRun, idle_fraction, start_daemon, tracebacks

WEIGHTS = "model.safetensors"


def _inline(client: RpcClient, uri: str, timeout: float = 60) -> dict:
    return client.request("textDocument/inlineCompletion", {"textDocument": {"uri": uri}, "position": position(13, 26),
                                                            "context": {"triggerKind": 1}}).result(timeout)


def _engine_fault(server: ServerRun, client: RpcClient, uri: str, fault: str) -> dict[str, Any]:
    server.inject(fault)
    reply = _inline(client, uri)
    message = (reply.get("error") or {}).get("message", "")
    clear = "error" in reply and ("MemoryError" if fault == "memory" else "RuntimeError") in message
    return {"answered": True, "error_message": message, "clear": clear, "serving_after": probe(client)}


def _corrupt(path: Path) -> None:
    """Overwrite the weights in place, as a crashed writer leaves them: garbage, then truncated."""
    with open(path, "r+b") as f:
        f.seek(0)
        f.write(b"\xde\xad\xbe\xef" * 64)
        f.truncate(4096)


def _file_fault(client: RpcClient, uri: str, model_dir: Path, pristine: Path,
                damage: Callable[[Path], None]) -> dict[str, Any]:
    """Damage the served weights, keep asking, restore them, and watch the engine come back."""
    since = client.mark()
    damage(model_dir / WEIGHTS)
    time.sleep(1.2)  # the host looks at the files at most once a second
    replies = [_inline(client, uri) for _ in range(3)]
    time.sleep(1.0)  # the failed background load reports after it finishes
    messages = [m for m in client.messages_since(since)
                if "could not load" in m or "no .safetensors" in m or "incomplete" in m or WEIGHTS in m]
    restored_at = client.mark()
    shutil.copy2(pristine, model_dir / WEIGHTS)
    time.sleep(1.2)
    _inline(client, uri)
    try:
        client.wait_for(lambda m, p: m == "dgls/status" and p.get("state") == "ready"
                        and str(p.get("message")).endswith("s)"), timeout=120, since=restored_at)
        reloaded = True
    except TimeoutError:
        reloaded = False
    return {"answered": all(r is not None for r in replies), "errors_while_damaged": sum("error" in r for r in replies),
            "reported": bool(messages), "reloaded": reloaded, "serving_after": probe(client),
            "message": messages[0][:200] if messages else ""}


def _disconnect(daemon: ServerRun) -> dict[str, Any]:
    """One editor vanishes with a slow request in flight; another is served; the engine goes idle."""
    leaver = RpcClient.connect(daemon.endpoint)
    leaver.initialize({"dgls": {"steps": 400, "maxSpanTokens": 48}})
    leaver.wait_status("ready")
    uri = "file:///tmp/dgls-stress/leaver.py"
    leaver.open(uri, SAMPLE)
    leaver.request("textDocument/inlineCompletion", {"textDocument": {"uri": uri}, "position": position(13, 26),
                                                      "context": {"triggerKind": 1}})
    time.sleep(0.5)
    leaver.drop()
    stayer = RpcClient.connect(daemon.endpoint)
    daemon.clients.append(stayer)
    stayer.initialize({"dgls": FAST})
    served = probe(stayer)
    time.sleep(0.5)
    return {"serving_after": served, "cpu_after": round(idle_fraction(daemon.pid), 3),
            "alive": daemon.proc.poll() is None}


def run_faults(model_dir: Path, workdir: Path) -> dict[str, Any]:
    """Every scenario, one after the other, against one TCP daemon."""
    pristine = workdir / "pristine.safetensors"
    shutil.copy2(model_dir / WEIGHTS, pristine)
    daemon = start_daemon(model_dir, workdir)
    uri = "file:///tmp/dgls-stress/faults.py"
    scenarios: dict[str, Any] = {}
    try:
        client = RpcClient.connect(daemon.endpoint)
        daemon.clients.append(client)
        client.initialize({"dgls": FAST})
        client.wait_status("ready")
        client.open(uri, SAMPLE)
        scenarios["engine_exception"] = _engine_fault(daemon, client, uri, "error")
        scenarios["memory_error"] = _engine_fault(daemon, client, uri, "memory")
        scenarios["model_corrupted"] = _file_fault(client, uri, model_dir, pristine, _corrupt)
        scenarios["model_deleted"] = _file_fault(client, uri, model_dir, pristine, lambda p: p.unlink())
        scenarios["client_disconnect"] = _disconnect(daemon)
        alive = daemon.proc.poll() is None and client.alive()
    finally:
        daemon.stop()
    figures: dict[str, Any] = {"scenarios": scenarios, "alive": alive, "tracebacks": tracebacks(daemon.log_text())}
    figures["survived"] = sum(not _scenario_failures(name, s) for name, s in scenarios.items())
    figures["failures"] = [f"{name}: {problem}" for name, s in scenarios.items() for problem in _scenario_failures(name, s)]
    if not alive:
        figures["failures"].append("the daemon died")
    return figures


def _scenario_failures(name: str, s: dict[str, Any]) -> list[str]:
    out = []
    if not s.get("serving_after"):
        out.append("the server did not serve afterwards")
    if "clear" in s and not s["clear"]:
        out.append(f"the error does not say what failed: {s['error_message']!r}")
    if "reported" in s and not s["reported"]:
        out.append("no message named the damaged model")
    if "reloaded" in s and not s["reloaded"]:
        out.append("the engine did not reload once the file was back")
    if "answered" in s and not s["answered"]:
        out.append("a request went unanswered")
    if s.get("cpu_after", 0) > 0.25:
        out.append(f"the abandoned work kept running ({s['cpu_after']:.0%} of a core)")
    if s.get("alive") is False:
        out.append("the daemon died")
    return out
