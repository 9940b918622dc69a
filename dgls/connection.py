"""One editor connection (documents, settings, progress, status) over the engine that all connections share.

`Shared` is what every connection shares: the engine host, the scheduler's worker, the default
settings. `DglsServer` is one connection: stdio has one, the TCP daemon one per editor. The LSP
features themselves are module-level handlers in dgls.handlers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from lsprotocol import types as lsp
from pygls.exceptions import FeatureRequestError, JsonRpcException
from pygls.lsp.server import LanguageServer

from dgls.engine import EngineError

from . import deadline as deadlines
from . import logroute, pipeline, privacy, threads
from .documents import DocumentStore
from .host import EngineHost, Superseded
from .options import Settings
from .protocol import DglsProtocol
from .scheduler import Scheduler

log = logging.getLogger("dgls.server")

NAME, VERSION = "dgls", "0.1.0"
STATUS = "dgls/status"
REQUEST_FAILED = lsp.LSPErrorCodes.RequestFailed.value
_MSG_TYPES = {logging.ERROR: lsp.MessageType.Error, logging.WARNING: lsp.MessageType.Warning,
              logging.INFO: lsp.MessageType.Info}


class Shared:
    """What every connection shares: the resident engine, the worker, and the default settings."""

    def __init__(self, defaults: Settings | None = None, engine_factory: Callable[..., Any] | None = None) -> None:
        self.defaults = defaults or Settings()
        self.host = EngineHost(engine_factory)
        self.scheduler = Scheduler(self.host)
        self._ids = itertools.count(1)

    def next_client_id(self) -> str:
        return f"client{next(self._ids)}"

    def close(self) -> None:
        self.scheduler.close()
        self.host.close()


class DglsServer(LanguageServer):
    """One connection: its documents, settings, progress and status, over the shared engine."""

    def __init__(self, shared: Shared, client_id: str | None = None) -> None:
        super().__init__(NAME, VERSION, protocol_cls=DglsProtocol,
                         text_document_sync_kind=lsp.TextDocumentSyncKind.Incremental)
        self.shared = shared
        self.client_id = client_id or shared.next_client_id()
        self.docs = DocumentStore()
        self.settings = shared.defaults
        self.loop: asyncio.AbstractEventLoop | None = None
        self.on_exit: Callable[[], None] | None = None  # set by the daemon for its connections
        self._initialized = False
        self._shown: set[str] = set()
        self._inflight = 0
        self._load_done: asyncio.Event | None = None
        self._log_handler = _LspLogHandler(self)
        self._log_context = logroute.context_for(self.client_id)  # what runs on our loop logs as ours
        shared.host.add_listener(self._host_changed)

    # -- plumbing ----------------------------------------------------------------------------
    def report_server_error(self, error: Exception, source: Any) -> None:
        """Errors outside a request go to the log, not to pop-ups (showMessage is for fatal ones);
        a failed request was answered with its error already."""
        if source is not FeatureRequestError:
            log.warning("%s", privacy.describe(error, debug=self.settings.log_level == "debug"))

    def post(self, fn: Callable[[], Any]) -> None:
        """Run `fn` on this connection's event loop (safe from any thread)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(fn, context=self._log_context)
        except RuntimeError:
            pass

    def status(self, state: str, message: str) -> None:
        """The `dgls/status` notification editor clients show in their status bar."""
        if self._initialized:
            self.protocol.notify(STATUS, {"state": state, "message": message})

    def dispose(self) -> None:
        """The connection is gone: stop its work, free its documents' prefix caches (an editor that
        disconnects without didClose would otherwise leave them to LRU eviction) and detach."""
        self.shared.host.remove_listener(self._host_changed)
        self.shared.scheduler.cancel_client(self.client_id)
        for uri in self.docs.uris():
            self.shared.host.forget(self.doc_id(uri))
        logging.getLogger("dgls").removeHandler(self._log_handler)
        self.loop = None

    def doc_id(self, uri: str) -> str:
        return f"{self.client_id}:{uri}"

    def cancel_document(self, uri: str) -> None:
        """The document changed or closed: supersede its queued and running infills."""
        for kind in ("suggest", "command"):
            self.shared.scheduler.cancel_key((self.client_id, uri, kind))

    def start_logging(self) -> None:
        """From initialize on, dgls' log records reach this editor as window/logMessage."""
        logging.getLogger("dgls").addHandler(self._log_handler)

    def mark_initialized(self) -> None:
        """The client said `initialized`: notifications may flow; show the engine's state now."""
        self._initialized = True
        self._on_host_state(*self.shared.host.state)

    # -- settings and engine state -----------------------------------------------------------
    def apply_settings(self, data: Any) -> None:
        """Merge a settings payload; a changed model/device/dtype reloads the shared engine."""
        before = self.settings.engine_key
        settings, problems = self.settings.merged(data)
        for problem in problems:
            log.warning("%s", problem)
        self.settings = settings
        self._log_handler.setLevel(settings.log_level_no)
        if self._initialized and settings.engine_key != before:
            log.info("model settings changed: reloading the engine")
            self.shared.host.configure(settings.engine_key)

    def attach_engine(self) -> None:
        """At initialize: load the engine this client asks for, or share the one already there.

        A client that names no model of its own joins whatever the daemon runs (so a second
        editor does not reload the engine under the first); one that does name a model wins.
        """
        host, key = self.shared.host, self.settings.engine_key
        if host.key is None or key != self.shared.defaults.engine_key:
            host.configure(key)
        else:
            self.settings = self.settings.with_engine_key(host.key)

    def _host_changed(self, state: str, message: str) -> None:
        self.post(lambda: self._on_host_state(state, message))

    def _on_host_state(self, state: str, message: str) -> None:
        if not self._initialized:
            return
        self.status(state, message)
        if state == "loading" and self._load_done is None:
            self._load_done = asyncio.Event()
            asyncio.ensure_future(self._load_progress(self._load_done))
        elif state in ("ready", "error") and self._load_done is not None:
            self._load_done.set()
            self._load_done = None
        if state == "ready":
            log.info("%s", message)
        elif state == "error":
            log.error("%s", message)
            if message not in self._shown:
                self._shown.add(message)
                self.window_show_message(lsp.ShowMessageParams(type=lsp.MessageType.Error, message=f"dgls: {message}"))

    async def _load_progress(self, done: asyncio.Event) -> None:
        progress = await self.begin_progress(None, "dgls: loading model", server_initiated=True)
        await done.wait()
        if progress is not None:
            progress.end(self.shared.host.state[1])

    async def begin_progress(self, token: Any, title: str, server_initiated: bool = False) -> _Progress | None:
        """Work-done progress on the client's token, or on one we create when asked and allowed."""
        if token is None:
            caps = self.client_capabilities.window
            if not server_initiated or caps is None or not caps.work_done_progress:
                return None
            token = f"dgls-{uuid.uuid4().hex[:12]}"
            try:
                await asyncio.wait_for(self.work_done_progress.create_async(token), 5)
            except Exception:
                return None
        progress = _Progress(self, token)
        progress.begin(title)
        return progress

    # -- running infills ---------------------------------------------------------------------
    async def infill(self, uri: str, plans: list[Any], *, rewrite: bool = False, delay: float = 0.0,
                     kind: str = "suggest", progress: _Progress | None = None) -> tuple[Any, list] | None:
        """Run the plans on the worker; None when superseded, past the deadline with nothing, or
        the document moved on meanwhile."""
        arrived = time.monotonic()
        doc = self.docs.get(uri)
        if doc is None or not plans:
            return None
        snap = pipeline.snapshot(doc, self.doc_id(uri))
        settings = self.settings
        on_step = progress.step_reporter() if progress is not None else None
        deadline = deadlines.deadline_for(settings, kind, arrived)

        def work(engine: Any, cancel: threading.Event) -> Any:
            threads.use(settings.threads, engine)  # torch keeps the count per thread: set it in the worker
            return pipeline.run_plans(engine, snap, plans, settings, cancel, rewrite=rewrite, on_step=on_step,
                                      deadline=deadline)

        job = self.shared.scheduler.submit(self.client_id, (self.client_id, uri, kind), work, delay=delay)
        self._busy(+1)
        try:
            edits = await deadlines.await_job(job, deadline, self.shared.scheduler.drop)
        except asyncio.CancelledError:  # $/cancelRequest: stop the denoising loop too
            job.cancel.set()
            raise
        except deadlines.DeadlineExceeded:
            log.info("%s: no answer by the %.0f ms deadline", kind, (deadline - arrived) * 1000)
            return None
        except Superseded:
            return None
        except EngineError as exc:
            raise JsonRpcException(str(exc), code=REQUEST_FAILED) from None
        except Exception as exc:  # a fault inside the engine (a bug, MemoryError): this request fails, not the server
            raise JsonRpcException(f"dgls: the infill failed ({type(exc).__name__}: {exc}); the server keeps serving",
                                   code=REQUEST_FAILED) from None
        finally:
            self._busy(-1)
        current = self.docs.get(uri)
        if edits is None or job.cancel.is_set() or current is not doc or current.version != snap.version:
            return None
        if deadlines.past(deadline):
            log.info("%s: stopped at the %.0f ms deadline (%s)", kind, (deadline - arrived) * 1000,
                     "best draft kept" if edits else "no draft kept the file parsing")
        return doc, edits

    def _busy(self, delta: int) -> None:
        self._inflight += delta
        state, message = self.shared.host.state
        if state != "ready":
            return
        if delta > 0 and self._inflight == 1:
            self.status("busy", "infilling")
        elif delta < 0 and self._inflight == 0:
            self.status("ready", message)


