"""Which part of a long prefix the engine encodes: whole lines from the right, cut on a grid.

Cut points are snapped to a grid of characters (then to the next line start), so a small edit
leaves the cut where it was and the document's prefix cache stays valid; the window kept is
between half and all of the room. Huge prefixes are pre-trimmed the same way before
tokenizing (first to the last PREFIX_CHARS on a PREFIX_GRID, then to what the room can use), so
a 50,000-line file costs no more than a short one. The engine alone windows the prefix.
"""

from __future__ import annotations

import math

PREFIX_CHARS = 48_000  # prefixes longer than this are first cut to about this many chars,
PREFIX_GRID = 8_192  # at a point that moves in steps of this, so a document's cache stays valid
PRETRIM_CHARS_PER_TOKEN = 12  # prefixes longer than this many chars per token of room are pre-trimmed


def fit_prefix(tokenizer, prefix: str, room: int) -> tuple[list[int], int]:
    """The ids of the longest grid-cut tail of `prefix` within `room` tokens, and the lines cut."""
    base = coarse_start(prefix)
    ids, cut_lines = _fit_window(tokenizer, prefix[base:], room)
    return ids, cut_lines + prefix.count("\n", 0, base)


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def _fit_window(tokenizer, prefix: str, room: int) -> tuple[list[int], int]:
    start = 0
    if len(prefix) > room * PRETRIM_CHARS_PER_TOKEN:
        coarse = room * PRETRIM_CHARS_PER_TOKEN
        start = line_start_at(prefix, (len(prefix) - coarse) // coarse * coarse)
    ids = _encode(tokenizer, prefix[start:])
    if len(ids) > room:  # a power-of-two grid worth at most half the room, so it rarely changes
        chars_per_token = (len(prefix) - start) / len(ids)
        grid = 1 << max(4, int(math.log2(max(1.0, room * chars_per_token / 2))))
    while len(ids) > room:
        enc = tokenizer(prefix[start:], add_special_tokens=False, return_offsets_mapping=True)
        must_drop = start + enc["offset_mapping"][len(ids) - room][0]
        cut = line_start_at(prefix, -(-must_drop // grid) * grid)
        start = cut if cut > start else line_start_at(prefix, must_drop)
        ids = _encode(tokenizer, prefix[start:])
    return ids, prefix.count("\n", 0, start)


def line_start_at(text: str, at: int) -> int:
    """The first line start at or after `at` (the end of the text if there is none)."""
    if at <= 0:
        return 0
    if at >= len(text):
        return len(text)
    if text[at - 1] == "\n":
        return at
    newline = text.find("\n", at)
    return newline + 1 if newline != -1 else len(text)


def coarse_start(prefix: str) -> int:
    """The first pre-trim of a huge prefix: a line start on a coarse grid, PREFIX_CHARS from the end."""
    if len(prefix) <= PREFIX_CHARS:
        return 0
    cut = (len(prefix) - PREFIX_CHARS) // PREFIX_GRID * PREFIX_GRID
    newline = prefix.find("\n", cut)
    return cut if newline == -1 else newline + 1
