"""Span planning on real-looking snippets; '|' marks the cursor, '«' '»' a selection."""

from __future__ import annotations

import pytest

from dgls.indentation import detect_indent_unit
from dgls.postprocess import choose_infill, clean_infill
from dgls.spans import SpanPlan, plan_holes, plan_span
from dgls.syntax import SyntaxTree


def plan(language_id: str, marked: str, **kw: object) -> tuple[str, SpanPlan]:
    if "«" in marked:
        s = marked.index("«")
        text = marked.replace("«", "", 1)
        e = text.index("»")
        text = text.replace("»", "", 1)
        return text, plan_span(text, language_id, s, e, **kw)  # type: ignore[arg-type]
    i = marked.index("|")
    text = marked.replace("|", "", 1)
    return text, plan_span(text, language_id, i, **kw)  # type: ignore[arg-type]


# (language, snippet, kind, indent) -- empty bodies are blocks with the full budget
BLOCKS = [
    ("python", "import os\n\ndef load(path):|\n", "    "),
    ("python", "class A:\n    def f(self):\n|\n\nx = 1\n", "        "),
    ("python", "def f():\n    \n|", "    "),
    ("python", "def f():\n  pass\n\nfor i in range(3):\n  |\nprint(i)\n", "  "),
    ("javascript", "function add(a, b) {|}\n", "  "),
    ("javascript", "export class Store {\n  load() {\n    |\n  }\n}\n", "    "),
    ("javascriptreact", "const App = () => {\n|\n};\n", "  "),
    ("typescript", "function f(x: number): number {\n  |\n}\n", "  "),
    ("typescriptreact", "export function View(): JSX.Element {\n|\n}\n", "  "),
    ("go", "package main\n\nfunc main() {\n|\n}\n", "\t"),
    ("rust", "fn parse(s: &str) -> Option<u32> {\n    |\n}\n", "    "),
    ("rust", "impl Foo {\n    fn new() -> Self {|}\n}\n", "        "),
    ("c", "#include <stdio.h>\n\nint main(void) {\n|\n}\n", "    "),
    ("cpp", "namespace app {\nint run() {\n  |\n}\n}\n", "  "),
    ("java", "public class Main {\n    public static void main(String[] args) {\n        |\n    }\n}\n", "        "),
    ("lua", "local function greet(name)\n|\nend\n", "  "),
    ("lua", "for i = 1, 10 do\n  |\nend\n", "  "),
    ("lua", "if x > 1 then\n  |\nelse\n  y()\nend\n", "  "),
    ("shellscript", "if [ -f \"$1\" ]; then\n  |\nfi\n", "  "),
    ("shellscript", "for f in *.txt; do\n|\ndone\n", "    "),
    ("shellscript", "cleanup() {\n  |\n}\n", "  "),
    ("ruby", "def hello(name)\n  |\nend\n", "  "),
    ("unknown-lang", "section {\n|\n}\n", "    "),
]


@pytest.mark.parametrize(("language_id", "snippet", "indent"), BLOCKS)
def test_empty_bodies_are_blocks(language_id: str, snippet: str, indent: str) -> None:
    text, p = plan(language_id, snippet, max_budget=40)
    assert (p.kind, p.single_line, p.budget, p.indent) == ("block", False, 40, indent)
    assert p.start == p.end == snippet.index("|")


LITERALS = [
    ("javascript", "const opts = {|};\n"),
    ("typescript", "let cfg: Config = {|};\n"),
    ("python", "d = {|}\n"),
    ("go", "package m\n\nvar x = T{|}\n"),
    ("rust", "fn f() { let p = Point {|}; }\n"),
    ("c", "int xs[] = {|};\n"),
    ("lua", "local t = {|}\n"),
]


@pytest.mark.parametrize(("language_id", "snippet"), LITERALS)
def test_braces_of_literals_are_not_blocks(language_id: str, snippet: str) -> None:
    _, p = plan(language_id, snippet)
    assert p.kind == "line" and p.single_line and p.indent == ""
    assert 16 <= p.budget <= 24


