"""The dgls language server: LSP features over the shared engine host and scheduler.

`create_server()` registers the features; each handler only parses, plans on the event loop,
hands the engine work to the scheduler and turns the result into LSP shapes (dgls.edits).
One `Shared` (engine host + scheduler) serves every connection; stdio has one connection, the
TCP daemon (dgls.daemon) one per editor.

Completion (`textDocument/completion`, for editors without inline completion) answers when it is
invoked and on the trigger characters `TRIGGER_CHARACTERS`; re-triggers for incomplete lists and
other characters get an empty list, so typing never floods the engine.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from lsprotocol import types as lsp
from pygls.capabilities import ServerCapabilitiesBuilder
from pygls.exceptions import (
    FeatureRequestError,
    JsonRpcException,
    JsonRpcInvalidParams,
    JsonRpcInvalidRequest,
)
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

from dgls.engine import EngineError

from . import pipeline
from .documents import UTF8, UTF16, UTF32, DocumentStore, PositionError
from .edits import completion_item, inline_items, workspace_edit
from .log_filters import OneLinePygls
from .options import SECTION, Settings, section_of
from .scheduler import EngineHost, Scheduler, Superseded

log = logging.getLogger("dgls.server")

NAME, VERSION = "dgls", "0.1.0"
STATUS = "dgls/status"
TRIGGER_CHARACTERS = ["(", "=", ":"]
CMD_INFILL, CMD_REWRITE, CMD_COMPLETE = "dgls.infillSelection", "dgls.rewriteSelection", "dgls.completeHere"
REQUEST_FAILED = lsp.LSPErrorCodes.RequestFailed.value
_ENCODINGS = {lsp.PositionEncodingKind.Utf8: UTF8, lsp.PositionEncodingKind.Utf16: UTF16,
              lsp.PositionEncodingKind.Utf32: UTF32}
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


class _BadRequest:
    """A request whose params did not match the LSP schema: answered with InvalidParams."""

    def __init__(self, msg_id: Any, error: JsonRpcException) -> None:
        self.id, self.error = msg_id, error


class DglsProtocol(LanguageServerProtocol):
    """pygls' protocol with three changes: malformed requests get an InvalidParams reply (pygls
    drops them unanswered), documents live only in dgls.documents (no second copy of a 20 MB
    file in pygls' workspace), and `exit` on a daemon connection closes only that connection."""

    def structure_message(self, data: dict[str, Any]) -> Any:
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if isinstance(data, dict) and "method" in data and isinstance(data.get("id"), (int, str)):
                return _BadRequest(data["id"], JsonRpcInvalidParams(f"invalid params for {data['method']}: {exc}"))
            raise

    def handle_message(self, message: Any) -> None:
        if isinstance(message, _BadRequest):
            self._send_response(message.id, error=message.error.to_response_error())
            return
        msg_id, version = getattr(message, "id", None), getattr(message, "jsonrpc", None)
        if version != self.VERSION and isinstance(msg_id, (int, str)) and hasattr(message, "method"):
            # pygls drops these unanswered; the client would wait for ever
            error = JsonRpcInvalidRequest(f"unsupported JSON-RPC version {version!r}; dgls speaks 2.0")
            self._send_response(msg_id, error=error.to_response_error())
            return
        super().handle_message(message)

    def _user(self, method: str, params: Any) -> Any:
        if (handler := self.fm.features.get(method)) is not None:
            yield handler, (params,), None

    @lsp_method(lsp.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: lsp.DidOpenTextDocumentParams) -> Any:
        yield from self._user(lsp.TEXT_DOCUMENT_DID_OPEN, params)

    @lsp_method(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: lsp.DidChangeTextDocumentParams) -> Any:
        yield from self._user(lsp.TEXT_DOCUMENT_DID_CHANGE, params)

    @lsp_method(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: lsp.DidCloseTextDocumentParams) -> Any:
        yield from self._user(lsp.TEXT_DOCUMENT_DID_CLOSE, params)

    @lsp_method(lsp.EXIT)
    def lsp_exit(self, *args: Any) -> Any:
        server: DglsServer = self._server  # type: ignore[assignment]
        if server.on_exit is None:
            yield from super().lsp_exit(*args)
            return
        yield from self._user(lsp.EXIT, None)
        server.on_exit()


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
        shared.host.add_listener(self._host_changed)

    # -- plumbing ----------------------------------------------------------------------------
    def report_server_error(self, error: Exception, source: Any) -> None:
        """Errors outside a request go to the log, not to pop-ups (showMessage is for fatal ones);
        a failed request was answered with its error already."""
        if source is not FeatureRequestError:
            log.warning("%s", error)

    def post(self, fn: Callable[[], Any]) -> None:
        """Run `fn` on this connection's event loop (safe from any thread)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(fn)
        except RuntimeError:
            pass

    def status(self, state: str, message: str) -> None:
        """The `dgls/status` notification editor clients show in their status bar."""
        if self._initialized:
            self.protocol.notify(STATUS, {"state": state, "message": message})

    def dispose(self) -> None:
        """The connection is gone: stop its work and detach from the shared parts."""
        self.shared.host.remove_listener(self._host_changed)
        self.shared.scheduler.cancel_client(self.client_id)
        logging.getLogger("dgls").removeHandler(self._log_handler)
        self.loop = None

    def doc_id(self, uri: str) -> str:
        return f"{self.client_id}:{uri}"

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
            model, device, dtype = host.key
            self.settings = replace(self.settings, model=model, device=device, dtype=dtype)

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
        """Run the plans on the worker; None when superseded or the document moved on meanwhile."""
        doc = self.docs.get(uri)
        if doc is None or not plans:
            return None
        snap = pipeline.snapshot(doc, self.doc_id(uri))
        settings = self.settings
        on_draft = progress.draft_reporter() if progress is not None else None

        def work(engine: Any, cancel: threading.Event) -> Any:
            return pipeline.run_plans(engine, snap, plans, settings, cancel, rewrite=rewrite, on_draft=on_draft)

        job = self.shared.scheduler.submit(self.client_id, (self.client_id, uri, kind), work, delay=delay)
        self._busy(+1)
        try:
            edits = await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:  # $/cancelRequest: stop the denoising loop too
            job.cancel.set()
            raise
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

    def draft_reporter(self) -> Callable[[str], None]:
        """An on_draft callback (worker thread) reporting the step count, at most 5 times a second."""
        steps, last = itertools.count(1), [0.0]

        def on_draft(_draft: str) -> None:
            step, now = next(steps), time.monotonic()
            if now - last[0] >= 0.2:
                last[0] = now
                self.ls.post(lambda: self.report(f"denoising, step {step}"))

        return on_draft


class _LspLogHandler(logging.Handler):
    """Forwards dgls log records at or above the client's `logLevel` as window/logMessage."""

    def __init__(self, ls: DglsServer) -> None:
        super().__init__(ls.settings.log_level_no)
        self.ls = ls

    def emit(self, record: logging.LogRecord) -> None:
        try:
            params = lsp.LogMessageParams(type=_MSG_TYPES.get(record.levelno, lsp.MessageType.Log),
                                          message=self.format(record))
        except Exception:
            return
        self.ls.post(lambda: self.ls.window_log_message(params))


# -- request parsing helpers ---------------------------------------------------------------------
def _invalid(message: str) -> JsonRpcInvalidParams:
    return JsonRpcInvalidParams(message)


def _offset(doc: Any, position: lsp.Position) -> int:
    try:
        return doc.offset_at(position)
    except PositionError as exc:
        raise _invalid(str(exc)) from None


def _command_args(args: tuple[Any, ...]) -> tuple[str, int | None, lsp.Range]:
    """Validate `[{"textDocument": {"uri", "version"}, "range": {...}}]`."""
    try:
        (arg,) = args
        doc, rng = arg["textDocument"], arg["range"]
        uri, version = doc["uri"], doc.get("version")

        def pos(p: dict) -> lsp.Position:
            line, char = p["line"], p["character"]
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (line, char)):
                raise TypeError("line/character must be integers")
            return lsp.Position(line=line, character=char)

        if not isinstance(uri, str) or not (version is None or isinstance(version, int)):
            raise TypeError("textDocument needs a string uri and an integer version")
        return uri, version, lsp.Range(start=pos(rng["start"]), end=pos(rng["end"]))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise _invalid(f"expected [{{textDocument: {{uri, version}}, range}}]: {exc}") from None