class _Progress:
    """One work-done progress; reports from the worker thread are posted to the loop."""

    def __init__(self, ls: DglsServer, token: Any) -> None:
        self.ls, self.token = ls, token

    def begin(self, title: str) -> None:
        self.ls.work_done_progress.begin(self.token, lsp.WorkDoneProgressBegin(title=title, cancellable=False))

    def report(self, message: str) -> None:
        self.ls.work_done_progress.report(self.token, lsp.WorkDoneProgressReport(message=message))

    def end(self, message: str = "") -> None:
        self.ls.work_done_progress.end(self.token, lsp.WorkDoneProgressEnd(message=message))

    def step_reporter(self) -> Callable[[int], None]:
        """An on_step callback (worker thread) reporting the step count, at most 5 times a second."""
        last = [0.0]

        def on_step(step: int) -> None:
            now = time.monotonic()
            if now - last[0] >= 0.2:
                last[0] = now
                self.ls.post(lambda: self.report(f"denoising, step {step}"))

        return on_step


class _LspLogHandler(logging.Handler):
    """Forwards dgls log records at or above the client's `logLevel` as window/logMessage."""

    def __init__(self, ls: DglsServer) -> None:
        super().__init__(ls.settings.log_level_no)
        self.ls = ls
        self.addFilter(logroute.OwnerFilter(ls.client_id))  # a daemon's other editors' records are not ours

    def emit(self, record: logging.LogRecord) -> None:
        try:
            params = lsp.LogMessageParams(type=_MSG_TYPES.get(record.levelno, lsp.MessageType.Log),
                                          message=self.format(record))
        except Exception:
            return
        self.ls.post(lambda: self.ls.window_log_message(params))
