"""The LSP features, as module-level handlers: parse the request, plan, hand work to the connection.

Each handler takes the connection (`DglsServer`) and the params; `create_server()` registers them
all on a new connection (stdio has one, the TCP daemon one per editor). Engine work goes through
`DglsServer.infill` (scheduler, supersession, cancellation); results become LSP shapes in
dgls.edits.

Completion (`textDocument/completion`, for editors without inline completion) answers when it is
invoked and on the trigger characters `TRIGGER_CHARACTERS`; re-triggers for incomplete lists and
other characters get an empty list, so typing never floods the engine.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from lsprotocol import types as lsp
from pygls.capabilities import ServerCapabilitiesBuilder
from pygls.exceptions import JsonRpcInvalidParams

from . import pipeline
from .connection import DglsServer, Shared
from .documents import UTF8, UTF16, UTF32, PositionError
from .edits import completion_item, inline_items, workspace_edit
from .options import SECTION, section_of

log = logging.getLogger("dgls.server")

TRIGGER_CHARACTERS = ["(", "=", ":"]
CMD_INFILL, CMD_REWRITE, CMD_COMPLETE = "dgls.infillSelection", "dgls.rewriteSelection", "dgls.completeHere"
_ENCODINGS = {lsp.PositionEncodingKind.Utf8: UTF8, lsp.PositionEncodingKind.Utf16: UTF16,
              lsp.PositionEncodingKind.Utf32: UTF32}


# -- lifecycle and documents -----------------------------------------------------------------------
def initialize(ls: DglsServer, params: lsp.InitializeParams) -> None:
    ls.loop = asyncio.get_running_loop()
    encoding = ServerCapabilitiesBuilder.choose_position_encoding(params.capabilities)
    ls.docs.encoding = _ENCODINGS.get(encoding, UTF16)
    ls.apply_settings(params.initialization_options)
    ls.start_logging()
    ls.attach_engine()  # loads on a thread: initialize answers at once


def initialized(ls: DglsServer, params: lsp.InitializedParams) -> None:
    ls.mark_initialized()


def shutdown(ls: DglsServer, params: Any) -> None:
    ls.shared.scheduler.cancel_client(ls.client_id)


def did_open(ls: DglsServer, params: lsp.DidOpenTextDocumentParams) -> None:
    item = params.text_document
    ls.docs.open(item.uri, item.text, item.version, item.language_id)


def did_change(ls: DglsServer, params: lsp.DidChangeTextDocumentParams) -> None:
    uri = params.text_document.uri
    try:
        ls.docs.change(uri, params.text_document.version, list(params.content_changes))
    except PositionError as exc:  # out of sync: keep what we have, say so
        log.error("didChange for %s does not fit the document (%s); ask the editor to reopen it", uri, exc)
    ls.cancel_document(uri)


def did_close(ls: DglsServer, params: lsp.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    ls.docs.close(uri)
    ls.cancel_document(uri)
    ls.shared.host.forget(ls.doc_id(uri))


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


# -- infills -------------------------------------------------------------------------------------
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
    """infill / rewrite / complete a range of a document, applied as a versioned workspace edit."""
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


async def infill_selection(ls: DglsServer, *args: Any) -> Any:
    return await run_command(ls, args, "infill")


async def rewrite_selection(ls: DglsServer, *args: Any) -> Any:
    return await run_command(ls, args, "rewrite")


async def complete_here(ls: DglsServer, *args: Any) -> Any:
    return await run_command(ls, args, "complete")


FEATURES: list[tuple[str, Any, Any]] = [
    (lsp.INITIALIZE, None, initialize),
    (lsp.INITIALIZED, None, initialized),
    (lsp.SHUTDOWN, None, shutdown),
    (lsp.TEXT_DOCUMENT_DID_OPEN, None, did_open),
    (lsp.TEXT_DOCUMENT_DID_CHANGE, None, did_change),
    (lsp.TEXT_DOCUMENT_DID_CLOSE, None, did_close),
    (lsp.WORKSPACE_DID_CHANGE_CONFIGURATION, None, did_change_configuration),
    (lsp.TEXT_DOCUMENT_INLINE_COMPLETION, lsp.InlineCompletionOptions(), inline_completion),
    (lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions(trigger_characters=TRIGGER_CHARACTERS), completion),
    (lsp.TEXT_DOCUMENT_CODE_ACTION, lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.RefactorRewrite]),
     code_action),
]
COMMANDS = {CMD_INFILL: infill_selection, CMD_REWRITE: rewrite_selection, CMD_COMPLETE: complete_here}


def create_server(shared: Shared | None = None, client_id: str | None = None) -> DglsServer:
    """A server for one connection, with every dgls feature registered."""
    ls = DglsServer(shared or Shared(), client_id)
    for method, options, handler in FEATURES:
        ls.feature(method, options)(handler)
    for name, handler in COMMANDS.items():
        ls.command(name)(handler)
    return ls


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
        if not isinstance(uri, str) or not (version is None or isinstance(version, int)):
            raise TypeError("textDocument needs a string uri and an integer version")
        return uri, version, lsp.Range(start=_position(rng["start"]), end=_position(rng["end"]))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise _invalid(f"expected [{{textDocument: {{uri, version}}, range}}]: {exc}") from None


def _position(p: dict) -> lsp.Position:
    line, char = p["line"], p["character"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (line, char)):
        raise TypeError("line/character must be integers")
    return lsp.Position(line=line, character=char)


def _kind_allowed(only: Any, kind: str) -> bool:
    return not only or any(kind == k or kind.startswith(f"{k}.") for k in only)


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
