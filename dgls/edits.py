"""Turn infills (str offsets + new text) into the LSP shapes each feature answers with.

Every shape carries a range, so accepting an item replaces exactly the planned span, and every
WorkspaceEdit names the document version it was computed for, so a client refuses it once the
document has moved on.
"""

from __future__ import annotations

from typing import NamedTuple

from lsprotocol import types as lsp

from .documents import Document

DETAIL = "dgls"
SORT_TEXT = "!dgls"  # "!" sorts before letters and digits: the infill sits at the top of the list


class Edit(NamedTuple):
    """Replace text[start:end] (str offsets in the document version it was computed for)."""

    start: int
    end: int
    text: str


def label_of(text: str, width: int = 60) -> str:
    """First non-blank line, trimmed, with "…" when there is more (the completion label)."""
    lines = [line.strip() for line in text.splitlines()]
    first = next((i for i, line in enumerate(lines) if line), None)
    if first is None:
        return "⏎" if text else "∅"
    label = lines[first]
    more = any(lines[first + 1:]) or len(label) > width
    return (label[:width].rstrip() + "…") if more else label


def inline_items(doc: Document, edits: list[Edit]) -> list[lsp.InlineCompletionItem]:
    """One inline completion item per edit; its range is the span the infill replaces."""
    return [lsp.InlineCompletionItem(insert_text=e.text, range=doc.range_of(e.start, e.end))
            for e in edits if e.text or e.end > e.start]


def completion_item(doc: Document, edit: Edit, cursor: int) -> lsp.CompletionItem:
    """A completion item inserting the infill; its main edit is single-line and holds the cursor.

    LSP requires that: a span reaching past the cursor's line becomes an insertion at the cursor
    plus additional edits that delete the rest of the span on either side.
    """
    start, end = edit.start, edit.end
    line = doc.position_at(cursor).line
    line_start, line_end = doc.line_range(line)
    if line_start <= start <= cursor <= end <= line_end:
        main = lsp.TextEdit(range=doc.range_of(start, end), new_text=edit.text)
        extra = None
        typed = doc.text[start:cursor]
    else:
        main = lsp.TextEdit(range=doc.range_of(cursor, cursor), new_text=edit.text)
        extra = [lsp.TextEdit(range=doc.range_of(a, b), new_text="")
                 for a, b in ((edit.start, cursor), (cursor, edit.end)) if b > a] or None
        typed = ""
    label = label_of(edit.text)
    return lsp.CompletionItem(
        label=label, detail=DETAIL, sort_text=SORT_TEXT, filter_text=typed + label,
        kind=lsp.CompletionItemKind.Snippet, insert_text_format=lsp.InsertTextFormat.PlainText,
        text_edit=main, additional_text_edits=extra,
        documentation=lsp.MarkupContent(kind=lsp.MarkupKind.PlainText, value=edit.text),
    )


def workspace_edit(doc: Document, version: int, edits: list[Edit]) -> lsp.WorkspaceEdit:
    """A WorkspaceEdit with one versioned TextDocumentEdit (clients reject it for another version)."""
    text_edits: list[lsp.TextEdit | lsp.AnnotatedTextEdit | lsp.SnippetTextEdit] = [
        lsp.TextEdit(range=doc.range_of(e.start, e.end), new_text=e.text) for e in sorted(edits)
    ]
    ident = lsp.OptionalVersionedTextDocumentIdentifier(uri=doc.uri, version=version)
    return lsp.WorkspaceEdit(document_changes=[lsp.TextDocumentEdit(text_document=ident, edits=text_edits)])
