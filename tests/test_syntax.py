"""SyntaxTree: language mapping, error counts, offsets and incremental reparsing."""

from __future__ import annotations

import random

import pytest

from dgls.languages import BROKEN_GRAMMARS, PACK_LANGUAGES, get_ts_language, ts_language_name
from dgls.syntax import SyntaxTree, parse_error_count


@pytest.mark.parametrize(
    ("language_id", "name"),
    [
        ("python", "python"), ("typescriptreact", "tsx"), ("javascriptreact", "javascript"),
        ("shellscript", "bash"), ("sh", "bash"), ("c++", "cpp"), ("cpp", "cpp"), ("CPP", "cpp"),
        ("cuda-cpp", "cuda"), ("objective-c", "objc"), ("csharp", "csharp"), ("c-sharp", "csharp"),
        ("git-commit", "gitcommit"), ("makefile", "make"), ("jsonc", "json"), ("yml", "yaml"),
        ("ocaml_interface", "ocaml_interface"), ("emacs-lisp", "elisp"),
    ],
)
def test_language_aliases(language_id: str, name: str) -> None:
    assert ts_language_name(language_id) == name


def test_unknown_language_has_no_tree() -> None:
    assert ts_language_name("brainfuck-2000") is None
    assert ts_language_name("") is None
    tree = SyntaxTree("brainfuck-2000", "+++[>+<-]")
    assert tree.tree is None and tree.error_count() == 0 and tree.node_at(0) is None
    tree.edit(0, 1, "-", "-++[>+<-]")
    assert tree.text == "-++[>+<-]"
    assert parse_error_count("plaintext", "(((") == 0


def test_every_pack_language_parses() -> None:
    for name in sorted(PACK_LANGUAGES - BROKEN_GRAMMARS):
        assert get_ts_language(name) is not None, name
        assert SyntaxTree(name, "x").tree is not None, name
    for name in BROKEN_GRAMMARS:  # would hang the server: no tree, but still usable
        assert SyntaxTree(name, "x").tree is None


@pytest.mark.parametrize(
    ("language_id", "good", "bad"),
    [
        ("python", "def f(x):\n    return x\n", "def f(x:\n    return x\n"),
        ("javascript", "function f() { return 1; }\n", "function f() { return 1; \n"),
        ("typescript", "let x: number = 1;\n", "let x: = 1;\n"),
        ("go", "package m\nfunc f() int { return 1 }\n", "package m\nfunc f() int { return 1 \n"),
        ("rust", "fn f() -> i32 { 1 }\n", "fn f() -> i32 { 1 \n"),
        ("c", "int f(void) { return 1; }\n", "int f(void) { return 1 }\n"),
        ("cpp", "int f() { return 1; }\n", "int f() { return (1; }\n"),
        ("java", "class A { int f() { return 1; } }\n", "class A { int f() { return 1; }\n"),
        ("lua", "function f()\n  return 1\nend\n", "function f()\n  return 1\n"),
        ("shellscript", "if true; then\n  echo hi\nfi\n", "if true; then\n  echo hi\n"),
    ],
)
def test_error_counts(language_id: str, good: str, bad: str) -> None:
    assert parse_error_count(language_id, good) == 0
    assert parse_error_count(language_id, bad) >= 1
    tree = SyntaxTree(language_id, bad)
    ranges = tree.error_ranges()
    assert len(ranges) == tree.error_count()
    assert all(0 <= a <= b <= len(bad) for a, b in ranges)


def test_missing_node_counts() -> None:
    tree = SyntaxTree("python", "def f(:\n  x = 1\n")
    assert "MISSING" in tree.sexp()
    assert tree.error_count() == 1


def test_offsets_with_non_ascii() -> None:
    text = "s = 'é漢字😀'\nt = 1\n"
    tree = SyntaxTree("python", text)
    t_at = text.index("t = 1")
    assert tree.char_offset(tree.byte_offset(t_at)) == t_at
    node = tree.node_at(t_at)
    assert node is not None and node.type == "identifier"
    assert tree.node_range(node) == (t_at, t_at + 1)
    # a byte inside a multi-byte character rounds down to its start
    emoji = text.index("😀")
    assert tree.char_offset(tree.byte_offset(emoji) + 2) == emoji


def test_edit_matches_fresh_parse_simple() -> None:
    text = "def f():\n    return 1\n"
    tree = SyntaxTree("python", text)
    start = text.index("1")
    after = text[:start] + "'漢字'" + text[start + 1:]
    tree.edit(start, start + 1, "'漢字'", after)
    assert tree.sexp() == SyntaxTree("python", after).sexp()
    assert "string" in tree.sexp()


def test_inconsistent_edit_falls_back_to_full_parse() -> None:
    tree = SyntaxTree("python", "x = 1\n")
    tree.edit(0, 1, "y", "completely = 'different'\n")
    assert tree.sexp() == SyntaxTree("python", "completely = 'different'\n").sexp()


def test_with_edit_leaves_original_untouched() -> None:
    tree = SyntaxTree("javascript", "f(1);\n")
    before = tree.sexp()
    broken = tree.with_edit(2, 3, "(")
    assert broken.error_count() >= 1
    assert tree.sexp() == before and tree.error_count() == 0


_PIECES = ["é", "漢字", "😀", "\n", "    ", "(", ")", "{", "}", ":", "x", "1", " = ", "if ", "return ",
           "'", '"', "def ", "#", "\r\n", "\t", ",", ".", "end", "then", "fn "]
_SEEDS = {
    "python": "def f(x):\n    s = 'é'\n    return x + 1  # 漢字\n\nclass A:\n    pass\n",
    "javascript": "function f(x) {\n  const s = '😀';\n  return x + 1;\n}\n",
    "rust": "fn main() {\n    let s = \"漢字\";\n    println!(\"{}\", s);\n}\n",
    "lua": "local function f(x)\n  if x then return 'é' end\nend\n",
    "shellscript": "for i in 1 2; do\n  echo \"é $i\"\ndone\n",
    "c++": "int main() {\n  auto s = u8\"😀\";\n  return 0;\n}\n",
}


@pytest.mark.parametrize("language_id", sorted(_SEEDS))
def test_incremental_edits_equal_fresh_parse(language_id: str) -> None:
    """Property: any sequence of edits, applied incrementally, yields the tree a fresh parse gives."""
    rng = random.Random(f"dgls-{language_id}")
    for _ in range(12):
        text = _SEEDS[language_id]
        tree = SyntaxTree(language_id, text)
        for _ in range(25):
            start = rng.randint(0, len(text))
            old_end = min(len(text), start + rng.choice([0, 0, 1, 2, 5, 12]))
            new_text = "".join(rng.choice(_PIECES) for _ in range(rng.choice([0, 1, 2, 4])))
            after = text[:start] + new_text + text[old_end:]
            tree.edit(start, old_end, new_text, after)
            text = after
            assert tree.text == text
        fresh = SyntaxTree(language_id, text)
        assert tree.sexp() == fresh.sexp(), text
        assert tree.error_count() == fresh.error_count()
