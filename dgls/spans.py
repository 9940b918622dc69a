"""Span planning: turn a cursor, a selection or placeholder holes into the span the engine fills.

A diffusion infill has a fixed number of positions, so the planner decides up front what is
masked, how many tokens to reserve, whether the fill must stay on one line and what indentation
its lines should have.  Rules, in order, for a cursor:

1. empty body (``def f():`` with nothing under it, ``{}`` / ``{\\n}`` in brace languages,
   ``then``/``do``/``function()`` ... ``end`` in Lua, ``then``/``do``/``{`` ... ``fi``/``done``/``}``
   in shell, Ruby/Julia/Elixir/fish ``end`` blocks) -> ``block``, budget = ``max_budget``;
2. code before or after the cursor on its line -> ``line``: fill the rest of the line, one line,
   16-24 tokens depending on how much of a ~100-column line is left;
3. a blank line -> ``statement``: between two lines of the same block one line (16-24 tokens, as
   for rule 2: drafts of several lines there ran on into the code below, and editors' assistants
   suggest one line mid-block too); at the end of a block a statement or a few lines, 32 tokens.

The tree (when the language has a grammar) tells a code block ``{}`` from an object, dict,
table or initializer literal, finds whole nodes for ``expand_to_node`` and tells placeholder
holes from strings, spreads and varargs.  Without a grammar the same rules run on text alone.
Budgets are tokens (about one per 3.5 characters of code) clamped to ``[4, max_budget]``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from dgls.indentation import (
    default_indent_unit,
    detect_indent_unit,
    indent_width,
    leading_ws,
    line_bounds,
    next_line,
    prev_line,
    render_indent,
)
from dgls.languages import ts_language_name
from dgls.syntax import SyntaxTree

LINE_WIDTH = 100
CHARS_PER_TOKEN = 3.5


@dataclass
class SpanPlan:
    """What to mask and how: str offsets into the document, token budget, shape hints."""

    start: int
    end: int
    budget: int
    single_line: bool
    kind: str
    indent: str
    indent_unit: str = ""  # the document's indentation step, so post-processing agrees with us


def _clamp_budget(value: float, max_budget: int, low: int = 4) -> int:
    """The plan's token budget: at least `low`, never above the user's cap (the planner owns it)."""
    return max(1, min(max_budget, max(low, math.ceil(value))))


def _line_budget(line: str, max_budget: int) -> int:
    """16-24 tokens: more when more of a ~100-column line is still free."""
    free = max(0, LINE_WIDTH - len(line.expandtabs(4)))
    return _clamp_budget(min(24, max(16, free / CHARS_PER_TOKEN)), max_budget)


# -- language families --------------------------------------------------------------------------
_COLON_BLOCKS = {"python", "starlark", "gdscript", "nim", "cython"}
# (opener at the end of the code before the cursor, closer at the start of the code after it)
_END_BLOCKS: dict[str, tuple[re.Pattern[str], re.Pattern[str]]] = {
    "lua": (re.compile(r"(\bthen|\bdo|\belse|\brepeat|\bfunction\b[^\n]*\))\s*$"),
            re.compile(r"^\s*(end|else|elseif|until)\b")),
    "luau": (re.compile(r"(\bthen|\bdo|\belse|\brepeat|\bfunction\b[^\n]*\))\s*$"),
             re.compile(r"^\s*(end|else|elseif|until)\b")),
    "bash": (re.compile(r"(\bthen|\bdo|\belse|\{|\bin)\s*$"),
             re.compile(r"^\s*((fi|done|else|elif|esac)\b|\})")),
    "ruby": (re.compile(r"(^\s*(def|class|module|if|unless|while|until|case|begin)\b[^\n]*"
                        r"|\bdo(\s*\|[^|\n]*\|)?|\bthen|\belse)\s*$"),
             re.compile(r"^\s*(end|else|elsif|when|rescue|ensure)\b")),
    "julia": (re.compile(r"(^\s*(function|if|for|while|begin|let|module|struct|try|macro)\b[^\n]*"
                         r"|\bdo(\s+\w+)?)\s*$"),
              re.compile(r"^\s*(end|else|elseif|catch|finally)\b")),
    "elixir": (re.compile(r"\b(do|else|fn)\s*$"), re.compile(r"^\s*(end|else)\b")),
    "fish": (re.compile(r"^\s*(function|if|for|while|begin|switch|else)\b[^\n]*$"),
             re.compile(r"^\s*(end|else)\b")),
}
# Parents of a `{` token that make it a literal (object, dict, table...), not a code block.
_LITERAL_PARENTS = {
    "object", "object_type", "object_pattern", "literal_value", "initializer_list",
    "field_initializer_list", "array_initializer", "table_constructor", "dictionary",
    "set", "dictionary_comprehension", "set_comprehension", "struct_expression",
    "composite_literal", "hash", "map", "map_literal", "record", "object_literal",
    "initializer_expression", "anonymous_object_creation_expression",
}
_CLOSER_LINE = re.compile(r"^\s*([})\]]+[;,]?|end|fi|done|esac|until\b.*)\s*$")


def _strip_py_comment(line: str) -> str:
    """Code of a line without a trailing '#' comment (quotes are honoured roughly)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return line[:i]
    return line


