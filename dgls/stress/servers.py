"""The servers under test: a private copy of the model, `dgls serve` over stdio or as a TCP daemon,
and what the suite reads about their process (memory, CPU time, the log they wrote).

The model is always copied into the run's own directory: the fault section corrupts and deletes
it, and the user's checkpoint must never be touched.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .client import Endpoint, RpcClient, server_command

FAULT_ENV = "DGLS_FAULT_FILE"  # read by dgls.fault_injection inside the server
LISTENING = re.compile(r"listening on (\S+):(\d+)")


def copy_model(model: str | None, workdir: Path) -> Path:
    """A private copy of the checkpoint directory (the embedded default when `model` is None)."""
    from dgls.engine.loading import resolve_model_dir

    source = resolve_model_dir(model)
    target = workdir / "model"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.md", "training_state.json"))
    return target


@dataclass
class ServerRun:
    """One `dgls serve` process: its log file, its fault file and (over TCP) its endpoint."""

    proc: subprocess.Popen
    log_path: Path
    fault_path: Path
    endpoint: Endpoint | None = None
    clients: list[RpcClient] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def inject(self, fault: str) -> None:
        """Arm a one-shot fault inside the server's engine (see dgls.fault_injection)."""
        tmp = self.fault_path.with_suffix(".tmp")
        tmp.write_text(fault, encoding="utf-8")
        tmp.replace(self.fault_path)

    def stop(self, timeout: float = 15) -> int:
        for client in self.clients:
            client.shutdown(timeout)
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def _env(fault_path: Path, threads: int) -> dict[str, str]:
    return {**os.environ, FAULT_ENV: str(fault_path), "OMP_NUM_THREADS": str(threads)}


def start_stdio(model_dir: Path, workdir: Path, threads: int = 1) -> tuple[ServerRun, RpcClient]:
    """`dgls serve --model DIR` on pipes, with its log in `workdir`."""
    log_path = Path(tempfile.mkstemp(prefix="stdio-", suffix=".log", dir=workdir)[1])
    fault_path = workdir / f"fault-{log_path.stem}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(server_command("--model", str(model_dir)), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=log, env=_env(fault_path, threads))
    client = RpcClient(proc.stdout, proc.stdin, proc=proc)
    run = ServerRun(proc=proc, log_path=log_path, fault_path=fault_path)
    run.clients.append(client)
    return run, client


def start_daemon(model_dir: Path, workdir: Path, threads: int = 1, timeout: float = 120) -> ServerRun:
    """`dgls serve --tcp --port 0` on loopback, its token file in `workdir`; waits until it says
    where it listens."""
    from dgls import auth

    log_path = Path(tempfile.mkstemp(prefix="tcp-", suffix=".log", dir=workdir)[1])
    fault_path, token_path = workdir / f"fault-{log_path.stem}", workdir / f"{log_path.stem}.token"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(server_command("--tcp", "--host", "127.0.0.1", "--port", "0", "--model", str(model_dir),
                                               "--token-file", str(token_path)),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                env=_env(fault_path, threads))
    run = ServerRun(proc=proc, log_path=log_path, fault_path=fault_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = LISTENING.search(run.log_text())
        if found:
            run.endpoint = Endpoint(found.group(1), int(found.group(2)), auth.read_token(token_path))
            return run
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    run.stop()
    raise RuntimeError(f"the TCP daemon did not start: {run.log_text()[-400:]}")


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (Linux /proc); 0.0 where it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def idle_fraction(pid: int, seconds: float = 1.0) -> float:
    """The share of one core the process used over `seconds` (about 0 when its engine is idle)."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


def tracebacks(log: str) -> int:
    """Tracebacks the server wrote to its log (reported; a handled fault may log one on purpose)."""
    return log.count("Traceback (most recent call last)")
