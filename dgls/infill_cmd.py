"""`dgls infill FILE --line L --col C [--end-line L2 --end-col C2]`: one infill from the command line.

It goes through the same pipeline as the language server (span planning, engine, clean-up and
syntax check), so the shell and the editor give the same answer for the same text.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lsprotocol import types as lsp

MAX_FILE_BYTES = 20 * 1024 * 1024


class InputError(Exception):
    """Bad input from the user: the message says what and how to fix it."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .cli import add_engine_arguments, add_model_arguments, add_remote_arguments

    parser.add_argument("file", help="the source file")
    parser.add_argument("--line", type=int, required=True, help="0-based line of the cursor (as LSP)")
    parser.add_argument("--col", type=int, required=True, help="0-based column in UTF-16 code units (as LSP)")
    parser.add_argument("--end-line", type=int, default=None, help="end of a selection to rewrite")
    parser.add_argument("--end-col", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=48, help="largest span budget in tokens")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    parser.add_argument("--language", default=None, help="language id (default: from the file extension)")
    parser.add_argument("--json", action="store_true", help="print text, range and stats as JSON")
    add_model_arguments(parser)
    add_engine_arguments(parser)
    add_remote_arguments(parser)


def read_source(path: Path) -> str:
    """Read a text file, refusing what is not one."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise InputError(f"{path}: file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        raise InputError(f"{path}: looks like a binary file (NUL bytes); dgls infills text only")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not valid UTF-8 (byte {exc.start}); dgls infills UTF-8 text only") from exc


def offset_of(doc, line: int, col: int) -> int:
    """Offset of a position, refusing (unlike LSP's clamping) a column past the end of its line."""
    from .documents import PositionError

    if line < 0 or col < 0:
        raise InputError(f"position {line}:{col} is negative; lines and columns count from 0")
    try:
        offset = doc.offset_at(lsp.Position(line=line, character=col))
    except PositionError as exc:
        raise InputError(str(exc)) from exc
    line_end = doc.position_at(doc.line_range(line)[1]).character
    if col > line_end:
        raise InputError(f"column {col} is past the end of line {line} ({line_end} UTF-16 units)")
    return offset


def run(args: argparse.Namespace) -> int:
    from .documents import Document

    path = Path(args.file)
    try:
        text = read_source(path)
        doc = Document(uri=path.resolve().as_uri(), text=text, version=0,
                       language_id=args.language or path.suffix.lstrip(".").lower())
        start = offset_of(doc, args.line, args.col)
        end = None
        if args.end_line is not None or args.end_col is not None:
            if args.end_line is None or args.end_col is None:
                raise InputError("--end-line and --end-col go together")
            end = offset_of(doc, args.end_line, args.end_col)
            if end < start:
                raise InputError("the selection ends before it starts")
    except InputError as exc:
        print(f"dgls infill: {exc}", file=sys.stderr)
        return 2
    from .engine import EngineError
    from .options import Settings
    from .pipeline import infill_document

    settings = Settings(max_span_tokens=args.max_tokens, steps=args.steps, infill_layout=args.layout)
    try:
        engine = _engine(args)
        results: list = []
        plan, edit = infill_document(engine, doc, start, end, settings, results=results)
    except EngineError as exc:
        print(f"dgls infill: {exc}", file=sys.stderr)
        return 1
    if args.json:
        rng = doc.range_of(edit.start, edit.end)
        print(json.dumps({
            "text": edit.text,
            "raw": results[0].text,
            "range": {"start": {"line": rng.start.line, "character": rng.start.character},
                      "end": {"line": rng.end.line, "character": rng.end.character}},
            "plan": {"kind": plan.kind, "budget": plan.budget, "single_line": plan.single_line},
            "confidence": results[0].confidence,
            "stats": results[0].stats.to_dict(),
        }, ensure_ascii=False, indent=2))
    else:
        print(edit.text)
        if not edit.text.strip():
            print(f"dgls infill: no infill kept; the model's draft {results[0].text[:80]!r} did not fit the code "
                  "around the cursor", file=sys.stderr)
    return 0


def _engine(args: argparse.Namespace):
    """The model in this process, or (--engine-url) a vLLM server; errors raise EngineError."""
    from .cli import remote_options

    remote = remote_options(args)
    if remote is not None:
        from .remote_engine import RemoteEngine

        return RemoteEngine(remote, model=args.model, raise_errors=True)
    from .engine import Engine

    return Engine(args.model, device=args.device, dtype=args.dtype, quantize=args.quantize)
