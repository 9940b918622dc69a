"""Notice when the model's files change on disk, so the engine host can reload it.

A checkpoint directory is rewritten by a training run, restored after a failed copy, or deleted;
the host compares a cheap signature (each file's name, size and mtime) at most once a second
before a job, and reloads when it differs: a fixed model comes back without restarting the
server, and a broken one is reported instead of being discovered at the next restart.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

Signature = tuple


def model_dir(model: str | None, engine: Any = None) -> Path | None:
    """The directory to watch: the loaded engine's, else the configured path (None: not a path)."""
    path = getattr(engine, "path", None) if engine is not None else None
    if path is not None:
        return Path(path)
    if model in (None, "", "default"):
        from dgls.engine.loading import DEFAULT_MODEL_DIR

        return DEFAULT_MODEL_DIR
    text = str(model)
    looks_like_hub_id = text.count("/") == 1 and not text.startswith((".", "/", "~")) and not Path(text).exists()
    return None if looks_like_hub_id or text == "gemma3" else Path(text).expanduser()


def signature(path: Path | None) -> Signature:
    """Name, size and modification time of each file in `path`; stands for "missing" when unreadable."""
    if path is None:
        return ()
    try:
        with os.scandir(path) as entries:
            found = []
            for entry in entries:
                if entry.is_file():
                    st = entry.stat()
                    found.append((entry.name, st.st_size, st.st_mtime_ns))
    except OSError as exc:
        return ("unreadable", type(exc).__name__)
    return tuple(sorted(found))


class ModelWatch:
    """The signature a load saw, and whether the files differ from it now."""

    def __init__(self, path: Path | None, interval: float = 1.0) -> None:
        self.path, self.interval = path, interval
        self.seen = signature(path)
        self._checked = time.monotonic()

    def changed(self) -> bool:
        """True once per change: the new signature becomes the one seen."""
        if self.path is None or time.monotonic() - self._checked < self.interval:
            return False
        self._checked = time.monotonic()
        now = signature(self.path)
        if now == self.seen:
            return False
        self.seen = now
        return True