def _kind_allowed(only: Any, kind: str) -> bool:
    return not only or any(kind == k or kind.startswith(f"{k}.") for k in only)


# -- features ------------------------------------------------------------------------------------
def create_server(shared: Shared | None = None, client_id: str | None = None) -> DglsServer:
    """A server for one connection, with every dgls feature registered."""
    ls = DglsServer(shared or Shared(), client_id)

    @ls.feature(lsp.INITIALIZE)
    def initialize(ls: DglsServer, params: lsp.InitializeParams) -> None:
        ls.loop = asyncio.get_running_loop()
        encoding = ServerCapabilitiesBuilder.choose_position_encoding(params.capabilities)
        ls.docs.encoding = _ENCODINGS.get(encoding, UTF16)
        ls.apply_settings(params.initialization_options)
        logging.getLogger("dgls").addHandler(ls._log_handler)
        ls.attach_engine()  # loads on a thread: initialize answers at once

    @ls.feature(lsp.INITIALIZED)
    def initialized(ls: DglsServer, params: lsp.InitializedParams) -> None:
        ls._initialized = True
        ls._on_host_state(*ls.shared.host.state)

    @ls.feature(lsp.SHUTDOWN)
    def shutdown(ls: DglsServer, params: Any) -> None:
        ls.shared.scheduler.cancel_client(ls.client_id)

    @ls.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: DglsServer, params: lsp.DidOpenTextDocumentParams) -> None:
        item = params.text_document
        ls.docs.open(item.uri, item.text, item.version, item.language_id)

    @ls.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: DglsServer, params: lsp.DidChangeTextDocumentParams) -> None:
        uri = params.text_document.uri
        try:
            ls.docs.change(uri, params.text_document.version, list(params.content_changes))
        except PositionError as exc:  # out of sync: keep what we have, say so
            log.error("didChange for %s does not fit the document (%s); ask the editor to reopen it", uri, exc)
        for kind in ("suggest", "command"):
            ls.shared.scheduler.cancel_key((ls.client_id, uri, kind))

    @ls.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: DglsServer, params: lsp.DidCloseTextDocumentParams) -> None:
        uri = params.text_document.uri
        ls.docs.close(uri)
        for kind in ("suggest", "command"):
            ls.shared.scheduler.cancel_key((ls.client_id, uri, kind))
        ls.shared.host.forget(ls.doc_id(uri))

    @ls.feature(lsp.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: DglsServer, params: lsp.DidChangeConfigurationParams) -> None:
        data = params.settings
        workspace = ls.client_capabilities.workspace
        if section_of(data) is None and workspace is not None and workspace.configuration:
            items = [lsp.ConfigurationItem(section=SECTION)]
            try:
                data = (await ls.workspace_configuration_async(lsp.ConfigurationParams(items=items)))[0]
            except Exception as exc:
                log.warning("workspace/configuration failed: %s", exc)
                return
        ls.apply_settings({SECTION: data} if isinstance(data, dict) and SECTION not in data else data)

    @ls.feature(lsp.TEXT_DOCUMENT_INLINE_COMPLETION, lsp.InlineCompletionOptions())
    async def inline_completion(ls: DglsServer, params: lsp.InlineCompletionParams) -> Any:
        doc = ls.docs.get(params.text_document.uri)
        if doc is None:
            return None
        cursor = _offset(doc, params.position)
        automatic = params.context.trigger_kind == lsp.InlineCompletionTriggerKind.Automatic
        plan = pipeline.plan_at(doc, cursor, None, ls.settings)
        progress = await ls.begin_progress(params.work_done_token, "dgls: infilling")
        try:
            done = await ls.infill(doc.uri, [plan], delay=ls.settings.debounce_ms / 1000 if automatic else 0.0,
                                   progress=progress)
        finally:
            if progress is not None:
                progress.end()
        return inline_items(*done) if done else None

    @ls.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions(trigger_characters=TRIGGER_CHARACTERS))
    async def completion(ls: DglsServer, params: lsp.CompletionParams) -> Any:
        doc = ls.docs.get(params.text_document.uri)
        context = params.context
        trigger = context.trigger_kind if context else lsp.CompletionTriggerKind.Invoked
        if doc is None or trigger == lsp.CompletionTriggerKind.TriggerForIncompleteCompletions or (
                trigger == lsp.CompletionTriggerKind.TriggerCharacter
                and context.trigger_character not in TRIGGER_CHARACTERS):
            return lsp.CompletionList(is_incomplete=False, items=[])
        cursor = _offset(doc, params.position)
        plan = pipeline.plan_at(doc, cursor, None, ls.settings)
        delay = 0.0 if trigger == lsp.CompletionTriggerKind.Invoked else ls.settings.debounce_ms / 1000
        done = await ls.infill(doc.uri, [plan], delay=delay)
        items = [completion_item(done[0], edit, cursor) for edit in done[1]] if done else []
        return lsp.CompletionList(is_incomplete=False, items=items)

    @ls.feature(lsp.TEXT_DOCUMENT_CODE_ACTION,
                lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.RefactorRewrite]))
    def code_action(ls: DglsServer, params: lsp.CodeActionParams) -> Any:
        doc = ls.docs.get(params.text_document.uri)
        kind = lsp.CodeActionKind.RefactorRewrite
        if doc is None or not _kind_allowed(params.context.only, kind):
            return []
        start, end = doc.offsets_of(params.range) if _valid_range(doc, params.range) else (None, None)
        if start is None:
            return []
        arg = [{"textDocument": {"uri": doc.uri, "version": doc.version}, "range": _range_json(doc, start, end)}]
        if start == end:
            choices = [("Complete here", CMD_COMPLETE)]
        else:
            holes = len(pipeline.holes_in(doc, start, end, ls.settings))
            infill_title = f"Infill {holes} hole{'s' * (holes != 1)}" if holes else "Infill selection"
            choices = [(infill_title, CMD_INFILL), ("Rewrite selection", CMD_REWRITE)]
        return [lsp.CodeAction(title=f"dgls: {title}", kind=kind,
                               command=lsp.Command(title=title, command=cmd, arguments=arg))
                for title, cmd in choices]

    async def run_command(ls: DglsServer, args: tuple[Any, ...], mode: str) -> dict[str, Any]:
        uri, version, rng = _command_args(args)
        doc = ls.docs.get(uri)
        if doc is None:
            raise _invalid(f"document is not open: {uri}")
        if version is not None and version != doc.version:
            return {"applied": False, "failureReason": f"document changed (version {version}, now {doc.version})"}
        start, end = sorted((_offset(doc, rng.start), _offset(doc, rng.end)))
        if mode == "complete" or start == end:
            plans = [pipeline.plan_at(doc, start, None, ls.settings)]
        elif mode == "infill":
            plans = pipeline.holes_in(doc, start, end, ls.settings) or [pipeline.plan_at(doc, start, end, ls.settings)]
        else:
            plans = [pipeline.plan_at(doc, start, end, ls.settings)]
        progress = await ls.begin_progress(None, f"dgls: {mode}", server_initiated=True)
        try:
            done = await ls.infill(uri, plans, rewrite=mode == "rewrite", kind="command", progress=progress)
        finally:
            if progress is not None:
                progress.end()
        if done is None:
            return {"applied": False, "failureReason": "the document changed while infilling"}
        doc, edits = done  # infill() checked that the version it ran on is still current
        edit = workspace_edit(doc, doc.version, edits)
        reply = await ls.workspace_apply_edit_async(lsp.ApplyWorkspaceEditParams(edit=edit, label=f"dgls {mode}"))
        return {"applied": bool(reply.applied), "failureReason": reply.failure_reason, "edits": len(edits)}

    @ls.command(CMD_INFILL)
    async def infill_selection(ls: DglsServer, *args: Any) -> Any:
        return await run_command(ls, args, "infill")

    @ls.command(CMD_REWRITE)
    async def rewrite_selection(ls: DglsServer, *args: Any) -> Any:
        return await run_command(ls, args, "rewrite")

    @ls.command(CMD_COMPLETE)
    async def complete_here(ls: DglsServer, *args: Any) -> Any:
        return await run_command(ls, args, "complete")

    return ls


