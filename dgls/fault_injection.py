"""The seam the stress suite uses to make the engine fail inside a real server.

When the environment variable `DGLS_FAULT_FILE` names a file, the engine host wraps each engine
it loads: before every infill the wrapper looks for that file and, when it exists, takes the
fault written in it (and deletes it, so each fault fires once): `error` raises a RuntimeError,
`memory` a MemoryError, as a bug or an exhausted machine would inside the model. Without the
variable nothing is wrapped and no file is ever looked at.
"""

from __future__ import annotations

import os
from typing import Any

FAULT_ENV = "DGLS_FAULT_FILE"
FAULTS = {"error": lambda: RuntimeError("injected fault: the engine raised"),
          "memory": lambda: MemoryError("injected fault: out of memory")}


class FaultyEngine:
    """An engine that raises the fault armed in `path` on its next infill; all else passes through."""

    def __init__(self, engine: Any, path: str) -> None:
        self._engine, self._path = engine, path

    def infill(self, *args: Any, **kwargs: Any) -> Any:
        fault = self._take()
        if fault is not None:
            raise fault
        return self._engine.infill(*args, **kwargs)

    def _take(self) -> BaseException | None:
        try:
            with open(self._path, encoding="utf-8") as f:
                name = f.read().strip()
            os.remove(self._path)
        except OSError:
            return None
        make = FAULTS.get(name)
        return make() if make else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def wrap(engine: Any) -> Any:
    """`engine` itself, or a FaultyEngine when the fault seam is switched on."""
    path = os.environ.get(FAULT_ENV)
    return FaultyEngine(engine, path) if path else engine
