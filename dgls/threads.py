"""How many CPU threads the engine uses, and how its OpenMP threads wait.

torch's OpenMP threads spin-wait between parallel regions by default (GOMP's ACTIVE policy). On
a machine where another process holds a core, a spinning thread steals the core its sibling
needs, and every small matmul waits for a descheduled thread: latency grows several-fold. The
wait policy is read once, when the OpenMP runtime starts (the first torch op), so `prepare()`
runs in the `dgls` entry point before anything imports torch. The thread count can change later,
but torch keeps it per thread: `use()` sets it in the thread that runs the engine (the worker).

Measured with `dgls latency` (see README: Threads): for the small embedded model one thread is
as fast as two on a quiet machine and does not slow down beside a busy process, so `auto` picks
one thread for models below AUTO_ONE_THREAD_PARAMS parameters and up to MAX_AUTO_THREADS
(passive waiting) for larger ones.
"""

from __future__ import annotations

import os
import threading
from typing import Any

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
DEFAULT_WAIT_POLICY = "PASSIVE"
AUTO_ONE_THREAD_PARAMS = 50_000_000  # below this, parallel matmuls cost more than they save
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


def auto_threads(parameters: int, available: int | None = None) -> int:
    """The measured default: one thread for small models, more (bounded) for large ones."""
    available = cores() if available is None else available
    if parameters < AUTO_ONE_THREAD_PARAMS:
        return 1
    return max(1, min(available, MAX_AUTO_THREADS))


def resolve(setting: int, engine: Any) -> int:
    """The thread count for a setting (0: auto) and an engine on the CPU; 0 leaves torch alone (GPU)."""
    if setting > 0:
        return setting
    if not str(getattr(engine, "device", "cpu")).startswith("cpu"):
        return 0
    parameters = getattr(engine, "parameter_count", None)
    if parameters is None:
        model = getattr(engine, "model", None)
        parameters = sum(p.numel() for p in model.parameters()) if model is not None else 0
        try:
            engine.parameter_count = parameters
        except AttributeError:
            pass
    return auto_threads(parameters)


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