def _brace_is_block(text: str, brace: int, tree: SyntaxTree | None) -> bool:
    """Is the `{` at ``brace`` a code block (function/class/if body) rather than a literal?"""
    if tree is not None and tree.tree is not None:
        node = tree.node_for_range(brace, brace + 1, named=False)
        if node is not None and node.type == "{" and node.parent is not None:
            parent = node.parent.type
            if parent != "ERROR":
                return parent not in _LITERAL_PARENTS
    before = text[:brace].rstrip()
    if not before:
        return True
    if re.search(r"(\breturn|\byield|=>?|[(,:\[?])$", before):
        return before.endswith("=>")
    return True


def _empty_body(text: str, start: int, end: int, name: str | None, tree: SyntaxTree | None) -> str | None:
    """If [start, end) sits in an empty body, the opener line's text; else None."""
    code_before = text[:start].rstrip()
    code_after = text[end:].lstrip()
    if not code_before:
        return None
    opener_line = code_before[code_before.rfind("\n") + 1:]
    if code_before.endswith("{") and code_after.startswith("}"):
        return opener_line if _brace_is_block(text, len(code_before) - 1, tree) else None
    if name in _END_BLOCKS:
        opener, closer = _END_BLOCKS[name]
        return opener_line if opener.search(opener_line) and closer.match(code_after) else None
    if name in _COLON_BLOCKS or name is None:
        if not _strip_py_comment(opener_line).rstrip().endswith(":"):
            return None
        after_line_end = text.find("\n", end)
        if after_line_end >= 0 and text[end:after_line_end].strip():
            return None  # code after the cursor on its line
        nxt = next_line(text, end)
        if after_line_end < 0 or nxt is None:
            return opener_line
        opener_width = len(leading_ws(opener_line).expandtabs(4))
        return opener_line if len(leading_ws(nxt).expandtabs(4)) <= opener_width else None
    return None


DOCSTRING_WINDOW = 20_000  # characters looked back for a docstring's opening quotes


def _docstring_only_body(text: str, pos: int, width: int, unit: str) -> bool:
    """Whether everything between a block opener (`...:`) and `pos` is one docstring: the body is
    still to be written, as in `def f():` followed by its docstring."""
    before = text[max(0, pos - DOCSTRING_WINDOW):pos].rstrip()  # a longer docstring keeps the old plan
    for quote in ('"""', "'''"):
        if not before.endswith(quote) or len(before) < 6:
            continue
        opening = before.rfind(quote, 0, len(before) - 3)
        if opening < 0:
            return False
        head = before[:opening].rstrip("rRuU")  # r"""...""" docstrings
        if head[head.rfind("\n") + 1:].strip():
            return False  # the string is part of a statement, not a docstring of its own
        opener = head.rstrip()
        opener_line = opener[opener.rfind("\n") + 1:]
        return (_strip_py_comment(opener_line).rstrip().endswith(":")
                and indent_width(leading_ws(opener_line), unit) < width)
    return False


def _ensure_tree(text: str, language_id: str, tree: SyntaxTree | None) -> SyntaxTree:
    if tree is not None and tree.text == text:
        return tree
    return SyntaxTree(language_id, text)


def _snap(text: str, pos: int) -> int:
    """Clamp into the text and never split a '\\r\\n' pair."""
    pos = max(0, min(pos, len(text)))
    if 0 < pos < len(text) and text[pos - 1] == "\r" and text[pos] == "\n":
        pos -= 1
    return pos


# -- planners ------------------------------------------------------------------------------------
def plan_span(text: str, language_id: str, start: int, end: int | None = None, tree: SyntaxTree | None = None,
              expand_to_node: bool = False, max_budget: int = 48) -> SpanPlan:
    """Plan the span for a cursor (``end`` None or == ``start``) or a selection."""
    start = _snap(text, start)
    end = start if end is None else _snap(text, end)
    start, end = min(start, end), max(start, end)
    syntax = _ensure_tree(text, language_id, tree)
    name = ts_language_name(language_id)
    unit = detect_indent_unit(text, default_indent_unit(language_id))
    plan = _plan_cursor(text, start, end, name, syntax, unit, expand_to_node, max_budget)
    plan.indent_unit = unit
    return plan


