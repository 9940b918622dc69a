"""The `dgls` command: serve | infill | bench | doctor | stress | train | eval (argument parsing only)."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module that implements it, help); each module has add_arguments(parser) and run(args)
COMMANDS = {
    "serve": ("dgls.serve", "run the language server (stdio, or --tcp for a shared daemon)"),
    "infill": ("dgls.infill_cmd", "infill one span of a file and print the result"),
    "bench": ("dgls.bench", "measure speed and memory against the stock generate() baseline"),
    "doctor": ("dgls.doctor", "check the environment, device, model and grammars"),
    "stress": ("dgls.stress.command", "fuzz, cancel storms, load, soak and faults against a real server"),
    "train": ("dgls.engine.train.command", "train the embedded default model (resumable)"),
    "eval": ("dgls.evaluation.evaluate", "run the held-out infill sets against baselines"),
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
