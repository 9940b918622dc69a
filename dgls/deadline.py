"""Every request is answered by its deadline, whatever the engine, the queue or the machine do.

The deadline is a `time.monotonic()` value fixed when the request arrives (`deadlineMs` for inline
completion and completion, `commandDeadlineMs` for code actions' commands). It travels in the
InfillRequest, where the engine and the repair loop stop at it with their best draft (status
"deadline"). This module is the backstop on the event loop: a job still queued behind another
client's work, or stuck where nothing checks the deadline, is dropped a short grace after it and
the request is answered with nothing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

GRACE_S = 0.25  # the engine's own draft normally arrives within this after the deadline


class DeadlineExceeded(Exception):
    """The job had no result by its deadline (plus grace): it was dropped."""


def deadline_for(settings: Any, kind: str, now: float | None = None) -> float:
    """The monotonic deadline of a request of `kind` ("suggest" or "command") arriving `now`."""
    ms = settings.command_deadline_ms if kind == "command" else settings.deadline_ms
    return (time.monotonic() if now is None else now) + ms / 1000


def past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


async def await_job(job: Any, deadline: float, drop: Any) -> Any:
    """The job's result, or DeadlineExceeded after `drop(job)` once the deadline and grace passed."""
    left = max(0.0, deadline - time.monotonic() + GRACE_S)
    try:
        return await asyncio.wait_for(asyncio.wrap_future(job.future), left)
    except asyncio.TimeoutError:
        drop(job)
        raise DeadlineExceeded() from None
