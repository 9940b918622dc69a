"""Post-processing of raw engine infills: fit them to the document, then pick one that parses.

:func:`clean_infill` makes a raw infill sit well in the document: it stops where the text would
repeat what already follows the cursor or (for a block body) where it dedents out of the block,
matches the document's indentation (tabs or spaces, step width, the span's base column), trims
trailing whitespace, keeps single-line spans on one line and writes CRLF into CRLF documents.

:func:`choose_infill` checks cleaned candidates with tree-sitter and never proposes one that
breaks the parse when one that does not was available.  Rule (for the server's docs):

- ``allowed`` = min(errors of the document as it is, errors of the document with the span
  removed).  A candidate is valid when the document with it has at most ``allowed`` ERROR and
  MISSING nodes, i.e. it is no worse than leaving the span as it was or empty.
- The best candidate valid -> ``clean``.  Otherwise ``repair(cleaned, bad_ranges)`` is asked
  once (for the best candidate; ranges are offsets into the *cleaned* text, which is what the
  engine should re-tokenize and re-mask) and a valid result -> ``repaired``.  Otherwise the next
  valid candidate -> ``next_best``.
- Python: where the document parses in CPython with the span as it is, empty, or holding a
  ``pass`` or an ``if True:``, a candidate must parse there too (``dgls.python_check``:
  tree-sitter accepts code the interpreter rejects).  This holds on every path, partial lines
  included.
- Partial parses: a single-line span in the middle of code may be unable to parse on its own
  (the user is half-way through an expression).  If nothing is valid, the best-ranked candidate
  that adds at most one error, and only on the span's own line (the rest of the document parses
  exactly as well as before), is accepted with ``partial=True``.  Not on a blank line (a
  ``statement``): nobody is half-way through anything there, and a line that cannot parse is
  noise.  Anything else -> ``dropped`` (text "").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dgls.indentation import detect_indent_unit, indent_width, leading_ws, render_indent
from dgls.python_check import candidate_check
from dgls.spans import SpanPlan
from dgls.syntax import SyntaxTree

_OPEN, _CLOSE = "([{", ")]}"


# -- text helpers --------------------------------------------------------------------------------
def _uses_crlf(text: str) -> bool:
    lf = text.count("\n")
    return lf > 0 and text.count("\r\n") * 2 >= lf


def bracket_balance(code: str) -> int:
    """Opening minus closing brackets outside simple string literals."""
    depth, quote, escaped = 0, "", False
    for ch in code:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote or ch == "\n":
                quote = ""
        elif ch in "'\"`":
            quote = ch
        elif ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
    return depth


def _cut_rest_overlap(body: str, rest: str) -> str:
    """Drop the infill's tail where it repeats the start of the rest of the cursor's line."""
    r = rest.strip()
    b = body.rstrip()
    if not r or not b:
        return body
    balance = abs(bracket_balance(b))
    if len(r) >= 2 and "\n" not in b and r in b:  # repeated the rest, then kept going
        head = b[: b.find(r)]
        if head.strip() and abs(bracket_balance(head)) <= balance:
            return head
    for k in range(len(r), 0, -1):
        piece = r[:k]
        if not b.endswith(piece):
            continue
        head = b[:-k]
        whole_tokens = k == len(r) or (k >= 3 and not (r[k].isalnum() or r[k] == "_"))
        punctuation = all(not (c.isalnum() or c == "_") for c in piece)
        if (whole_tokens or punctuation) and abs(bracket_balance(head)) <= balance:
            return head
    return body


def _reindent(lines: list[str], plan: SpanPlan, line_before: str, unit: str) -> list[str]:
    """Re-base the infill's indentation on ``plan.indent`` in the document's style and step."""
    anchored = not line_before.strip()
    tab = indent_width(unit, unit) if unit != "\t" else 4
    widths: dict[int, int] = {}
    for i, line in enumerate(lines):
        if not line.strip() or (i == 0 and not anchored):
            continue
        lead = len(leading_ws(line).expandtabs(tab))
        widths[i] = max(len(line_before.expandtabs(tab)), lead) if i == 0 and line_before else lead
    if not widths:
        return [line.strip() if i else line.rstrip() for i, line in enumerate(lines)]
    distinct = sorted(set(widths.values()))
    steps = [b - a for a, b in zip(distinct, distinct[1:], strict=False)]
    model_step = min(steps) if steps else 0
    doc_step = indent_width(unit, unit)
    scale = doc_step / model_step if model_step in (2, 4, 8) and model_step != doc_step else 1.0
    first = min(widths)
    base = widths[first]
    rebase = anchored or plan.kind in ("block", "statement", "hole")
    target = indent_width(plan.indent, unit) if rebase else base  # mid-line: keep the model's columns
    out = []
    for i, line in enumerate(lines):
        if i not in widths:
            out.append(line.rstrip() if i == 0 else "")
            continue
        width = max(0, target + round((widths[i] - base) * scale))
        ws = render_indent(width, unit)
        if i == 0:
            ws = ws[len(line_before):] if ws.startswith(line_before) else ""
        out.append(ws + line.strip())
    return out


_CLOSER_CHARS = frozenset("}]);,") | frozenset("endfiosac")  # `}`, `end`, `fi`, `done`, `esac`


def _is_trivial(line: str) -> bool:
    s = line.strip()
    return len(s) <= 3 or set(s) <= _CLOSER_CHARS


def _cut_repeated_lines(lines: list[str], following: list[str], line_before: str) -> list[str]:
    """Stop before the first infill line that starts repeating the lines after the span."""
    nxt = [line for line in following if line.strip()]
    if not nxt:
        return lines
    for j, line in enumerate(lines):
        full = line_before + line if j == 0 else line
        if not line.strip() or full.strip() != nxt[0].strip():
            continue
        if not _is_trivial(nxt[0]):
            return lines[:j]
        if all(c in _CLOSE + ";," for c in full.strip()):
            if bracket_balance("\n".join(lines[: j + 1])) < 0:
                return lines[:j]  # closes a bracket the infill never opened: the suffix's
            continue
        later = [x for x in lines[j + 1:] if x.strip()]
        confirmed = not later or (len(nxt) > 1 and later[0].strip() == nxt[1].strip())
        if full.rstrip() == nxt[0].rstrip() and confirmed:
            return lines[:j]
    return lines


def _cut_dedent(lines: list[str], floor: int, unit: str) -> list[str]:
    """A block's body ends where a line dedents below it: stop there, because the model ran on
    into code after the block (the next function, an outer closer the suffix already has).
    Lines inside an open bracket or triple-quoted string may sit at any column and are kept."""
    for j in range(1, len(lines)):
        line = lines[j]
        if not line.strip() or indent_width(leading_ws(line), unit) >= floor:
            continue
        before = "\n".join(lines[:j])
        if bracket_balance(before) > 0 or before.count('"""') % 2 or before.count("'''") % 2:
            continue
        return lines[:j]
    return lines


