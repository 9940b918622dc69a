"""A document's tree-sitter tree, kept in step with edits by incremental reparsing.

Offsets in dgls are Python ``str`` offsets (code points); tree-sitter counts UTF-8 bytes and
(row, byte-column) points.  This module is the only place that converts between them, so the
rest of the server never sees a byte offset.  Lone surrogates (which an editor can send via
UTF-16) are encoded with ``surrogatepass`` so that conversion never raises.
"""

from __future__ import annotations

import tree_sitter

from dgls.languages import new_parser, ts_language_name

_ENC = "utf-8"
_ERRORS = "surrogatepass"


def _encode(text: str) -> bytes:
    return text.encode(_ENC, _ERRORS)


def _point(text: str, offset: int) -> tuple[int, int]:
    """(row, byte column) of a str offset, as tree-sitter counts them (rows split on '\\n')."""
    row = text.count("\n", 0, offset)
    line_start = text.rfind("\n", 0, offset) + 1
    return row, len(_encode(text[line_start:offset]))


class SyntaxTree:
    """Parse tree of one document text; ``tree`` is None for languages without a grammar."""

    def __init__(self, language_id: str, text: str) -> None:
        self.language_id = language_id
        self.language_name = ts_language_name(language_id)
        self._parser = new_parser(language_id)
        self.text = text
        self._bytes = _encode(text)
        self.tree: tree_sitter.Tree | None = (
            self._parser.parse(self._bytes) if self._parser is not None else None
        )

    # -- edits -------------------------------------------------------------------------------
    def edit(self, start: int, old_end: int, new_text: str, text_after: str) -> None:
        """Apply one edit (str offsets into the text before it) and reparse incrementally.

        If ``text_after`` does not match the edit (a client and server out of step), the tree
        is rebuilt from scratch rather than trusted.
        """
        old = self.text
        start = max(0, min(start, len(old)))
        old_end = max(start, min(old_end, len(old)))
        new_end = start + len(new_text)
        consistent = (
            len(text_after) == len(old) - (old_end - start) + len(new_text)
            and text_after[start:new_end] == new_text
        )
        new_bytes = _encode(text_after)
        if self._parser is None:
            self.text, self._bytes = text_after, new_bytes
            return
        if not consistent or self.tree is None:
            self.text, self._bytes = text_after, new_bytes
            self.tree = self._parser.parse(new_bytes)
            return
        start_byte = len(_encode(old[:start]))
        old_end_byte = start_byte + len(_encode(old[start:old_end]))
        new_end_byte = start_byte + len(_encode(new_text))
        self.tree.edit(
            start_byte=start_byte,
            old_end_byte=old_end_byte,
            new_end_byte=new_end_byte,
            start_point=_point(old, start),
            old_end_point=_point(old, old_end),
            new_end_point=_point(text_after, new_end),
        )
        self.text, self._bytes = text_after, new_bytes
        self.tree = self._parser.parse(new_bytes, self.tree)

    def with_edit(self, start: int, end: int, new_text: str) -> SyntaxTree:
        """A new SyntaxTree for ``text[:start] + new_text + text[end:]``, reparsed from a copy.

        Used to check candidate infills cheaply without disturbing the document's own tree.
        """
        clone = SyntaxTree.__new__(SyntaxTree)
        clone.language_id, clone.language_name = self.language_id, self.language_name
        clone._parser = new_parser(self.language_id)
        clone.text, clone._bytes = self.text, self._bytes
        clone.tree = self.tree.copy() if self.tree is not None else None
        clone.edit(start, end, new_text, self.text[:start] + new_text + self.text[end:])
        return clone

    # -- queries -----------------------------------------------------------------------------
    def sexp(self) -> str:
        """The tree's s-expression ('' without a tree); equal trees print equal strings."""
        return str(self.tree.root_node) if self.tree is not None else ""

    def _error_nodes(self) -> list[tree_sitter.Node]:
        if self.tree is None or not self.tree.root_node.has_error:
            return []
        found: list[tree_sitter.Node] = []
        stack = [self.tree.root_node]
        while stack:
            node = stack.pop()
            if node.is_error or node.is_missing:
                found.append(node)
            stack.extend(child for child in reversed(node.children) if child.has_error)
        return found

    def error_count(self) -> int:
        """Number of ERROR and MISSING nodes: the measure of "does this parse"."""
        return len(self._error_nodes())

    def error_ranges(self) -> list[tuple[int, int]]:
        """(start, end) str offsets of every ERROR / MISSING node (MISSING ones are empty)."""
        return [(self.char_offset(n.start_byte), self.char_offset(n.end_byte)) for n in self._error_nodes()]

    def byte_offset(self, offset: int) -> int:
        """UTF-8 byte offset of a str offset."""
        return len(_encode(self.text[:offset]))

    def char_offset(self, byte: int) -> int:
        """str offset of a UTF-8 byte offset (bytes inside a character round down)."""
        data = self._bytes
        byte = max(0, min(byte, len(data)))
        while 0 < byte < len(data) and data[byte] & 0xC0 == 0x80:
            byte -= 1
        return len(data[:byte].decode(_ENC, _ERRORS))

    def node_at(self, offset: int, named: bool = True) -> tree_sitter.Node | None:
        """Smallest (named) node covering the character at ``offset``, or None without a tree."""
        return self.node_for_range(offset, offset, named)

    def node_for_range(self, start: int, end: int, named: bool = True) -> tree_sitter.Node | None:
        """Smallest (named) node spanning the str range [start, end]."""
        if self.tree is None:
            return None
        b0, b1 = self.byte_offset(start), self.byte_offset(end)
        root = self.tree.root_node
        if named:
            return root.named_descendant_for_byte_range(b0, b1)
        return root.descendant_for_byte_range(b0, b1)

    def node_range(self, node: tree_sitter.Node) -> tuple[int, int]:
        """str offsets of a node."""
        return self.char_offset(node.start_byte), self.char_offset(node.end_byte)


def parse_error_count(language_id: str, text: str) -> int:
    """ERROR + MISSING nodes of a fresh parse; 0 for languages without a grammar."""
    return SyntaxTree(language_id, text).error_count()
