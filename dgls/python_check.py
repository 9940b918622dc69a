"""Python's own parser as a second syntax check for Python infills.

tree-sitter's grammar is tolerant where the interpreter is not: it accepts `total += total += x`,
a line indented under the line before. On the held-out sets, 8 of 19 single-line answers that
passed the tree-sitter check did not parse in Python, so no test could ever run on them.

Where the document parses with the span left as it is, left empty, or holding a `pass` or an
`if True:` (the line was a block's header), a candidate must parse too; where it does not (the
user is mid-edit, newer syntax than this interpreter's, Python 2), there is nothing to hold
candidates to and tree-sitter's check stands alone.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Callable

MAX_CHARS = 200_000  # ~0.3 ms per KB: a parse per candidate stays under ~60 ms


def parses(source: str) -> bool:
    """True when CPython's parser accepts `source` (no compilation: `return` outside a function
    is a compiler error, not a syntax one)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences and the like
            ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def candidate_check(language_id: str, text: str, start: int, end: int,
                    placeholders: tuple[str, ...] = ()) -> Callable[[str], bool] | None:
    """A check for candidates replacing text[start:end], or None when there is nothing to hold
    them to. `placeholders`: statements that fit the span (a cleaned `pass`, `if True:`) where it
    is whole lines, so a document that only lacks a body or a block's header still sets the bar."""
    if language_id != "python" or len(text) > MAX_CHARS:
        return None
    references = (text, *(text[:start] + filler + text[end:] for filler in ("", *placeholders)))
    if not any(parses(ref) for ref in references):  # lazily: usually the first one parses
        return None
    return lambda candidate: parses(text[:start] + candidate + text[end:])
