"""The one resident engine and its lifecycle: load on a thread, swap on a settings change, close when unused.

`EngineHost` loads on a thread (so `initialize` answers at once), swaps in a new engine when the
model setting changes, and closes the old one when no job uses it any more. A failed load leaves
the host in "error" with a message the editor shows; the next configure() retries.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from dgls.engine import EngineError, ModelLoadError

log = logging.getLogger(__name__)

EngineKey = tuple[str | None, str | None, str | None, str | None, Any]  # (model, device, dtype, quantize, RemoteOptions | None)
Listener = Callable[[str, str], None]


class Superseded(Exception):
    """The job was replaced by a newer one for the same document before it finished."""


class EngineHost:
    """The one resident engine, its load state ("idle", "loading", "ready", "error") and reloads."""

    def __init__(self, factory: Callable[..., Any] | None = None) -> None:
        self._factory = factory
        self._cond = threading.Condition()
        self._engine: Any = None
        self._key: EngineKey | None = None
        self._state, self._message = "idle", "no model loaded yet"
        self._problem: str | None = None  # a ready engine's passing trouble (a remote server down)
        self._generation = 0
        self._users: dict[int, int] = {}  # id(engine) -> jobs using it
        self._retired: list[Any] = []
        self._listeners: list[Listener] = []

    @property
    def state(self) -> tuple[str, str]:
        """(state, message); a ready engine whose last request failed reads ("error", why) until
        one succeeds, though it keeps taking requests."""
        with self._cond:
            if self._state == "ready" and self._problem:
                return "error", self._problem
            return self._state, self._message

    def note(self, engine: Any, problem: str | None) -> None:
        """`engine`'s last request failed (`problem`, one line) or, with None, succeeded again."""
        with self._cond:
            if engine is not self._engine or problem == self._problem:
                return
            self._problem = problem
        self._emit()

    @property
    def key(self) -> EngineKey | None:
        return self._key

    @property
    def engine(self) -> Any:
        """The ready engine, or None."""
        with self._cond:
            return self._engine if self._state == "ready" else None

    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def configure(self, key: EngineKey) -> bool:
        """Load the engine for `key` unless it is loaded or loading already; True if a load started.

        The same key after a failed load retries: the user may have fixed the path meanwhile.
        """
        with self._cond:
            if key == self._key and self._state in ("loading", "ready"):
                return False
            self._generation += 1
            generation, self._key = self._generation, key
            self._state, self._message = "loading", f"loading model {_describe(key)}"
            self._problem = None
        self._emit()
        threading.Thread(target=self._load, args=(generation, key), name="dgls-load", daemon=True).start()
        return True

    def _load(self, generation: int, key: EngineKey) -> None:
        started = time.monotonic()
        engine, error = None, None
        try:
            model, device, dtype, quantize, remote = key
            if remote is not None:  # the model runs on a server: nothing to load here (and no torch)
                from .remote_engine import RemoteEngine

                engine = RemoteEngine(remote, model=model)
                engine.on_problem = functools.partial(self.note, engine)
            else:
                factory = self._factory
                if factory is None:
                    from dgls.engine import Engine as factory
                extra = {"quantize": quantize} if quantize else {}
                engine = factory(model=model, device=device, dtype=dtype, **extra)
        except EngineError as exc:
            error = exc
        except Exception as exc:  # an unexpected failure still leaves the server serving
            log.exception("loading the model failed")
            error = ModelLoadError(f"could not load model {_describe(key)}: {exc}")
        seconds = time.monotonic() - started
        with self._cond:
            if generation != self._generation:  # a newer configure() won: drop this one
                stale = engine
            else:
                stale = self._engine
                if error is None:
                    self._engine = engine
                    self._state, self._message = "ready", f"model {_describe(key)} ready ({seconds:.1f}s)"
                else:  # the old engine goes too: answering from a model the user replaced would mislead
                    self._engine = None
                    self._state, self._message = "error", str(error)
                self._cond.notify_all()
            if stale is not None and self._users.get(id(stale)):
                self._retired.append(stale)
                stale = None
        if stale is not None:
            _close(stale)
        if generation == self._generation:
            self._emit()

    def acquire(self, cancel: threading.Event) -> Any:
        """Block until the engine is ready and mark it in use; raises EngineError or Superseded."""
        with self._cond:
            while self._state in ("loading", "idle"):
                if cancel.is_set():
                    raise Superseded()
                self._cond.wait(0.05)
            if self._state == "error":
                raise EngineError(self._message)
            engine = self._engine
            self._users[id(engine)] = self._users.get(id(engine), 0) + 1
            return engine

    def release(self, engine: Any) -> None:
        """Done with `engine`: close it if it was replaced while in use."""
        with self._cond:
            count = self._users.get(id(engine), 1) - 1
            if count:
                self._users[id(engine)] = count
                return
            self._users.pop(id(engine), None)
            if engine not in self._retired:
                return
            self._retired.remove(engine)
        _close(engine)

    def forget(self, doc_id: str) -> None:
        """Drop a document's prefix cache (it was closed)."""
        engine = self.engine
        if engine is not None:
            try:
                engine.forget(doc_id)
            except Exception:
                log.debug("forget(%s) failed", doc_id, exc_info=True)

    def close(self) -> None:
        with self._cond:
            self._generation += 1
            engine, self._engine = self._engine, None
            self._state, self._message = "idle", "closed"
            self._cond.notify_all()
        if engine is not None:
            _close(engine)

    def _emit(self) -> None:
        state, message = self.state
        for fn in list(self._listeners):
            try:
                fn(state, message)
            except Exception:
                log.exception("engine state listener failed")


def _describe(key: EngineKey) -> str:
    """The model as status messages name it: a path or id, or the served model and the server's URL."""
    remote = key[4] if len(key) > 4 else None
    if remote is not None:
        return f"{key[0] or '(served)'} at {remote.shown_url}"
    return key[0] or "(default)"


def _close(engine: Any) -> None:
    try:
        engine.close()
    except Exception:
        log.debug("closing an engine failed", exc_info=True)
