"""Python infills are held to CPython's parser where the document parses (dgls.python_check)."""

from __future__ import annotations

from dgls.postprocess import choose_infill
from dgls.python_check import candidate_check, parses
from dgls.spans import plan_span
from dgls.syntax import SyntaxTree

LOOP = "def mean(values):\n    total = 0\n    for value in values:\n        |\n    return total / len(values)\n"


def plan(marked: str):
    text = marked.replace("|", "", 1)
    return text, plan_span(text, "python", marked.index("|"))


def test_tree_sitter_accepts_what_python_rejects():
    """Why the second check exists: each of these passes tree-sitter and fails CPython."""
    text, p = plan(LOOP)
    base = SyntaxTree("python", text)
    for soup in ("total +=total +=total +totaltotal", "total += value\n            x = 1", "a += b += c"):
        filled = text[:p.start] + soup + text[p.end:]
        assert base.with_edit(p.start, p.end, soup).error_count() == 0 and not parses(filled)


def test_an_empty_body_sets_the_bar_through_a_pass():
    """The loop's body is missing, so the document does not parse as it is; with a `pass` it does,
    so soup is dropped and a real body kept."""
    text, p = plan(LOOP)
    assert not parses(text) and p.kind == "block"
    assert choose_infill(["total +=total +=total +totaltotal"], p, text, "python").path == "dropped"
    assert choose_infill(["total += value"], p, text, "python").text == "total += value"


def test_a_line_indented_under_nothing_is_dropped():
    text, p = plan("def f(x):\n    y = x\n    |\n    return y\n")
    assert choose_infill(["y = 2\n        z = 3"], p, text, "python").text == "y = 2"  # one line asked
    assert choose_infill(["a += b += c"], p, text, "python").path == "dropped"
    assert choose_infill(["for v in y:"], p, text, "python").path == "dropped"  # a header needs a body below


def test_nothing_to_hold_to_leaves_tree_sitter_alone():
    """Not Python, a document broken elsewhere, or newer syntax than this interpreter knows: no
    second check (None), so answers are not dropped for what the user wrote."""
    broken = "def f(x):\n    y = (\n    |\n"
    assert candidate_check("python", broken, broken.index("    |") + 4, broken.index("    |") + 4) is None
    assert candidate_check("javascript", "let a = 1;\n", 0, 0) is None
    assert candidate_check("python", "x = 1\n" * 40_000, 0, 0) is None  # too large to parse per candidate
    check = candidate_check("python", "x = 1\n\ny = 2\n", 6, 6)
    assert check is not None and check("z = 3") and not check("z = = 3")
    assert not parses("a\x00b") and parses("'\\d'")  # null bytes: a clean no; warnings: not errors


def test_a_missing_header_sets_the_bar_through_an_if():
    """The blanked line held a block's header: the lines under it are now indented under nothing,
    so only a header can make the file parse again."""
    text, p = plan("def f(xs):\n    total = 0\n    |\n        total += x\n    return total\n")
    assert not parses(text) and p.kind == "statement"
    assert choose_infill(["for x in xs:"], p, text, "python").text == "for x in xs:"
    assert choose_infill(["total = 1"], p, text, "python").path == "dropped"
