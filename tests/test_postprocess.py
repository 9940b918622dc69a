"""clean_infill and choose_infill: suffix dedupe, indentation, CRLF, syntax-checked choice."""

from __future__ import annotations

import pytest

from dgls.postprocess import Choice, choose_infill, clean_infill
from dgls.spans import SpanPlan, plan_holes, plan_span
from dgls.syntax import parse_error_count


def fill(language_id: str, marked: str, infill: str) -> tuple[str, str]:
    """(cleaned infill, resulting document) for a cursor '|' or selection '«»'."""
    if "«" in marked:
        s = marked.index("«")
        text = marked.replace("«", "", 1)
        e = text.index("»")
        text = text.replace("»", "", 1)
        plan = plan_span(text, language_id, s, e)
    else:
        text = marked.replace("|", "", 1)
        plan = plan_span(text, language_id, marked.index("|"))
    out = clean_infill(infill, plan, text)
    return out, text[: plan.start] + out + text[plan.end:]


# -- duplicate suffix ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("language_id", "marked", "infill", "expected"),
    [
        ("python", "x = foo(|)\n", "a, b)", "a, b"),
        ("python", "x = foo(|)\n", "g(a)", "g(a)"),  # the `)` closes its own `(`: kept
        ("python", "x = foo(|)\n", "g(a))", "g(a)"),
        ("python", "if x == |:\n    pass\n", "1:", "1"),
        ("python", "def area(|):\n    pass\n", "w, h):\n    return w * h", "w, h"),
        ("javascript", "const n = items.filter(|).length;\n", "isOk).length;", "isOk"),
        ("c", "int main(void) {\n    printf(|);\n}\n", "\"hi\\n\");", "\"hi\\n\""),
        ("rust", "fn f() {\n    let v = vec![|];\n}\n", "1, 2, 3];", "1, 2, 3"),
        ("python", "y = |x + 1\n", "2 * x + 1", "2 * "),  # the whole rest of the line repeated
        ("python", "return |x\n", "not ", "not "),  # the space before following code stays
    ],
)
def test_mid_line_never_repeats_the_rest_of_the_line(language_id: str, marked: str, infill: str,
                                                     expected: str) -> None:
    out, _ = fill(language_id, marked, infill)
    assert out == expected


def test_statement_stops_where_following_lines_repeat() -> None:
    marked = "def f(x):\n    y = x * 2\n|\n    return y\n"
    out, doc = fill("python", marked, "    y += 1\n    return y\n")
    assert out == "    y += 1"
    assert doc.count("return y") == 1


def test_infill_that_is_only_the_next_line_becomes_empty() -> None:
    out, _ = fill("javascript", "function f() {\n  a();\n  |\n  b();\n}\n", "b();")
    assert out == ""


def test_closing_brace_of_the_suffix_is_dropped_but_inner_blocks_stay() -> None:
    marked = "function f(x) {\n|\n}\n"
    out, doc = fill("javascript", marked, "return x;\n}\n")
    assert out == "  return x;" and doc == "function f(x) {\n  return x;\n}\n"
    out, doc = fill("javascript", marked, "if (x) {\n  g();\n}\n")
    assert doc == "function f(x) {\n  if (x) {\n    g();\n  }\n}\n"
    assert parse_error_count("javascript", doc) == 0


def test_block_between_braces_on_one_line_gets_its_own_lines() -> None:
    out, doc = fill("javascript", "function add(a, b) {|}\n", "return a + b;\n}")
    assert doc == "function add(a, b) {\n  return a + b;\n}\n"
    out, doc = fill("python", "def f():|\n", " return 1")
    assert doc == "def f():\n    return 1\n"


def test_lua_and_bash_end_keywords_are_not_duplicated() -> None:
    _, doc = fill("lua", "function f()\n|\nend\n", "  return 1\nend")
    assert doc == "function f()\n  return 1\nend\n"
    _, doc = fill("shellscript", "if true; then\n  |\nfi\n", "echo yes\nfi")
    assert doc == "if true; then\n  echo yes\nfi\n"


