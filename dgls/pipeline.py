"""One infill from document to edits: plan the span, build the InfillRequest, run the engine,
clean the result. Planning runs on the event loop (it reads the live syntax tree); `run_plans`
runs on the worker thread against an immutable snapshot of the text.

Uses `dgls.spans` and `dgls.postprocess` when they are installed; until then the marked
FALLBACK helpers below stand in with deliberately simple rules.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from dgls.engine import InfillRequest

from .documents import MAX_TREE_CHARS, Document, scrub
from .edits import Edit
from .options import Settings

log = logging.getLogger(__name__)

PREFIX_CHARS = 48_000  # the engine keeps what fits its window; this bounds tokenizing huge files
PREFIX_GRID = 8_192  # the cut point moves in steps, so the per-document prefix cache stays valid
SUFFIX_CHARS = 8_000
MARKERS = ("...", "TODO")
SEED = 0  # the same text gets the same infill, here and in `dgls infill`

try:
    from .spans import plan_holes, plan_span
except ImportError:  # FALLBACK until dgls/spans.py lands
    plan_span = plan_holes = None  # type: ignore[assignment]
try:
    from .postprocess import choose_infill
except ImportError:  # FALLBACK until dgls/postprocess.py lands
    choose_infill = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Snapshot:
    """The document as a request saw it; results for another version are dropped."""

    uri: str
    version: int
    text: str
    language_id: str
    doc_id: str


@dataclass(frozen=True)
class FallbackPlan:
    """FALLBACK stand-in for spans.SpanPlan (same fields)."""

    start: int
    end: int
    budget: int
    single_line: bool
    kind: str
    indent: str


def snapshot(doc: Document, doc_id: str) -> Snapshot:
    return Snapshot(doc.uri, doc.version, doc.text, doc.language_id, doc_id)


def plan_at(doc: Document, start: int, end: int | None, settings: Settings) -> Any:
    """The span to mask for a cursor (end None) or a selection.

    A document too large for a syntax tree is planned on a window around the span, so a 20 MB
    file is never re-parsed whole per request.
    """
    stop = start if end is None else end
    if plan_span is not None:
        text, base, tree = doc.text, 0, doc.tree
        if tree is None and len(text) > MAX_TREE_CHARS:
            base = _prefix_cut(text, start)
            text = text[base:stop + SUFFIX_CHARS]
        try:
            plan = plan_span(text, doc.language_id, start - base, None if end is None else end - base,
                             tree=tree, max_budget=settings.max_span_tokens)
            return replace(plan, start=plan.start + base, end=plan.end + base) if base else plan
        except Exception:  # a planner bug must not take the feature down: plan simply instead
            log.exception("plan_span failed; using the simple planner")
    return _fallback_plan(doc.text, start, stop, settings.max_span_tokens)


def holes_in(doc: Document, start: int, end: int, settings: Settings) -> list[Any]:
    """One plan per `...`/`TODO` marker inside the selection (empty when there is none)."""
    if plan_holes is not None and len(doc.text) <= MAX_TREE_CHARS:
        try:
            return list(plan_holes(doc.text, doc.language_id, start, end, markers=MARKERS, tree=doc.tree))
        except Exception:
            log.exception("plan_holes failed; using the simple hole finder")
    plans, text = [], doc.text
    for marker in MARKERS:
        at = text.find(marker, start, end)
        while at != -1 and at + len(marker) <= end:
            plans.append(_fallback_plan(text, at, at + len(marker), settings.max_span_tokens))
            at = text.find(marker, at + len(marker), end)
    return sorted(plans, key=lambda p: p.start)


def run_plans(engine: Any, snap: Snapshot, plans: list[Any], settings: Settings, cancel: threading.Event,
              rewrite: bool = False, on_draft: Callable[[str], None] | None = None) -> list[Edit] | None:
    """Fill each planned span in order (later holes see earlier fills); None when cancelled."""
    text, shift, edits = snap.text, 0, []
    for plan in sorted(plans, key=lambda p: p.start):
        start, end = plan.start + shift, plan.end + shift
        cut = _prefix_cut(text, start)
        req = InfillRequest(
            prefix=scrub(text[cut:start]), suffix=scrub(text[end:end + SUFFIX_CHARS]),
            span=scrub(text[start:end]), doc_id=snap.doc_id,
            max_tokens=max(1, min(plan.budget, settings.max_span_tokens)), steps=settings.steps, seed=SEED,
            single_line=plan.single_line, seed_with_span=rewrite, on_draft=on_draft,
        )
        result = engine.infill(req, cancel=cancel)
        if result.status != "ok" or cancel.is_set():
            return None
        filled = _clean(result.text, plan, snap.text, snap.language_id)
        edits.append(Edit(plan.start, plan.end, filled))
        text = text[:start] + filled + text[end:]
        shift += len(filled) - (plan.end - plan.start)
    return edits


def _prefix_cut(text: str, start: int) -> int:
    """Where the prefix handed to the engine begins: a line start on a coarse grid."""
    if start <= PREFIX_CHARS:
        return 0
    cut = (start - PREFIX_CHARS) // PREFIX_GRID * PREFIX_GRID
    newline = text.find("\n", cut, start)
    return cut if newline == -1 else newline + 1


def _clean(infill: str, plan: Any, text: str, language_id: str) -> str:
    """Post-process like `dgls infill` does (dgls.infill.infill_text), so both answer alike.

    `plan` offsets are in `text`; a document too large for a syntax tree is post-processed on a
    window around the span (a whole-file syntax check of 20 MB takes a minute).
    """
    if choose_infill is not None:
        base = 0
        if len(text) > MAX_TREE_CHARS:
            base = _prefix_cut(text, plan.start)
            text = text[base:plan.end + SUFFIX_CHARS]
            plan = replace(plan, start=plan.start - base, end=plan.end - base)
        try:
            return choose_infill([infill], plan, text, language_id).text
        except Exception:
            log.exception("choose_infill failed; using the simple clean-up")
    # FALLBACK: a single-line span keeps its first line; trailing blanks never help.
    if plan.single_line:
        infill = infill.split("\n", 1)[0]
    return infill.rstrip() if plan.single_line else infill


def _fallback_plan(text: str, start: int, end: int, max_budget: int) -> FallbackPlan:
    """FALLBACK planner: mid-line -> single line; an empty line or a selection -> a block."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line_end = len(text) if line_end == -1 else line_end
    line = text[line_start:line_end]
    indent = line[: len(line) - len(line.lstrip(" \t"))]
    single = "\n" not in text[start:end] and (end > start or text[end:line_end].strip() != "")
    budget = min(max_budget, 16 if single else max_budget)
    if end > start:
        budget = min(max_budget, max(8, (end - start) // 3 + 8))
    return FallbackPlan(start, end, budget, single, "line" if single else "block", indent)