# -- clean_infill --------------------------------------------------------------------------------
def clean_infill(infill: str, plan: SpanPlan, text: str) -> str:
    """Fit a raw infill to the document around ``plan`` (see the module docstring)."""
    crlf = _uses_crlf(text)
    prefix = text[: plan.start]
    suffix = text[plan.end:].replace("\r\n", "\n")
    line_before = prefix[prefix.rfind("\n") + 1:].rstrip("\r")
    rest, _, after_rest = suffix.partition("\n")
    body = infill.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    unit = plan.indent_unit or detect_indent_unit(text, "\t" if plan.indent.startswith("\t") else "    ")
    blockish = plan.kind in ("block", "hole") and not plan.single_line

    if plan.single_line:
        body = body.split("\n", 1)[0]
    body = _cut_rest_overlap(body, rest)
    tail = body[len(body.rstrip()):]
    lines = body.split("\n")
    if blockish and line_before.strip() and lines[0].strip():
        lines.insert(0, "")  # a body never shares the opener's line
    lines = _reindent(lines, plan, line_before, unit)
    lines = _cut_repeated_lines(lines, after_rest.split("\n") if not rest.strip() else [], line_before)
    if plan.kind in ("block", "hole", "statement") and not plan.single_line:
        lines = _cut_dedent(lines, indent_width(plan.indent, unit), unit)
    body = "\n".join(lines)

    if rest[:1] and not rest[0].isspace() and "\n" not in tail and body.strip():
        body = body.rstrip() + tail  # keep spaces that separate the infill from code after it
    else:
        body = body.rstrip()
    if body.strip() and blockish and rest.strip() and "\n" in body:
        outer = render_indent(indent_width(plan.indent, unit) - indent_width(unit, unit), unit)
        body += "\n" + outer  # the closer after the cursor goes on its own line
    if body.strip() and text[plan.start:plan.end].endswith("\n") and not body.endswith("\n"):
        body += "\n"  # a whole-line selection stays whole lines
    if not body.strip():
        return ""
    return body.replace("\n", "\r\n") if crlf else body