# -- indentation -----------------------------------------------------------------------------------
def test_tabs_document_gets_tabs() -> None:
    marked = "package main\n\nfunc f() {\n\tif ok {\n\t\tg()\n\t}\n|\n}\n"
    out, doc = fill("go", marked, "    for i := 0; i < 3; i++ {\n        h(i)\n    }")
    assert out == "\tfor i := 0; i < 3; i++ {\n\t\th(i)\n\t}"
    assert parse_error_count("go", doc) == 0


def test_two_space_document_rescales_four_space_infill() -> None:
    marked = "function f() {\n  const a = 1;\n  |\n}\n"
    out, _ = fill("javascript", marked, "if (a) {\n      g();\n  }")  # model step 4 (2 -> 6)
    assert out == "if (a) {\n    g();\n  }"


def test_four_space_document_rescales_two_space_infill() -> None:
    marked = "def f(x):\n    y = 1\n|\n"  # the end of a block: several lines are asked for
    out, _ = fill("python", marked, "for i in x:\n  print(i)\n  if i:\n    break")
    assert out == "    for i in x:\n        print(i)\n        if i:\n            break"


def test_model_indentation_is_rebased_to_the_block() -> None:
    out, _ = fill("python", "class A:\n    def f(self):\n|\n", "x = 1\nreturn x")
    assert out == "        x = 1\n        return x"
    # cursor already after the indentation: the first line adds none of its own
    out, _ = fill("python", "def f():\n    a = 1\n    |\n", "    b = 2\n    return b")
    assert out == "b = 2\n    return b"


def test_a_body_stops_where_the_model_runs_out_of_its_block() -> None:
    doc = 'def f(x):\n    """Double."""\n    |\n\n\ndef g():\n    pass\n'
    out, _ = fill("python", doc, "y = 2 * x\n    return y\n\n\ndef h():\n    return 0")
    assert out == "y = 2 * x\n    return y"
    out, _ = fill("python", "if a:\n    |\nelse:\n    pass\n", "b = 1\nelse:\n    b = 2")
    assert out == "b = 1"


def test_dedented_lines_inside_strings_and_brackets_are_kept() -> None:
    doc = "def f():\n    |\n"
    text = 'x = """\nno indent\n"""\n    return x'
    assert fill("python", doc, text)[0] == text
    call = "y = g(\n1,\n)\n    return y"
    assert fill("python", doc, call)[0] == call


def test_trailing_whitespace_and_single_line() -> None:
    out, _ = fill("python", "x = |\n", "compute(1)   \nmore()\n")
    assert out == "compute(1)"
    out, _ = fill("python", "def f():\n    a = 1   \n|\n", "b = 2   \n\n\n")
    assert out == "    b = 2"


def test_crlf_documents_keep_crlf() -> None:
    marked = "def f():\r\n    a = 1\r\n|\r\n\r\nx = 1\r\n"
    out, doc = fill("python", marked, "b = 2\nc = a + b\n")
    assert out == "    b = 2\r\n    c = a + b"
    assert "\n" not in doc.replace("\r\n", "")
    out, _ = fill("python", "x = foo(|)\r\ny = 1\r\n", "a)\r\n")
    assert out == "a"


def test_whole_line_selection_stays_whole_lines() -> None:
    out, doc = fill("python", "def f():\n«    x = 1\n»    return x\n", "    x = 2\n")
    assert out == "    x = 2\n" and doc == "def f():\n    x = 2\n    return x\n"


def test_empty_and_whitespace_infills_are_empty() -> None:
    assert fill("python", "x = |\n", "   \n\n")[0] == ""
    assert fill("python", "def f():\n|\n", "")[0] == ""


# -- choose_infill -------------------------------------------------------------------------------
def _plan(text: str, language_id: str, cursor: str) -> SpanPlan:
    i = text.index(cursor)
    return plan_span(text.replace(cursor, "", 1), language_id, i)


def test_clean_path_when_best_parses() -> None:
    text = "def f(x):\n\n"
    plan = plan_span(text, "python", 10)
    choice = choose_infill(["    return x + 1\n", "    return ("], plan, text, "python")
    assert choice == Choice("    return x + 1", "clean", 0)


def test_next_best_skips_parse_breaking_candidates() -> None:
    text = "function f(x) {\n\n}\n"
    plan = plan_span(text, "javascript", 16)
    choice = choose_infill(["return (x +;", "return x * 2;"], plan, text, "javascript")
    assert choice.path == "next_best" and choice.text == "  return x * 2;"


