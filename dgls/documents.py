"""Open documents: text, version, language id, syntax tree, and LSP position <-> str offsets.

LSP counts characters in UTF-16 code units unless the client negotiated UTF-8 or UTF-32 through
`positionEncoding`; Python strings count code points. Every position that enters or leaves the
server goes through `Document.offset_at` / `Document.position_at`. Line starts are kept in a
list updated locally on each incremental edit, so a keystroke in a 20 MB file stays cheap.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from lsprotocol import types as lsp

log = logging.getLogger(__name__)

UTF8, UTF16, UTF32 = "utf-8", "utf-16", "utf-32"
MAX_TREE_CHARS = 2_000_000  # larger documents are served without a syntax tree
_TERMINATOR = re.compile(r"\r\n|\r|\n")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class PositionError(ValueError):
    """A position that does not exist in the document (line past the end, negative numbers)."""


def _units(text: str, encoding: str) -> int:
    """Length of `text` in the negotiated code units."""
    if text.isascii() or encoding == UTF32:
        return len(text)
    if encoding == UTF8:
        return len(text.encode("utf-8", "surrogatepass"))
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _char_units(ch: str, encoding: str) -> int:
    code = ord(ch)
    if encoding == UTF16:
        return 2 if code > 0xFFFF else 1
    if encoding == UTF8:
        return 1 if code < 0x80 else 2 if code < 0x800 else 3 if code < 0x10000 else 4
    return 1


def _is_line_start(text: str, p: int) -> bool:
    """True when a line starts at offset p > 0 (the previous character ends a line)."""
    prev = text[p - 1]
    return prev == "\n" or (prev == "\r" and (p == len(text) or text[p] != "\n"))


def line_starts(text: str) -> np.ndarray:
    """Offsets where lines start (\\n, \\r\\n and \\r end lines, as LSP says), as int64."""
    if "\r" not in text:  # the common case, vectorized: a 20 MB file takes a few ms
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        return np.concatenate(([0], np.flatnonzero(codes == 10) + 1)).astype(np.int64)
    return np.array([0] + [m.end() for m in _TERMINATOR.finditer(text)], dtype=np.int64)


def scrub(text: str) -> str:
    """Lone surrogates (invalid UTF-16 sent by a client) -> U+FFFD, keeping every offset."""
    return _LONE_SURROGATE.sub("\ufffd", text) if _LONE_SURROGATE.search(text) else text


@dataclass
class Document:
    """One open document; `encoding` is the position encoding negotiated at initialize."""

    uri: str
    text: str
    version: int = 0
    language_id: str = ""
    encoding: str = UTF16
    tree: Any = None
    _lines: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64), repr=False)

    def __post_init__(self) -> None:
        self._lines = line_starts(self.text)
        self.tree = self._parse()

    # -- positions -------------------------------------------------------------------------
    @property
    def line_count(self) -> int:
        return len(self._lines)

    def line_range(self, line: int) -> tuple[int, int]:
        """Offsets of a line's first character and of its end (before the terminator)."""
        start = int(self._lines[line])
        end = int(self._lines[line + 1]) if line + 1 < len(self._lines) else len(self.text)
        while end > start and self.text[end - 1] in "\r\n":
            end -= 1
        return start, end

    def offset_at(self, position: lsp.Position) -> int:
        """str offset of an LSP position; a character past the line end means the line end."""
        line, character = position.line, position.character
        if line < 0 or character < 0:
            raise PositionError(f"negative position {line}:{character}")
        if line >= len(self._lines):
            raise PositionError(f"line {line} is past the end of {self.uri} ({len(self._lines)} lines)")
        start, end = self.line_range(line)
        segment = self.text[start:end]
        if segment.isascii() or self.encoding == UTF32:
            return start + min(character, len(segment))
        units = 0
        for i, ch in enumerate(segment):
            units += _char_units(ch, self.encoding)
            if units > character:  # inside this character (or at its start): stop before it
                return start + i
        return end

    def position_at(self, offset: int) -> lsp.Position:
        """LSP position of a str offset (clamped into the document)."""
        offset = max(0, min(offset, len(self.text)))
        line = int(np.searchsorted(self._lines, offset, side="right")) - 1
        start = int(self._lines[line])
        return lsp.Position(line=line, character=_units(self.text[start:offset], self.encoding))

    def range_of(self, start: int, end: int) -> lsp.Range:
        return lsp.Range(start=self.position_at(start), end=self.position_at(end))

    def offsets_of(self, rng: lsp.Range) -> tuple[int, int]:
        """(start, end) str offsets of a range, ordered."""
        a, b = self.offset_at(rng.start), self.offset_at(rng.end)
        return (a, b) if a <= b else (b, a)

    # -- edits -----------------------------------------------------------------------------
    def apply(self, change: Any) -> None:
        """Apply one didChange content change (full text, or a range and its replacement)."""
        rng = getattr(change, "range", None)
        if rng is None:
            self.text = change.text
            self._lines = line_starts(self.text)
            self.tree = self._parse()
            return
        start, end = self.offsets_of(rng)
        self.replace(start, end, change.text)

    def replace(self, start: int, end: int, new: str) -> None:
        """Replace text[start:end] with `new`, updating line starts and the tree locally."""
        old_text = self.text
        self.text = text = old_text[:start] + new + old_text[end:]
        delta = len(new) - (end - start)
        # Line starts that depend on characters in [a, old_b] are recomputed; see _is_line_start.
        a, old_b, new_b = max(0, start - 1), end + 1, start + len(new) + 1
        lo = int(np.searchsorted(self._lines, a, side="right"))
        hi = int(np.searchsorted(self._lines, old_b, side="right"))
        if len(new) < 4096:
            fresh = [p for p in range(a + 1, min(new_b, len(text)) + 1) if _is_line_start(text, p)]
        else:  # a big insertion: let the regex find the terminators
            ends = (m.end() for m in _TERMINATOR.finditer(text, a, min(new_b + 1, len(text))))
            fresh = [p for p in ends if a < p <= new_b and _is_line_start(text, p)]
        self._lines = np.concatenate((self._lines[:lo], np.array(fresh, dtype=np.int64), self._lines[hi:] + delta))
        if self.tree is not None:
            try:
                self.tree.edit(start, end, new, text)
            except Exception:  # a tree that cannot follow the edit is rebuilt from scratch
                log.debug("syntax tree edit failed; reparsing %s", self.uri, exc_info=True)
                self.tree = self._parse()
        elif delta and len(old_text) > MAX_TREE_CHARS >= len(text):
            self.tree = self._parse()

    def _parse(self) -> Any:
        """A SyntaxTree for the document, or None (no grammar, too large, parser missing)."""
        if len(self.text) > MAX_TREE_CHARS or not self.language_id:
            return None
        try:
            from .syntax import SyntaxTree
        except ImportError:
            return None
        try:
            return SyntaxTree(self.language_id, self.text)
        except Exception:
            log.debug("no syntax tree for %s (%s)", self.uri, self.language_id, exc_info=True)
            return None


class DocumentStore:
    """The documents one client has open, by URI."""

    def __init__(self, encoding: str = UTF16) -> None:
        self.encoding = encoding
        self._docs: dict[str, Document] = {}

    def open(self, uri: str, text: str, version: int, language_id: str) -> Document:
        doc = Document(uri=uri, text=text, version=version, language_id=language_id, encoding=self.encoding)
        self._docs[uri] = doc
        return doc

    def change(self, uri: str, version: int, changes: list[Any]) -> Document | None:
        doc = self._docs.get(uri)
        if doc is None:
            log.warning("didChange for a document that is not open: %s", uri)
            return None
        for change in changes:
            doc.apply(change)
        doc.version = version
        return doc

    def close(self, uri: str) -> None:
        self._docs.pop(uri, None)

    def get(self, uri: str) -> Document | None:
        return self._docs.get(uri)

    def uris(self) -> list[str]:
        return list(self._docs)

    def __len__(self) -> int:
        return len(self._docs)