def _valid_range(doc: Any, rng: lsp.Range) -> bool:
    try:
        doc.offsets_of(rng)
        return True
    except PositionError:
        return False


def _range_json(doc: Any, start: int, end: int) -> dict[str, Any]:
    r = doc.range_of(start, end)
    return {"start": {"line": r.start.line, "character": r.start.character},
            "end": {"line": r.end.line, "character": r.end.character}}


# -- entry points (the CLI's `dgls serve` calls these) ---------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `dgls serve`."""
    parser.add_argument("--tcp", action="store_true", help="serve LSP over TCP (several editors share one engine)")
    parser.add_argument("--host", default="127.0.0.1", help="TCP address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=2087, help="TCP port (0: pick a free one and print it)")
    parser.add_argument("--model", default=None, help="model path or id (default: the embedded model)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: best available)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: per device)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error", "off"],
                        help="stderr log level and the default window/logMessage level")


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings, _ = Settings().merged({"model": args.model, "device": args.device, "dtype": args.dtype,
                                     "logLevel": args.log_level})
    return settings


def configure_logging(level: str) -> None:
    """Logs go to stderr (stdout carries the protocol); pygls' own chatter only when debugging."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(Settings(log_level=level).log_level_no)
    if level != "debug":
        handler.addFilter(OneLinePygls())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("dgls").setLevel(logging.DEBUG)
    logging.getLogger("pygls").setLevel(logging.DEBUG if level == "debug" else logging.ERROR)


def run(args: argparse.Namespace) -> int:
    """`dgls serve`: LSP on stdio, or the TCP daemon with --tcp."""
    configure_logging(args.log_level)
    shared = Shared(settings_from_args(args))
    if args.tcp:
        from .daemon import serve_forever

        return serve_forever(shared, args.host, args.port)
    ls = create_server(shared)
    try:
        ls.start_io()
    finally:
        shared.close()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # exit closed stdout already
            pass
    os._exit(0)  # the stdin reader thread may still block in read(): do not wait for it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dgls serve", description="the dgls language server")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
