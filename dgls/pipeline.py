"""One infill from document to edits: plan the span, build the InfillRequest, run the engine,
clean the result, and repair or drop what breaks the parse. Planning runs on the event loop (it
reads the live syntax tree); `run_plans` runs on the worker thread against an immutable
snapshot of the text. `dgls infill` and the language server both go through here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from dgls.engine import InfillRequest

from .deadline import past
from .documents import MAX_TREE_CHARS, Document, scrub
from .edits import Edit
from .options import Settings
from .postprocess import choose_infill
from .spans import plan_holes, plan_span

log = logging.getLogger(__name__)

WINDOW_CHARS = 48_000  # a document too large for a syntax tree is planned and checked on a window
WINDOW_GRID = 8_192
SUFFIX_CHARS = 8_000
MARKERS = ("...", "TODO")
SEED = 0  # the same text gets the same infill, here and in `dgls infill`



@dataclass(frozen=True)
class Snapshot:
    """The document as a request saw it; results for another version are dropped."""

    uri: str
    version: int
    text: str
    language_id: str
    doc_id: str


def snapshot(doc: Document, doc_id: str) -> Snapshot:
    return Snapshot(doc.uri, doc.version, doc.text, doc.language_id, doc_id)


def plan_at(doc: Document, start: int, end: int | None, settings: Settings) -> Any:
    """The span to mask for a cursor (end None) or a selection.

    A document too large for a syntax tree is planned on a window around the span, so a 20 MB
    file is never re-parsed whole per request.
    """
    stop = start if end is None else end
    text, base, tree = doc.text, 0, doc.tree
    if tree is None and len(text) > MAX_TREE_CHARS:
        base = _window_start(text, start)
        text = text[base:stop + SUFFIX_CHARS]
    plan = plan_span(text, doc.language_id, start - base, None if end is None else end - base,
                     tree=tree, max_budget=settings.max_span_tokens)
    return replace(plan, start=plan.start + base, end=plan.end + base) if base else plan


def holes_in(doc: Document, start: int, end: int, settings: Settings) -> list[Any]:
    """One plan per `...`/`TODO` marker inside the selection (empty when there is none)."""
    if len(doc.text) > MAX_TREE_CHARS:
        return []
    return list(plan_holes(doc.text, doc.language_id, start, end, markers=MARKERS, tree=doc.tree,
                           max_budget=settings.max_span_tokens))


def run_plans(engine: Any, snap: Snapshot, plans: list[Any], settings: Settings, cancel: threading.Event,
              rewrite: bool = False, on_draft: Callable[[str], None] | None = None,
              results: list | None = None, deadline: float | None = None) -> list[Edit] | None:
    """Fill each planned span in order (later holes see earlier fills); None when cancelled.

    `results`, when given, receives each span's engine InfillResult (stats for `dgls infill --json`).
    At `deadline` (monotonic) the engine stops: its last draft is kept if it keeps the file
    parsing (repairs run only when they can finish by then), and spans not reached are left as
    they are.
    """
    text, shift, edits = snap.text, 0, []
    for plan in sorted(plans, key=lambda p: p.start):
        if past(deadline):
            break
        start, end = plan.start + shift, plan.end + shift
        req = InfillRequest(  # the engine alone windows the prefix (by tokens, cache-friendly)
            prefix=scrub(text[:start]), suffix=scrub(text[end:end + SUFFIX_CHARS]),
            span=scrub(text[start:end]), doc_id=snap.doc_id,
            max_tokens=plan.budget, steps=settings.steps, seed=SEED,
            single_line=plan.single_line, seed_with_span=rewrite, on_draft=on_draft, deadline=deadline,
            layout=settings.infill_layout, language=snap.language_id,
        )
        began = time.monotonic()
        result = engine.infill(req, cancel=cancel)
        took = time.monotonic() - began
        if result.status not in ("ok", "deadline") or cancel.is_set():
            return None
        if results is not None:
            results.append(result)
        filled = _choose(engine, req, result.text, plan, text, snap.language_id, cancel, took)
        if filled is None:
            return None
        if result.status == "deadline" and not filled:
            break  # nothing usable by the deadline: leave this span (a selection stays as it was)
        edits.append(Edit(plan.start, plan.end, filled))
        text = text[:start] + filled + text[end:]
        shift += len(filled) - (plan.end - plan.start)
    return edits


def infill_document(engine: Any, doc: Document, start: int, end: int | None, settings: Settings,
                    results: list | None = None) -> tuple[Any, Edit]:
    """The whole flow for one cursor (end None) or selection of a document, off any server:
    plan, infill, post-process. `dgls infill` and `dgls eval` use it, as the server does."""
    plan = plan_at(doc, start, end, settings)
    edits = run_plans(engine, snapshot(doc, doc.uri), [plan], settings, threading.Event(),
                      rewrite=end is not None, results=results)
    return plan, (edits[0] if edits else Edit(plan.start, plan.end, doc.text[plan.start:plan.end]))


def infilled_file(engine: Any, prefix: str, suffix: str, language_id: str = "python") -> str:
    """The whole file after the server's edit for a cursor between `prefix` and `suffix`
    (what `dgls eval` scores: planning, post-processing and the syntax check count)."""
    doc = Document(uri="file:///eval/item", text=prefix + suffix, version=1, language_id=language_id)
    _, edit = infill_document(engine, doc, len(prefix), None, Settings())
    return doc.text[:edit.start] + edit.text + doc.text[edit.end:]


def _window_start(text: str, start: int) -> int:
    """Where the planning window of a huge document begins: a line start on a coarse grid."""
    if start <= WINDOW_CHARS:
        return 0
    cut = (start - WINDOW_CHARS) // WINDOW_GRID * WINDOW_GRID
    newline = text.find("\n", cut, start)
    return cut if newline == -1 else newline + 1


def _choose(engine: Any, req: InfillRequest, raw: str, plan: Any, text: str, language_id: str,
            cancel: threading.Event, took: float = 0.0) -> str | None:
    """Clean the infill; if it breaks the parse, re-mask the offending part once, then try another
    seed; "" when nothing valid was found. None when cancelled meanwhile. A repair that would not
    finish by the deadline at the pace of the first draft (`took` seconds) is not started: it would
    only hold the answer until the deadline.

    `plan` offsets are in `text`; a document too large for a syntax tree is post-processed on a
    window around the span (a whole-file syntax check of 20 MB takes a minute).
    """
    if len(text) > MAX_TREE_CHARS:
        base = _window_start(text, plan.start)
        text = text[base:plan.end + SUFFIX_CHARS]
        plan = replace(plan, start=plan.start - base, end=plan.end - base)

    def repair(candidate: str, bad: list[tuple[int, int]]) -> list[str]:
        """Candidates, computed only when the first one breaks the parse: the draft with its
        offending part re-masked, then a fresh draft from another seed."""
        out = []
        for attempt in (replace(req, span=candidate, remask=bad, seed_with_span=False, on_draft=None),
                        replace(req, seed=(req.seed or 0) + 1, on_draft=None)):
            if req.deadline is not None and time.monotonic() + took > req.deadline:
                break
            result = engine.infill(attempt, cancel=cancel)
            if result.status in ("ok", "deadline") and result.text:
                out.append(result.text)
        return out

    choice = choose_infill([raw], plan, text, language_id, repair=repair)
    return None if cancel.is_set() else choice.text

