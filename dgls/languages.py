"""LSP languageId -> tree-sitter grammar name, and cached grammar access.

Editors disagree on language ids (VS Code says ``typescriptreact`` and ``shellscript``, Neovim
says ``sh`` and ``cs``, Emacs clients send ``c++`` or ``js``).  Everything in dgls that needs a
grammar goes through :func:`ts_language_name`, so one table decides which grammar parses which
document.  Every grammar bundled in tree-sitter-language-pack 0.13 (except the broken ones listed in
``BROKEN_GRAMMARS``) is reachable under its own name, and the aliases below cover the ids that editors actually send.
"""

from __future__ import annotations

import functools
import typing

import tree_sitter
import tree_sitter_language_pack as _pack

#: Grammar names the installed language pack ships (all bundled offline in 0.13).
PACK_LANGUAGES: frozenset[str] = frozenset(typing.get_args(_pack.SupportedLanguage))

#: Grammars that ship in the pack but must not be run: tree-sitter-cobol's external scanner in
#: language-pack 0.13.0 never returns on ordinary input ("x", "foo(1)"), hanging the caller in C
#: where no timeout can reach it.  Documents in these languages get no tree.
BROKEN_GRAMMARS: frozenset[str] = frozenset({"cobol"})

#: Editor language ids (lower-cased) that differ from the grammar's own name.
ALIASES: dict[str, str] = {
    # shells
    "shellscript": "bash", "sh": "bash", "zsh": "bash", "ksh": "bash", "shell": "bash",
    # C family
    "c++": "cpp", "cxx": "cpp", "cc": "cpp", "hpp": "cpp", "h": "c",
    "cuda-cpp": "cuda", "cu": "cuda",
    "objective-c": "objc", "objectivec": "objc", "objective-cpp": "objc", "objcpp": "objc",
    "c#": "csharp", "cs": "csharp", "c-sharp": "csharp",
    "f#": "fsharp", "fs": "fsharp",
    # web
    "javascriptreact": "javascript", "jsx": "javascript", "js": "javascript",
    "mjs": "javascript", "cjs": "javascript", "javascript.jsx": "javascript",
    "typescriptreact": "tsx", "typescript.tsx": "tsx", "ts": "typescript",
    "mts": "typescript", "cts": "typescript",
    "jsonc": "json", "json5": "json", "jsonl": "json",
    "htm": "html", "xhtml": "html", "xsl": "xml", "xslt": "xml", "svg": "xml", "plist": "xml",
    "less": "css", "sass": "scss",
    "erb": "embeddedtemplate", "ejs": "embeddedtemplate", "eruby": "embeddedtemplate",
    # scripting
    "py": "python", "python3": "python", "pyi": "python", "bzl": "starlark", "bazel": "starlark",
    "rb": "ruby", "rs": "rust", "golang": "go", "kt": "kotlin", "kts": "kotlin",
    "ex": "elixir", "exs": "elixir", "erl": "erlang", "hs": "haskell", "jl": "julia",
    "pl": "perl", "perl6": "perl", "raku": "perl", "ps1": "powershell", "pwsh": "powershell",
    "rkt": "racket", "scm": "scheme", "clj": "clojure", "clojurescript": "clojure", "cljs": "clojure",
    "emacs-lisp": "elisp", "el": "elisp", "lisp": "commonlisp", "common-lisp": "commonlisp",
    "ml": "ocaml", "mli": "ocaml_interface", "ocamlinterface": "ocaml_interface",
    "vimscript": "vim", "viml": "vim", "tcl/tk": "tcl", "luau": "luau",
    # data / config / build
    "yml": "yaml", "dockercompose": "yaml", "docker-compose": "yaml", "ansible": "yaml",
    "makefile": "make", "mk": "make", "dockerfile": "dockerfile", "containerfile": "dockerfile",
    "tf": "terraform", "terraform-vars": "terraform", "tfvars": "terraform",
    "dosini": "ini", "cfg": "ini", "editorconfig": "ini", "conf": "ini",
    "proto3": "proto", "protobuf": "proto",
    "tex": "latex", "plaintex": "latex", "bib": "bibtex",
    "md": "markdown", "mdx": "markdown",
    "git-commit": "gitcommit", "ignore": "gitignore", "git-ignore": "gitignore",
    "gitattributes": "gitattributes", "pip-requirements": "requirements",
    "systemverilog": "verilog", "sv": "verilog", "vhd": "vhdl",
    "sol": "solidity", "gql": "graphql", "postgres": "sql", "mysql": "sql", "plsql": "sql",
    "restructuredtext": "rst", "cmakelists": "cmake", "nixos": "nix",
    "godot": "gdscript", "gd": "gdscript", "glslx": "glsl", "wgsl": "wgsl",
    "ocaml.interface": "ocaml_interface",
}


def ts_language_name(language_id: str | None) -> str | None:
    """Map an editor language id to a bundled grammar name, or None when none fits.

    Lookup is case-insensitive and whitespace-tolerant so that ids from any client work.
    """
    if not language_id:
        return None
    key = language_id.strip().lower()
    name = ALIASES.get(key, key)
    if name not in PACK_LANGUAGES:
        name = key.replace("-", "_")
    return name if name in PACK_LANGUAGES and name not in BROKEN_GRAMMARS else None


@functools.cache
def _language(name: str) -> tree_sitter.Language:
    return _pack.get_language(name)  # type: ignore[arg-type]


def get_ts_language(language_id: str | None) -> tree_sitter.Language | None:
    """The tree-sitter Language for an editor id (cached), or None for unknown ids."""
    name = ts_language_name(language_id)
    if name is None:
        return None
    try:
        return _language(name)
    except Exception:  # a broken grammar must degrade to "no tree", never crash a request
        return None


def new_parser(language_id: str | None) -> tree_sitter.Parser | None:
    """A fresh Parser for the id; parsers are not thread-safe, so each owner gets its own."""
    language = get_ts_language(language_id)
    return tree_sitter.Parser(language) if language is not None else None
