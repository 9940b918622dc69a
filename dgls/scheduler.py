"""The worker that runs infills off the event loop, over one resident engine.

`EngineHost` owns the engine: it loads on a thread (so `initialize` answers at once), swaps in
a new one when the model setting changes, and closes the old one when no job uses it any more.
`Scheduler` runs jobs one at a time on its own thread: a newer job for the same key (client +
document) supersedes an older one, clients are served round-robin so one busy editor cannot
starve another, and a job may carry a `not_before` time (the debounce of automatic triggers).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from dgls.engine import EngineError, ModelLoadError

from . import fault_injection
from .model_watch import ModelWatch, model_dir

log = logging.getLogger(__name__)

EngineKey = tuple[str | None, str | None, str | None]  # (model, device, dtype)
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
        self._generation = 0
        self._users: dict[int, int] = {}  # id(engine) -> jobs using it
        self._retired: list[Any] = []
        self._listeners: list[Listener] = []
        self._watch: ModelWatch | None = None  # the files the current engine (or failed load) came from
        self._failures = 0
        self.load_seconds: float | None = None

    @property
    def state(self) -> tuple[str, str]:
        with self._cond:
            return self._state, self._message

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
                self._state, self._message = "loading", f"loading model {key[0] or '(default)'}"
        if not background:
            self._emit()
        threading.Thread(target=self._load, args=(generation, key, background), name="dgls-load", daemon=True).start()
        return True

    def _load(self, generation: int, key: EngineKey, background: bool = False) -> None:
        started = time.monotonic()
        engine, error = None, None
        watch = ModelWatch(model_dir(key[0]))  # before reading: a change during the load is seen later
        try:
            factory = self._factory
            if factory is None:
                from dgls.engine import Engine as factory
            model, device, dtype = key
            engine = fault_injection.wrap(factory(model=model, device=device, dtype=dtype))
        except EngineError as exc:
            error = exc
        except Exception as exc:  # an unexpected failure still leaves the server serving
            log.exception("loading the model failed")
            error = ModelLoadError(f"could not load model {key[0] or '(default)'}: {exc}")
        seconds = time.monotonic() - started
        with self._cond:
            if generation != self._generation:  # a newer configure() won: drop this one
                stale = engine
            else:
                stale, self._watch = self._engine, watch
                if error is None:
                    self._engine, self.load_seconds, self._failures = engine, seconds, 0
                    self._state, self._message = "ready", f"model {key[0] or '(default)'} ready ({seconds:.1f}s)"
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
        log.error("the engine failed: %s: %s", type(exc).__name__, exc)
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


def _close(engine: Any) -> None:
    try:
        engine.close()
    except Exception:
        log.debug("closing an engine failed", exc_info=True)


@dataclass(eq=False)
class Job:
    """One unit of work for the engine; `cancel` is handed to `Engine.infill`."""

    client: Hashable
    key: Hashable
    work: Callable[[Any, threading.Event], Any]
    not_before: float = 0.0
    cancel: threading.Event = field(default_factory=threading.Event)
    future: Future = field(default_factory=Future)
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None


class Scheduler:
    """A single worker thread: per-key supersession, round-robin between clients, debounce."""

    def __init__(self, host: EngineHost) -> None:
        self.host = host
        self._cond = threading.Condition()
        self._queues: dict[Hashable, deque[Job]] = {}
        self._order: deque[Hashable] = deque()  # clients with queued jobs, next to serve first
        self._latest: dict[Hashable, Job] = {}
        self._running: Job | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="dgls-worker", daemon=True)
        self._thread.start()

    def submit(self, client: Hashable, key: Hashable, work: Callable[[Any, threading.Event], Any],
               delay: float = 0.0) -> Job:
        """Queue `work(engine, cancel)`; an older job with the same key is superseded."""
        job = Job(client=client, key=key, work=work, not_before=time.monotonic() + max(0.0, delay))
        with self._cond:
            old = self._latest.get(key)
            if old is not None:
                self._supersede(old)
            self._latest[key] = job
            if client not in self._queues:
                self._queues[client] = deque()
            if client not in self._order:
                self._order.append(client)
            self._queues[client].append(job)
            self._cond.notify_all()
        return job

    def cancel_key(self, key: Hashable) -> None:
        """Supersede whatever runs or waits for `key` (its document changed or closed)."""
        with self._cond:
            job = self._latest.pop(key, None)
            if job is not None:
                self._supersede(job)

    def cancel_client(self, client: Hashable) -> None:
        """Drop every job of a client that went away."""
        with self._cond:
            for key, job in list(self._latest.items()):
                if job.client == client:
                    self._latest.pop(key)
                    self._supersede(job)
            self._queues.pop(client, None)
            if client in self._order:
                self._order.remove(client)

    @property
    def pending(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._queues.values()) + (self._running is not None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for job in list(self._latest.values()):
                self._supersede(job)
            self._cond.notify_all()

    def _supersede(self, job: Job) -> None:
        """Called with the lock held: a queued job resolves now, a running one is told to stop."""
        job.cancel.set()
        queue = self._queues.get(job.client)
        if queue is not None and job in queue:
            queue.remove(job)
            if not job.future.done():
                job.future.set_exception(Superseded())

    def _next(self) -> tuple[Job | None, float | None]:
        """The next due job, fairly across clients, or the time until the earliest one is due."""
        now, wait = time.monotonic(), None
        for _ in range(len(self._order)):
            client = self._order[0]
            self._order.rotate(-1)
            queue = self._queues.get(client)
            if not queue:
                self._order.remove(client)
                self._queues.pop(client, None)
                continue
            for job in queue:
                if job.not_before <= now:
                    queue.remove(job)
                    return job, None
                left = job.not_before - now
                wait = left if wait is None else min(wait, left)
        return None, wait

    def _loop(self) -> None:
        while True:
            with self._cond:
                job, wait = self._next()
                while job is None and not self._closed:
                    self._cond.wait(wait)
                    job, wait = self._next()
                if self._closed:
                    return
                self._running = job
            try:
                self._run(job)
            finally:
                with self._cond:
                    self._running = None
                    if self._latest.get(job.key) is job:
                        del self._latest[job.key]

    def _run(self, job: Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return  # the request was cancelled while it waited
        if job.cancel.is_set():
            job.future.set_exception(Superseded())
            return
        job.started = time.monotonic()
        try:
            engine = self.host.acquire(job.cancel)
        except Exception as exc:
            job.future.set_exception(exc)
            return
        try:
            job.future.set_result(job.work(engine, job.cancel))
            self.host.succeeded()
        except BaseException as exc:
            if not isinstance(exc, (EngineError, Superseded)):
                self.host.failed(engine, exc)
            job.future.set_exception(exc)
        finally:
            self.host.release(engine)
