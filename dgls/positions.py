"""LSP positions <-> Python string offsets, in UTF-16 (LSP's default), UTF-8 or UTF-32 code units."""

from __future__ import annotations

ENCODINGS = ("utf-16", "utf-8", "utf-32")


def _units(ch: str, encoding: str) -> int:
    if encoding == "utf-32":
        return 1
    code = ord(ch)
    if encoding == "utf-16":
        return 2 if code > 0xFFFF else 1
    return 1 if code < 0x80 else 2 if code < 0x800 else 3 if code < 0x10000 else 4


def line_starts(text: str) -> list[int]:
    """Offsets where each line starts (\\n, \\r\\n and lone \\r end a line, as LSP says)."""
    starts = [0]
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\r" and i + 1 < n and text[i + 1] == "\n":
            i += 1
        if ch in "\r\n":
            starts.append(i + 1)
        i += 1
    return starts


def position_to_offset(text: str, line: int, character: int, encoding: str = "utf-16",
                       starts: list[int] | None = None) -> int:
    """Offset of an LSP position; raises ValueError for a line or column outside the text."""
    starts = starts if starts is not None else line_starts(text)
    if line < 0 or character < 0:
        raise ValueError(f"position {line}:{character} is negative")
    if line >= len(starts):
        raise ValueError(f"line {line} is outside the document ({len(starts)} lines)")
    offset = starts[line]
    end = starts[line + 1] if line + 1 < len(starts) else len(text)
    while end > offset and text[end - 1] in "\r\n":
        end -= 1
    units = 0
    while units < character:
        if offset >= end:
            raise ValueError(f"column {character} is past the end of line {line} ({units} {encoding} units)")
        units += _units(text[offset], encoding)
        offset += 1
    if units != character:
        raise ValueError(f"column {character} on line {line} splits a character")
    return offset


def offset_to_position(text: str, offset: int, encoding: str = "utf-16",
                       starts: list[int] | None = None) -> tuple[int, int]:
    """(line, character) of a string offset."""
    import bisect

    starts = starts if starts is not None else line_starts(text)
    offset = max(0, min(offset, len(text)))
    line = bisect.bisect_right(starts, offset) - 1
    character = sum(_units(ch, encoding) for ch in text[starts[line]:offset])
    return line, character