MID_LINE = [
    ("python", "total = sum(|)\n"),
    ("python", "    result = compute(a, |)\n"),
    ("javascript", "const x = items.map(|);\n"),
    ("go", "package m\n\nfunc f() {\n\tfmt.Println(|)\n}\n"),
    ("rust", "fn f() {\n    let v = vec![|];\n}\n"),
    ("c", "int main(void) {\n    printf(|);\n}\n"),
    ("java", "class A { void f() { System.out.println(|); } }\n"),
    ("lua", "local x = math.max(|)\n"),
    ("shellscript", "echo \"$HOME\" |\n"),
    ("python", "x = |\n"),
    ("unknown-lang", "let x = |\n"),
]


@pytest.mark.parametrize(("language_id", "snippet"), MID_LINE)
def test_mid_line_is_rest_of_line(language_id: str, snippet: str) -> None:
    _, p = plan(language_id, snippet)
    assert (p.kind, p.single_line, p.indent) == ("line", True, "")
    assert p.start == p.end == snippet.index("|")
    assert 16 <= p.budget <= 24


def test_line_budget_shrinks_with_the_line() -> None:
    _, short = plan("python", "x = |\n")
    _, long = plan("python", "value = some_function_name(argument_one, argument_two, argument_three, |)\n")
    assert short.budget == 24 and long.budget == 16


STATEMENTS = [  # (language, snippet, indent, budget, one line)
    ("python", "def f(x):\n    y = x * 2\n|\n    return y\n", "    ", 24, True),
    ("python", "def f(x):\n    y = x * 2\n    |\n", "    ", 32, False),
    ("javascript", "function f() {\n  const a = 1;\n  |\n  return a;\n}\n", "  ", 24, True),
    ("javascript", "function f() {\n  const a = 1;\n|\n}\n", "  ", 32, False),
    ("go", "package m\n\nfunc f() int {\n\ta := 1\n\t|\n\treturn a\n}\n", "\t", 24, True),
    ("c", "int f(void) {\n    int a = 1;\n\n|\n    return a;\n}\n", "    ", 24, True),
    ("lua", "local function f()\n  local a = 1\n  |\nend\n", "  ", 32, False),
    ("shellscript", "set -e\n|\necho done\n", "", 24, True),
    ("unknown-lang", "alpha\n  beta\n  |\n  gamma\n", "  ", 24, True),
    ("python", "def f(xs):\n    total = 0\n    |\n        total += x\n    return total\n", "    ", 24, True),
]


@pytest.mark.parametrize(("language_id", "snippet", "indent", "budget", "one_line"), STATEMENTS)
def test_blank_lines_are_statements(language_id: str, snippet: str, indent: str, budget: int,
                                    one_line: bool) -> None:
    """Between two lines of a block: one line (a statement, or the header of the lines below);
    at the end of a block: a statement or a few lines."""
    _, p = plan(language_id, snippet)
    assert (p.kind, p.single_line, p.indent, p.budget) == ("statement", one_line, indent, budget)


def test_a_blank_line_mid_block_gets_one_line_that_parses() -> None:
    """A draft that runs on into the code below keeps its first line; one that cannot parse is
    dropped (a blank line is not half-way through an expression, so no partial line)."""
    text, p = plan("python", "def f(x):\n    y = x * 2\n    |\n    return y\n")
    assert choose_infill(["y += 1\n    return y\nreturn"], p, text, "python").text == "y += 1"
    assert choose_infill(["if y > (\n"], p, text, "python").path == "dropped"
    text, mid_line = plan("python", "def f(x):\n    y = g(x, |\n    return y\n")
    assert choose_infill(["x +"], mid_line, text, "python").text == "x +"  # half-written already: not held
    text, mid_line = plan("python", "def f(x):\n    y = g(|)\n    return y\n")
    assert choose_infill(["x +"], mid_line, text, "python").path == "dropped"  # it parsed: keep it so


def test_non_empty_body_start_is_a_statement() -> None:
    _, p = plan("python", "def f():\n|\n    return 1\n")
    assert p.kind == "statement" and p.indent == "    "