def _plan_cursor(text: str, start: int, end: int, name: str | None, syntax: SyntaxTree, unit: str,
                 expand_to_node: bool, max_budget: int) -> SpanPlan:
    if end > start:
        return _plan_selection(text, start, end, syntax, unit, expand_to_node, max_budget)

    line_start, line_end = line_bounds(text, start)
    before, after = text[line_start:start], text[start:line_end]
    opener = _empty_body(text, start, start, name, syntax)
    if opener is not None:
        indent = render_indent(indent_width(leading_ws(opener), unit) + indent_width(unit, unit), unit)
        if not before.strip() and indent_width(before, unit) > indent_width(leading_ws(opener), unit):
            indent = before  # the editor already indented the body: respect it
        return SpanPlan(start, start, max(1, max_budget), False, "block", indent)
    if before.rstrip().endswith(('"""', "'''")) and not after.strip() and name in _COLON_BLOCKS:
        width = indent_width(leading_ws(before), unit)
        nxt = next_line(text, start)
        if (nxt is None or indent_width(leading_ws(nxt), unit) < width) \
                and _docstring_only_body(text, start, width, unit):
            # at the end of a docstring that is all the body has: the body goes on the next lines
            return SpanPlan(start, start, max(1, max_budget), False, "block", leading_ws(before))
    if before.strip() or after.strip():
        line = text[line_start:line_end]
        return SpanPlan(start, start, _line_budget(line, max_budget), True, "line", "")

    # a blank line: a statement or a few lines
    prev, nxt = prev_line(text, line_start), next_line(text, start)
    line_ws = text[line_start:line_end]
    prev_ws = leading_ws(prev) if prev is not None else ""
    next_ws = leading_ws(nxt) if nxt is not None else ""
    if line_ws:
        indent = line_ws
    elif nxt is not None and indent_width(next_ws, unit) > indent_width(prev_ws, unit):
        indent = next_ws
    else:
        indent = prev_ws
    at_block_end = (
        nxt is None or bool(_CLOSER_LINE.match(nxt))
        or indent_width(next_ws, unit) < indent_width(indent, unit)
    )
    if at_block_end and name in _COLON_BLOCKS and _docstring_only_body(text, line_start, indent_width(indent, unit), unit):
        return SpanPlan(start, start, max(1, max_budget), False, "block", indent)  # the whole body is asked for
    if not at_block_end:  # between two lines of one block: one line (a statement or a header)
        return SpanPlan(start, start, _line_budget(indent, max_budget), True, "statement", indent)
    return SpanPlan(start, start, _clamp_budget(32, max_budget), False, "statement", indent)


def _selection_budget(selected: str, max_budget: int) -> int:
    """Room for a rewrite of similar size: the selection's tokens plus a quarter, plus 4."""
    compact = " ".join(selected.split())
    return _clamp_budget(len(compact) / CHARS_PER_TOKEN * 1.25 + 4, max_budget)


def _on_node_boundaries(syntax: SyntaxTree, node, s: int, e: int) -> bool:  # noqa: ANN001
    if syntax.node_range(node) == (s, e):
        return True
    starts = {syntax.node_range(c)[0] for c in node.children}
    ends = {syntax.node_range(c)[1] for c in node.children}
    return s in starts and e in ends


def _plan_selection(text: str, start: int, end: int, syntax: SyntaxTree, unit: str,
                    expand_to_node: bool, max_budget: int) -> SpanPlan:
    kind = "selection"
    if expand_to_node and syntax.tree is not None:
        selected = text[start:end]
        s = start + (len(selected) - len(selected.lstrip()))
        e = end - (len(selected) - len(selected.rstrip()))
        node = syntax.node_for_range(s, e) if e > s else None
        if node is not None and node.parent is not None and not _on_node_boundaries(syntax, node, s, e):
            start, end = syntax.node_range(node)
            kind = "node"
    line_start, line_end = line_bounds(text, start)
    selected = text[start:end]
    single_line = "\n" not in selected
    before = text[line_start:start]
    if before.strip() and single_line:
        indent = ""
    elif before.strip():
        indent = leading_ws(text[line_start:line_end])
    else:
        indent = leading_ws(text[line_start:line_end]) if before == "" else before
    return SpanPlan(start, end, _selection_budget(selected, max_budget), single_line, kind, indent)


_COMMENT_DELIMS = re.compile(r"^\s*(#+|//+|/\*+|--+|;+|%+|<!--|\(\*|\*+)\s*")


