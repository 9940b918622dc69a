"""The `dgls` command: serve | infill | bench | doctor | stress | train | eval (argument parsing only)."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from . import threads

# subcommand -> (module that implements it, help); each module has add_arguments(parser) and run(args)
COMMANDS = {
    "serve": ("dgls.serve", "run the language server (stdio, or --tcp for a shared daemon)"),
    "infill": ("dgls.infill_cmd", "infill one span of a file and print the result"),
    "bench": ("dgls.bench", "measure speed and memory against the stock generate() baseline"),
    "doctor": ("dgls.doctor", "check the environment, device, model and grammars"),
    "stress": ("dgls.stress.command", "fuzz, cancel storms, load, soak and faults against a real server"),
    "train": ("dgls.engine.train.command", "train the embedded default model (resumable)"),
    "eval": ("dgls.evaluation.evaluate", "run the held-out infill sets against baselines"),
    "connect": ("dgls.connect", "bridge stdio to a running `dgls serve --tcp` daemon (editors' command)"),
    "latency": ("dgls.latency", "measure inline completion latency through `dgls serve`, quiet or busy"),
}


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model options every command shares."""
    parser.add_argument("--model", default=None,
                        help="checkpoint directory or a hub id already in the local cache (default: embedded model)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA if present)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: bf16 on CUDA)")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the commands that run the engine (serve, infill, doctor, bench)."""
    parser.add_argument("--quantize", default=None, choices=["4bit", "8bit", "none"],
                        help="load the projections and experts in 8 or 4 bits (torchao; 4bit needs CUDA)")
    parser.add_argument("--layout", default="auto", choices=["auto", "A", "B"],
                        help="infill layout: A (suffix pinned in the canvas), B (the chat template; "
                             "instruction-tuned models), auto (the checkpoint's)")


def add_remote_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that send the model call to a vLLM server instead of loading a model here."""
    parser.add_argument("--engine-url", default=None, metavar="URL",
                        help="a vLLM (OpenAI-compatible) server running DiffusionGemma, e.g. http://gpu-box:8000; "
                             "--model then names the model it serves (default: the first it lists)")
    parser.add_argument("--engine-api-key-env", default=None, metavar="VAR",
                        help="environment variable holding the server's API key (sent as a bearer token)")
    parser.add_argument("--engine-allow-http", action="store_true",
                        help="allow plain http to a server that is not on this machine (default: https only)")
    parser.add_argument("--engine-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="longest a request to the server may take (default: 30)")


def remote_options(args: argparse.Namespace) -> Any:
    """The RemoteOptions the arguments ask for, or None for a model in this process."""
    from .options import RemoteOptions

    if not getattr(args, "engine_url", None):
        return None
    return RemoteOptions(args.engine_url, args.engine_api_key_env, args.engine_allow_http, args.engine_timeout)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dgls", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text)
        if name == wanted:  # import only the module that will run
            importlib.import_module(module).add_arguments(cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    threads.prepare(threads.threads_from_argv(argv))  # before any subcommand imports torch
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
