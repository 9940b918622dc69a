"""The worker that runs infills off the event loop, over one resident engine.

The engine itself is dgls.host's `EngineHost`. `Scheduler` runs jobs one at a time on its own
thread (several at once, each on a thread of its own, for an engine with `concurrency` > 1,
such as a remote server that batches requests): a newer job for the same key (client + document) supersedes an older one, clients are served round-robin so one busy editor cannot
starve another, and a job may carry a `not_before` time (the debounce of automatic triggers).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from dgls.engine import EngineError

from .host import EngineHost, Superseded
from .logroute import owned_by

log = logging.getLogger(__name__)


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
    """A worker thread: per-key supersession, round-robin between clients, debounce; one job at a
    time unless the engine says it takes `concurrency` at once."""

    def __init__(self, host: EngineHost) -> None:
        self.host = host
        self._cond = threading.Condition()
        self._queues: dict[Hashable, deque[Job]] = {}
        self._order: deque[Hashable] = deque()  # clients with queued jobs, next to serve first
        self._latest: dict[Hashable, Job] = {}
        self._running: set[Job] = set()
        self._closed = False
        host.add_listener(self._engine_changed)  # a newly ready engine may take more jobs at once
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

    def drop(self, job: Job) -> None:
        """Stop one job (its request was answered without it, e.g. at its deadline)."""
        with self._cond:
            if self._latest.get(job.key) is job:
                del self._latest[job.key]
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

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for job in list(self._latest.values()):
                self._supersede(job)
            self._cond.notify_all()
        self.host.remove_listener(self._engine_changed)

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
                job = None
                while not self._closed:
                    wait = None
                    if len(self._running) < self._capacity():
                        job, wait = self._next()
                        if job is not None:
                            break
                    self._cond.wait(wait)
                if self._closed:
                    return
                self._running.add(job)
            if self._capacity() > 1:  # an engine that takes several at once (a remote server)
                threading.Thread(target=self._finish, args=(job,), name="dgls-job", daemon=True).start()
            else:  # one at a time on this thread (torch keeps its thread settings per thread)
                self._finish(job)

    def _engine_changed(self, _state: str, _message: str) -> None:
        with self._cond:
            self._cond.notify_all()

    def _capacity(self) -> int:
        """Jobs that may run at once: the engine's `concurrency` (a remote server batches them), else
        1; none while the engine loads (it may be one that takes several)."""
        engine = self.host.engine
        if engine is None:
            return 0 if self.host.state[0] in ("loading", "idle") else 1
        return max(1, int(getattr(engine, "concurrency", 1) or 1))

    def _finish(self, job: Job) -> None:
        try:
            self._run(job)
        finally:
            with self._cond:
                self._running.discard(job)
                if self._latest.get(job.key) is job:
                    del self._latest[job.key]
                self._cond.notify_all()

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
            with owned_by(job.client):  # its log records go to its own editor only
                job.future.set_result(job.work(engine, job.cancel))
            self.host.succeeded()
        except BaseException as exc:
            if not isinstance(exc, (EngineError, Superseded)):
                self.host.failed(engine, exc)
            job.future.set_exception(exc)
        finally:
            self.host.release(engine)
