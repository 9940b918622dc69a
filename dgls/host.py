"""The one resident engine and its lifecycle: load on a thread, swap on a settings change, close when unused.

`EngineHost` loads on a thread (so `initialize` answers at once), swaps in a new engine when the
model setting changes, and closes the old one when no job uses it any more. A failed load leaves
the host in "error" with a message the editor shows; the next configure() retries, and so does
the next job once the model's files change (dgls.model_watch). Files that change under a ready
engine reload it in the background; if that load fails the engine in memory keeps serving.
"""

from __future__ import annotations

import functools
import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from dgls.engine import EngineError, ModelLoadError

from . import fault_injection
from .model_watch import ModelWatch, model_dir
from .privacy import describe

log = logging.getLogger(__name__)

EngineKey = tuple[str | None, str | None, str | None, str | None, Any]  # (model, device, dtype, quantize, RemoteOptions | None)
Listener = Callable[[str, str], None]
RELOAD_AFTER_FAILURES = 3  # unexpected engine failures in a row before the engine is reloaded


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
        self._watch: ModelWatch | None = None  # the files the current engine (or failed load) came from
        self._failures = 0
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

    def configure(self, key: EngineKey, background: bool = False) -> bool:
        """Load the engine for `key` unless it is loaded or loading already; True if a load started.

        The same key after a failed load retries: the user may have fixed the path meanwhile.
        `background`: reload while the current engine keeps serving, and keep it if the load fails.
        """
        with self._cond:
            if not background and key == self._key and self._state in ("loading", "ready"):
                return False
            self._generation += 1
            generation, self._key = self._generation, key
            if not background:
                self._state, self._message = "loading", f"loading model {_describe(key)}"
                self._problem = None
        if not background:
            self._emit()
        threading.Thread(target=self._load, args=(generation, key, background), name="dgls-load", daemon=True).start()
        return True

    def _load(self, generation: int, key: EngineKey, background: bool = False) -> None:
        started = time.monotonic()
        engine, error = None, None
        # the files, read before loading (a change during the load is seen later); none for a remote model
        watch = ModelWatch(model_dir(key[0]) if key[4] is None else None)
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
                engine = fault_injection.wrap(factory(model=model, device=device, dtype=dtype, **extra))
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
                stale, self._watch = self._engine, watch
                if error is None:
                    self._engine, self._failures = engine, 0
                    self._state, self._message = "ready", f"model {_describe(key)} ready ({seconds:.1f}s)"
                elif background and self._engine is not None:  # keep serving what works
                    stale = None
                    self._message = f"{error}; still serving the model loaded before, until its files change again"
                    log.warning("%s", self._message)
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
        self._reload_if_files_changed()
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

    def _reload_if_files_changed(self) -> None:
        """The model's files changed on disk: reload (in the background while an engine serves)."""
        with self._cond:
            watch, state, key = self._watch, self._state, self._key
            if watch is None or key is None or state not in ("ready", "error") or not watch.changed():
                return
        log.info("the model files in %s changed: reloading the engine", watch.path)
        self.configure(key, background=state == "ready")

    def failed(self, engine: Any, exc: BaseException) -> None:
        """An infill raised something unexpected (a bug, MemoryError): free what the engine caches,
        and reload it after RELOAD_AFTER_FAILURES failures in a row."""
        log.error("the engine failed: %s", describe(exc))
        cache = getattr(engine, "cache", None)
        if cache is not None and hasattr(cache, "clear"):
            cache.clear()
        if isinstance(exc, MemoryError):
            gc.collect()
        with self._cond:
            self._failures += 1
            reload = self._failures >= RELOAD_AFTER_FAILURES and engine is self._engine and self._key is not None
            if reload:
                self._failures = 0
        if reload:
            log.warning("the engine failed %d times in a row: reloading it", RELOAD_AFTER_FAILURES)
            self.configure(self._key, background=True)

    def succeeded(self) -> None:
        with self._cond:
            self._failures = 0

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