def _comment_body(comment: str) -> str:
    return _COMMENT_DELIMS.sub("", comment, count=1).strip()


def _is_word_at(text: str, pos: int, marker: str) -> bool:
    """The marker is not glued to identifier characters (``TODO_LIST`` is not a hole)."""
    if not marker[0].isalnum():
        return True
    left = text[pos - 1] if pos > 0 else " "
    right = text[pos + len(marker)] if pos + len(marker) < len(text) else " "
    return not (left.isalnum() or left == "_" or right.isalnum() or right == "_")


def _find_hole(text: str, pos: int, marker: str, syntax: SyntaxTree) -> tuple[int, int] | None:
    """The range a marker occurrence stands for, or None when it is code (spread, vararg, string)."""
    if not _is_word_at(text, pos, marker):
        return None
    line_start, line_end = line_bounds(text, pos)
    line = text[line_start:line_end]
    own_line = line.strip() == marker
    if syntax.tree is None:
        stripped = line.lstrip()
        body = _comment_body(stripped)
        if stripped != body and body.startswith(marker):  # a comment led by the marker
            return line_start + len(line) - len(stripped), line_end
        return (pos, pos + len(marker)) if own_line or (marker == "..." and line.count(marker) == 1) else None
    node = syntax.node_for_range(pos, pos + len(marker))
    token = syntax.node_for_range(pos, pos + len(marker), named=False)
    if node is None:
        return None
    kinds = {node.type, token.type if token is not None else "",
             token.parent.type if token is not None and token.parent is not None else ""}
    if any("comment" in k for k in kinds):
        comment = node if "comment" in node.type else token
        if "comment" not in comment.type and comment.parent is not None:
            comment = comment.parent
        c_start, c_end = syntax.node_range(comment)
        if _comment_body(text[c_start:c_end]).startswith(marker):
            return c_start, c_end
        return None
    if any("string" in k for k in kinds):
        return None
    if marker == "..." and ("ERROR" in kinds or "ellipsis" in kinds or own_line):
        return pos, pos + len(marker)
    return (pos, pos + len(marker)) if own_line else None


def plan_holes(text: str, language_id: str, start: int, end: int, markers: tuple[str, ...] = ("...", "TODO"),
               tree: SyntaxTree | None = None, max_budget: int = 48) -> list[SpanPlan]:
    """Spans for placeholder holes in [start, end): marker comments, ``...`` bodies, bare markers.

    A comment led by a marker (``# TODO: parse``, ``// ...``) is replaced whole, so that running
    the command again does not fill the same hole twice.  Offsets refer to ``text``: apply the
    resulting edits last-to-first.
    """
    start, end = _snap(text, start), _snap(text, end)
    syntax = _ensure_tree(text, language_id, tree)
    name = ts_language_name(language_id)
    unit = detect_indent_unit(text, default_indent_unit(language_id))
    found: list[tuple[int, int]] = []
    for marker in markers:
        if not marker:
            continue
        pos = text.find(marker, start)
        while 0 <= pos and pos + len(marker) <= end:
            hole = _find_hole(text, pos, marker, syntax)
            if hole is not None:
                found.append(hole)
            pos = text.find(marker, pos + len(marker))
    plans: list[SpanPlan] = []
    for hs, he in sorted(set(found)):
        if plans and hs < plans[-1].end:
            continue  # overlapping markers (a '...' inside a TODO comment): one hole
        plans.append(_hole_plan(text, hs, he, name, syntax, unit, max_budget))
        plans[-1].indent_unit = unit
    return plans


def _hole_plan(text: str, hs: int, he: int, name: str | None, syntax: SyntaxTree, unit: str,
               max_budget: int) -> SpanPlan:
    line_start, line_end = line_bounds(text, hs)
    line_ws = leading_ws(text[line_start:line_end])
    own_line = not text[line_start:hs].strip() and not text[he:line_bounds(text, he)[1]].strip()
    baseline = text[:hs] + text[he:]
    opener = _empty_body(baseline, hs, hs, name, None)
    if own_line:
        budget = max_budget if opener is not None else _clamp_budget(32, max_budget)
        return SpanPlan(hs, he, budget, False, "hole", line_ws)
    if opener is not None:  # `def f(): ...` or `{ ... }` on one line: a whole body
        while hs > line_start and text[hs - 1] in " \t":
            hs -= 1
        while he < len(text) and text[he] in " \t":
            he += 1
        indent = render_indent(indent_width(leading_ws(opener), unit) + indent_width(unit, unit), unit)
        return SpanPlan(hs, he, max(1, max_budget), False, "hole", indent)
    return SpanPlan(hs, he, _line_budget(text[line_start:line_end], max_budget), True, "hole", "")