@pytest.mark.parametrize("snippet", [
    'def f(x):\n    """Double x."""\n    |\n',
    'def f(x):\n    r"""Double\n    x.\n    """\n    |\n\n\ndef g():\n    pass\n',
    "class A:\n    def f(self):\n        \'\'\'Doc.\'\'\'\n        |\n    x = 1\n",
])
def test_blank_line_after_a_docstring_asks_for_the_whole_body(snippet: str) -> None:
    _, p = plan("python", snippet, max_budget=192)
    assert (p.kind, p.single_line, p.budget) == ("block", False, 192)


def test_cursor_at_the_end_of_a_docstring_only_body_asks_for_the_body_below() -> None:
    text, p = plan("python", 'def f(x):\n    """Double x."""|\n\n\ndef g():\n    pass\n', max_budget=192)
    assert (p.kind, p.single_line, p.budget, p.indent) == ("block", False, 192, "    ")
    out = clean_infill("return 2 * x", p, text)
    assert text[: p.start] + out + text[p.end:] == 'def f(x):\n    """Double x."""\n    return 2 * x\n\n\ndef g():\n    pass\n'
    _, p = plan("python", 'def f(x):\n    """Double x."""|\n    return 2 * x\n', max_budget=192)
    assert p.kind == "line"  # the body is there already: continue the line


@pytest.mark.parametrize("snippet", [
    'def f(x):\n    """Double x."""\n    |\n    return 2 * x\n',  # the body goes on after the cursor
    'def f(x):\n    y = """text"""\n    |\n',  # a string in a statement, not a docstring
    'x = 1\n"""Module doc."""\n|\n',  # no block opener
])
def test_other_blank_lines_after_strings_stay_statements(snippet: str) -> None:
    _, p = plan("python", snippet, max_budget=192)
    assert p.kind == "statement"


def test_selection_is_exact() -> None:
    text, p = plan("python", "def f(x):\n    return «x + 1»\n")
    assert (p.kind, p.start, p.end, p.single_line, p.indent) == ("selection", 21, 26, True, "")
    assert text[p.start:p.end] == "x + 1"
    assert 4 <= p.budget <= 48


def test_multi_line_selection_keeps_indent_and_budget_grows() -> None:
    text, small = plan("python", "def f(x):\n«    y = 1\n»    return y\n")
    assert small.kind == "selection" and not small.single_line and small.indent == "    "
    body = "".join(f"    v{i} = compute(v{i - 1}, {i})\n" for i in range(1, 30))
    _, big = plan("python", "def f(x):\n«" + body + "»    return v29\n", max_budget=64)
    assert big.budget == 64 and big.budget > small.budget


@pytest.mark.parametrize(
    ("language_id", "marked", "expected"),
    [
        ("python", "x = foo(a, b«ar(1)»)\n", "bar(1)"),
        ("python", "x = foo(a, ba«r(1)»)\n", "bar(1)"),
        ("javascript", "const y = a.b«.c(1)» + 2;\n", "a.b.c(1)"),
        ("rust", "fn f() { let v = s.it«er().cou»nt(); }\n", "s.iter().count"),
        ("go", "package m\n\nfunc f() { x := g(1, «2, 3») }\n", "2, 3"),
    ],
)
def test_expand_to_node(language_id: str, marked: str, expected: str) -> None:
    text, p = plan(language_id, marked, expand_to_node=True)
    assert text[p.start:p.end] == expected
    assert p.kind == ("selection" if expected == marked[marked.index("«") + 1:marked.index("»")] else "node")


def test_expand_to_node_without_grammar_keeps_selection() -> None:
    text, p = plan("unknown-lang", "abc «de» fg\n", expand_to_node=True)
    assert p.kind == "selection" and text[p.start:p.end] == "de"


def test_given_tree_is_used_and_stale_tree_ignored() -> None:
    text = "function f() {\n\n}\n"
    stale = SyntaxTree("javascript", "const o = {\n\n};\n")
    p = plan_span(text, "javascript", 15, tree=stale)
    assert p.kind == "block"
    p2 = plan_span(text, "javascript", 15, tree=SyntaxTree("javascript", text))
    assert p2 == p


