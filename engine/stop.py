"""When an infill must stop: its caller cancelled it, or its deadline passed (no torch here)."""

from __future__ import annotations

import threading
import time


class Stopped(Exception):
    """Raised inside an infill that was cancelled or reached its deadline before denoising."""


class StopCheck:
    """The cancel event and the request's deadline as one `is_set()` for the loops that poll it;
    `reason()` says which one stopped the work ("cancelled" wins: the caller asked for it)."""

    def __init__(self, cancel: threading.Event | None, deadline: float | None) -> None:
        self.cancel, self.deadline = cancel, deadline

    def is_set(self) -> bool:
        if self.cancel is not None and self.cancel.is_set():
            return True
        return self.deadline is not None and time.monotonic() >= self.deadline

    def reason(self) -> str:
        return "cancelled" if self.cancel is not None and self.cancel.is_set() else "deadline"
