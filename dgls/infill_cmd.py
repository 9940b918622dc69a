"""`dgls infill FILE --line L --col C [--end-line L2 --end-col C2]`: one infill from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MAX_FILE_BYTES = 20 * 1024 * 1024


class InputError(Exception):
    """Bad input from the user: the message says what and how to fix it."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .cli import add_model_arguments

    parser.add_argument("file", help="the source file")
    parser.add_argument("--line", type=int, required=True, help="0-based line of the cursor (as LSP)")
    parser.add_argument("--col", type=int, required=True, help="0-based column in UTF-16 code units (as LSP)")
    parser.add_argument("--end-line", type=int, default=None, help="end of a selection to rewrite")
    parser.add_argument("--end-col", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=None, help="span budget in tokens (default: planned)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--language", default=None, help="language id (default: from the file extension)")
    parser.add_argument("--json", action="store_true", help="print text, range and stats as JSON")
    add_model_arguments(parser)


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


def position_to_offset(text: str, line: int, col: int) -> int:
    """LSP position (0-based line, UTF-16 column) -> str offset; raises InputError when outside."""
    from .positions import position_to_offset as to_offset

    try:
        return to_offset(text, line, col)
    except ValueError as exc:
        raise InputError(str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    from .infill import infill_text, language_for_path

    try:
        text = read_source(Path(args.file))
        start = position_to_offset(text, args.line, args.col)
        end = start
        if args.end_line is not None or args.end_col is not None:
            if args.end_line is None or args.end_col is None:
                raise InputError("--end-line and --end-col go together")
            end = position_to_offset(text, args.end_line, args.end_col)
            if end < start:
                raise InputError("the selection ends before it starts")
    except InputError as exc:
        print(f"dgls infill: {exc}", file=sys.stderr)
        return 2
    from .engine import Engine, EngineError

    try:
        engine = Engine(args.model, device=args.device, dtype=args.dtype)
        result = infill_text(engine, text, args.language or language_for_path(args.file), start, end,
                             max_tokens=args.max_tokens, steps=args.steps, seed=args.seed)
    except EngineError as exc:
        print(f"dgls infill: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print(result["text"])
    return 0