# -- choose_infill -------------------------------------------------------------------------------
@dataclass
class Choice:
    """The infill to propose and how it was found."""

    text: str
    path: str  # "clean" | "repaired" | "next_best" | "dropped"
    errors: int = 0
    partial: bool = False


def _bad_ranges(checked: SyntaxTree, start: int, length: int) -> list[tuple[int, int]]:
    """Error ranges touching the infill, as offsets into the infill (the whole infill if none)."""
    ranges = []
    for a, b in checked.error_ranges():
        if a <= start + length and b >= start:
            lo, hi = max(0, a - start), min(length, b - start)
            if hi <= lo:
                lo, hi = max(0, min(lo, length) - 1), max(1, min(lo, length))
            ranges.append((lo, min(hi, length)))
    return sorted(set(ranges)) or [(0, length)]


def _outside_line(checked: SyntaxTree, lo: int, hi: int) -> int:
    """Errors not contained in the span's line [lo, hi]: damage a one-line fill must not do."""
    return sum(1 for a, b in checked.error_ranges() if a < lo or b > hi)


def choose_infill(candidates: list[str], plan: SpanPlan, text: str, language_id: str,
                  repair: Callable[[str, list[tuple[int, int]]], list[str]] | None = None,) -> Choice:
    """Pick the best candidate that does not break the parse (rules in the module docstring)."""
    base = SyntaxTree(language_id, text)
    cleaned = [clean_infill(c, plan, text) for c in candidates]
    if base.tree is None:  # no grammar: nothing to check against
        for i, c in enumerate(cleaned):
            if c.strip():
                return (Choice(c, "clean" if i == 0 else "next_best"))
        return (Choice("", "dropped"))

    allowed = min(base.error_count(), base.with_edit(plan.start, plan.end, "").error_count())
    line_lo = text.rfind("\n", 0, plan.start) + 1
    whole = plan.kind in ("block", "statement") and not text[line_lo:plan.start].strip()
    strict = candidate_check(language_id, text, plan.start, plan.end,
                             tuple(clean_infill(stub, plan, text) for stub in ("pass", "if True:")) if whole else ())
    line_hi = text.find("\n", plan.end)
    line_hi = len(text) if line_hi < 0 else line_hi
    outside_before = _outside_line(base, line_lo, line_hi)
    partial: Choice | None = None

    def consider(candidate: str, path: str) -> tuple[Choice | None, SyntaxTree]:
        nonlocal partial
        checked = base.with_edit(plan.start, plan.end, candidate)
        errors = checked.error_count()
        if strict is not None and not strict(candidate):
            return None, checked  # Python itself rejects it: no test could ever run on it
        if errors <= allowed:
            return Choice(candidate, path, errors), checked
        end_shift = len(candidate) - (plan.end - plan.start)
        if (partial is None and plan.single_line and plan.kind != "statement" and errors <= allowed + 1
                and _outside_line(checked, line_lo, line_hi + end_shift) <= outside_before):
            partial = Choice(candidate, path, errors, partial=True)
        return None, checked

    for i, candidate in enumerate(cleaned):
        if not candidate.strip():
            continue
        choice, checked = consider(candidate, "clean" if i == 0 else "next_best")
        if choice is not None:
            return (choice)
        if i == 0 and repair is not None:
            try:
                repaired = repair(candidate, _bad_ranges(checked, plan.start, len(candidate)))
            except Exception:  # a failing repair must not lose the other candidates
                repaired = []
            for raw in repaired or []:
                fixed = clean_infill(raw, plan, text)
                if fixed.strip():
                    choice, _ = consider(fixed, "repaired")
                    if choice is not None:
                        return (choice)
    if partial is not None:
        return (partial)
    return (Choice("", "dropped"))