def test_repair_gets_offending_ranges_and_its_fix_wins() -> None:
    text = "def f(x):\n\n"
    plan = plan_span(text, "python", 10)
    seen: list[tuple[str, list[tuple[int, int]]]] = []

    def repair(candidate: str, bad: list[tuple[int, int]]) -> list[str]:
        seen.append((candidate, bad))
        return ["    return [x]"]

    choice = choose_infill(["    return [x", "    return x"], plan, text, "python", repair=repair)
    assert choice.path == "repaired" and choice.text == "    return [x]"
    (candidate, bad), = seen
    assert candidate == "    return [x"
    assert bad and all(0 <= a < b <= len(candidate) for a, b in bad)


def test_failing_repair_falls_back_to_next_candidate() -> None:
    text = "def f(x):\n\n"
    plan = plan_span(text, "python", 10)

    def repair(candidate: str, bad: list[tuple[int, int]]) -> list[str]:
        raise RuntimeError("engine went away")

    choice = choose_infill(["    return [x", "    return x"], plan, text, "python", repair=repair)
    assert choice.path == "next_best" and choice.text == "    return x"


def test_dropped_when_nothing_parses() -> None:
    text = "int main(void) {\n\n}\n"
    plan = plan_span(text, "c", 17)
    choice = choose_infill(["return (1;", "if (", "   "], plan, text, "c")
    assert choice == Choice("", "dropped")
    assert choose_infill([], plan, text, "c").path == "dropped"


def test_broken_document_only_needs_to_get_no_worse() -> None:
    text = "def f(x):\n    y = (x +\n\ndef g():\n    return 1\n"  # already broken above the span
    plan = plan_span(text, "python", text.index("def g") - 1)
    before = parse_error_count("python", text)
    assert before > 0
    choice = choose_infill(["z = 3"], plan, text, "python")
    assert choice.path == "clean"


def test_selection_rewrite_must_not_break_a_clean_document() -> None:
    text = "def f(x):\n    return x + 1\n"
    s = text.index("x + 1")
    plan = plan_span(text, "python", s, s + 5)
    choice = choose_infill(["x +", "x - 1"], plan, text, "python")
    assert choice.path == "next_best" and choice.text == "x - 1"


def test_partial_single_line_is_accepted_only_on_its_own_line() -> None:
    # the user is half-way through a call; no single-line fill can close the `[` opened earlier
    text = "values = [compute(\nprint(values)\n"
    plan = plan_span(text, "python", text.index("\n"))
    assert plan.single_line
    choice = choose_infill(["a, b"], plan, text, "python")
    assert choice == Choice("a, b", "clean", choice.errors, partial=True)
    # a fill whose damage leaves its line (an unclosed block comment) is never accepted
    text = "x = foo();\nfunction g() { return 1; }\n"
    plan = plan_span(text, "javascript", text.index(")"))
    assert choose_infill(["/* a"], plan, text, "javascript").path == "dropped"
    assert choose_infill(["/* a", "a"], plan, text, "javascript") == Choice("a", "next_best", 0)


def test_unknown_language_takes_the_first_non_empty() -> None:
    text = "alpha\n\n"
    plan = plan_span(text, "mystery", 6)
    assert choose_infill(["", "beta"], plan, text, "mystery") == Choice("beta", "next_best")


def test_multiple_holes_fill_last_to_first() -> None:
    text = (
        "def area(w, h):\n    ...\n\n"
        "def perimeter(w, h):\n    # TODO\n\n"
        "def scale(w, f): ...\n"
    )
    holes = plan_holes(text, "python", 0, len(text))
    assert len(holes) == 3
    fills = {0: "return w * h", 1: "return 2 * (w + h)\n", 2: "return w * f"}
    doc = text
    for i, hole in sorted(enumerate(holes), key=lambda p: p[1].start, reverse=True):
        choice = choose_infill([fills[i]], hole, doc, "python")
        assert choice.path == "clean", (i, choice)
        doc = doc[: hole.start] + choice.text + doc[hole.end:]
    assert doc == (
        "def area(w, h):\n    return w * h\n\n"
        "def perimeter(w, h):\n    return 2 * (w + h)\n\n"
        "def scale(w, f):\n    return w * f\n"
    )
    assert parse_error_count("python", doc) == 0