def test_positions_are_clamped_and_crlf_is_not_split() -> None:
    text = "x = 1\r\ny = 2\r\n"
    p = plan_span(text, "python", 6)  # between \r and \n
    assert p.start == 5
    assert plan_span(text, "python", 999).start == len(text)
    assert plan_span(text, "python", -3).start == 0


def test_unknown_language_uses_indentation() -> None:
    _, p = plan("mystery", "task build:\n|\n")
    assert p.kind == "block" and p.indent == "    "
    _, p = plan("mystery", "a\n\tb\n\t|\n")
    assert p.kind == "statement" and p.indent == "\t"


@pytest.mark.parametrize(
    ("text", "unit"),
    [("a\n  b\n    c\n", "  "), ("a\n    b\n", "    "), ("a\n\tb\n\t\tc\n", "\t"), ("a\nb\n", "    ")],
)
def test_detect_indent_unit(text: str, unit: str) -> None:
    assert detect_indent_unit(text) == unit


# -- holes -------------------------------------------------------------------------------------
def test_python_holes() -> None:
    text = (
        "def load(path):\n    ...\n\n"
        "def save(path, data): ...\n\n"
        "def check(x):\n    # TODO: validate x\n    return x\n\n"
        "MSG = \"TODO ... later\"\n"
        "TODO_LIST = []\n"
    )
    holes = plan_holes(text, "python", 0, len(text))
    spans = [text[h.start:h.end] for h in holes]
    assert spans == ["...", " ...", "# TODO: validate x"]
    body, inline_body, comment = holes
    assert (body.kind, body.single_line, body.budget, body.indent) == ("hole", False, 48, "    ")
    assert (inline_body.single_line, inline_body.indent, inline_body.budget) == (False, "    ", 48)
    assert (comment.single_line, comment.indent, comment.budget) == (False, "    ", 32)


def test_holes_skip_spreads_varargs_and_strings() -> None:
    js = "function f(...args) {\n  // ...\n}\nconst g = (a) => { ... };\nconst s = '...';\nh(...xs);\n"
    spans = [js[h.start:h.end] for h in plan_holes(js, "javascript", 0, len(js))]
    assert spans == ["// ...", " ... "]
    lua = "local function f(...)\n  ...\nend\nprint(...)\n"
    holes = plan_holes(lua, "lua", 0, len(lua))
    assert [(h.start, h.end) for h in holes] == [(lua.index("  ...") + 2, lua.index("  ...") + 5)]
    c = "int sum(int n, ...) {\n    /* TODO */\n}\n"
    assert [c[h.start:h.end] for h in plan_holes(c, "c", 0, len(c))] == ["/* TODO */"]


def test_holes_respect_the_range_and_other_languages() -> None:
    rust = "fn a() {\n    todo_list();\n    ...\n}\nfn b() {\n    // TODO\n}\n"
    holes = plan_holes(rust, "rust", 0, rust.index("fn b"))
    assert [rust[h.start:h.end] for h in holes] == ["..."]
    holes = plan_holes(rust, "rust", 0, len(rust))
    assert [rust[h.start:h.end] for h in holes] == ["...", "// TODO"]
    sh = "main() {\n  ...\n}\necho ...more\n"
    assert [sh[h.start:h.end] for h in plan_holes(sh, "shellscript", 0, len(sh))] == ["..."]
    go = "package m\n\nfunc f(xs ...int) {\n\t...\n}\n"
    holes = plan_holes(go, "go", 0, len(go))
    assert len(holes) == 1 and holes[0].indent == "\t" and holes[0].budget == 48


def test_holes_in_unknown_language() -> None:
    text = "step one\n# TODO fill me\n...\nnot a TODO here\n"
    holes = plan_holes(text, "mystery", 0, len(text), markers=("TODO", "..."))
    assert [text[h.start:h.end] for h in holes] == ["# TODO fill me", "..."]
    assert all(h.kind == "hole" and not h.single_line for h in holes)
