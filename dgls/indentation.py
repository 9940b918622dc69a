"""Indentation and line helpers that span planning and post-processing share.

A document's indentation step (tab or N spaces), widths in columns, and the lines around a
position: one module, so the planner and the post-processor measure indentation the same way.
"""

from __future__ import annotations

from collections import Counter

from dgls.languages import ts_language_name

_DEFAULT_UNITS = {
    "go": "\t", "make": "\t", "javascript": "  ", "typescript": "  ", "tsx": "  ", "json": "  ",
    "lua": "  ", "ruby": "  ", "elixir": "  ", "yaml": "  ", "html": "  ", "css": "  ", "nix": "  ",
}


def default_indent_unit(language_id: str | None) -> str:
    """The usual indentation step of a language (gofmt tabs, two spaces for JS/Lua/Ruby, else 4)."""
    return _DEFAULT_UNITS.get(ts_language_name(language_id) or "", "    ")


def detect_indent_unit(text: str, default: str = "    ") -> str:
    """The document's indentation step: '\\t' or N spaces, from its own lines (else ``default``)."""
    tabs = spaces = 0
    steps: Counter[int] = Counter()
    previous = 0
    for line in text.splitlines()[:5000]:
        if not line.strip():
            continue
        ws = leading_ws(line)
        if ws.startswith("\t"):
            tabs += 1
            continue
        spaces += bool(ws)
        if len(ws) - previous in (2, 3, 4, 8):
            steps[len(ws) - previous] += 1
        previous = len(ws)
    if tabs > spaces:
        return "\t"
    if steps:
        return " " * steps.most_common(1)[0][0]
    return default if spaces == 0 or default != "\t" else "    "


def indent_width(ws: str, unit: str) -> int:
    """Columns of a whitespace prefix, counting a tab as one indentation unit of the document."""
    tab = 4 if unit == "\t" else len(unit)
    return len(ws.expandtabs(tab))


def render_indent(width: int, unit: str) -> str:
    """Whitespace of ``width`` columns in the document's style (tabs, then spaces for the rest)."""
    width = max(0, width)
    if unit == "\t":
        return "\t" * (width // 4) + " " * (width % 4)
    return " " * width


def leading_ws(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def line_bounds(text: str, pos: int) -> tuple[int, int]:
    """[start, end) of the line holding ``pos``; end excludes the '\\r\\n' / '\\n'."""
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    end = len(text) if end < 0 else end
    if end > start and text[end - 1] == "\r":
        end -= 1
    return start, end


def prev_line(text: str, pos: int) -> str | None:
    """The nearest non-blank line ending before ``pos`` (None at the top)."""
    lines = text[:pos].split("\n")
    for line in reversed(lines[:-1]):
        if line.strip():
            return line.rstrip("\r")
    return None


def next_line(text: str, pos: int) -> str | None:
    """The nearest non-blank line starting after ``pos``'s line (None at the bottom)."""
    nl = text.find("\n", pos)
    if nl < 0:
        return None
    for line in text[nl + 1:].split("\n"):
        if line.strip():
            return line.rstrip("\r")
    return None
