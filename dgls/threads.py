"""How many CPU threads the engine uses, and how its OpenMP threads wait.

torch's OpenMP threads spin-wait between parallel regions by default (GOMP's ACTIVE policy). On
a machine where another process holds a core, a spinning thread steals the core its sibling
needs, and every small matmul waits for a descheduled thread: latency grows several-fold. The
wait policy is read once, when the OpenMP runtime starts (the first torch op), so `prepare()`
runs in the `dgls` entry point before anything imports torch. The thread count can change later,
but torch keeps it per thread: `use()` sets it in the thread that runs the engine (the worker).

Measured with `dgls latency` on the embedded model (2-core machine, load 7-8 from other jobs;
held-out single lines through `dgls serve`, p50/p95): 2 threads passive 2.2/5.5 s, 1 thread
passive 5.0/10.4 s, 1 thread active 4.4/7.9 s, 2 threads active 8.5/21.6 s. Spinning is the
harm, not the threads: with passive waiting every core helps, so `auto` is all cores up to
MAX_AUTO_THREADS (larger models were not measured; the cap bounds what they may take).
"""

from __future__ import annotations

import os
import threading
from typing import Any

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
DEFAULT_WAIT_POLICY = "PASSIVE"
MAX_AUTO_THREADS = 4

_local = threading.local()


def prepare(threads: int | None = None, environ: Any = None) -> None:
    """Before torch is imported: passive OpenMP waiting unless the user chose a policy, and the
    pool sized for an explicit `threads` (the user's own OMP_NUM_THREADS wins)."""
    env = os.environ if environ is None else environ
    env.setdefault(WAIT_POLICY_ENV, DEFAULT_WAIT_POLICY)
    if threads:
        env.setdefault("OMP_NUM_THREADS", str(threads))


def threads_from_argv(argv: list[str]) -> int | None:
    """`--threads N` / `--threads=N` from a raw command line (read before argparse imports torch)."""
    for i, arg in enumerate(argv):
        value = None
        if arg == "--threads" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--threads="):
            value = arg.split("=", 1)[1]
        if value is not None:
            return int(value) if value.isdigit() else None
    return None


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def auto_threads(available: int | None = None) -> int:
    """The measured default: every core this process may use, up to MAX_AUTO_THREADS."""
    available = cores() if available is None else available
    return max(1, min(available, MAX_AUTO_THREADS))


def resolve(setting: int, engine: Any) -> int:
    """The thread count for a setting (0: auto) and an engine on the CPU; 0 leaves torch alone (a
    GPU engine, or a user who set OMP_NUM_THREADS: torch already follows it)."""
    if setting > 0:
        return setting
    if not str(getattr(engine, "device", "cpu")).startswith("cpu") or os.environ.get("OMP_NUM_THREADS"):
        return 0
    return auto_threads()


def use(setting: int, engine: Any) -> int:
    """Set torch's thread count in the calling thread when it differs; returns the count used."""
    wanted = resolve(setting, engine)
    if wanted <= 0 or getattr(_local, "threads", None) == wanted:
        return wanted
    import torch

    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    _local.threads = wanted
    return wanted
