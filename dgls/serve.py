"""`dgls serve`: the language server's entry point (stdio, or the TCP daemon with --tcp)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import privacy
from .cli import add_engine_arguments, add_model_arguments, add_remote_arguments
from .connection import Shared
from .handlers import create_server
from .options import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `dgls serve`."""
    parser.add_argument("--tcp", action="store_true", help="serve LSP over TCP (several editors share one engine)")
    parser.add_argument("--host", default="127.0.0.1", help="TCP address to bind (default: loopback only)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow --host to be a non-loopback address (clients still need the token)")
    parser.add_argument("--connect", action="store_true",
                        help="bridge stdio to a running daemon instead (as `dgls connect`, for editors that run `dgls serve`)")
    parser.add_argument("--token-file", default=None,
                        help="where to write the daemon's token (default: $XDG_RUNTIME_DIR/dgls/daemon-PORT.token)")
    parser.add_argument("--port", type=int, default=2087, help="TCP port (0: pick a free one and print it)")
    add_model_arguments(parser)
    add_engine_arguments(parser)
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for the engine (default 0: every core up to 4, see dgls.threads)")
    add_remote_arguments(parser)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error", "off"],
                        help="stderr log level and the default window/logMessage level")


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings, problems = Settings().merged({
        "model": args.model, "device": args.device, "dtype": args.dtype, "logLevel": args.log_level,
        "quantize": getattr(args, "quantize", None), "infillLayout": getattr(args, "layout", None),
        "threads": args.threads, "engineUrl": args.engine_url, "engineApiKeyEnv": args.engine_api_key_env,
        "engineAllowHttp": args.engine_allow_http, "engineTimeout": args.engine_timeout})
    for problem in problems:
        print(f"dgls serve: {problem}", file=sys.stderr)
    return settings


def configure_logging(level: str) -> None:
    """Logs go to stderr (stdout carries the protocol); pygls' own chatter only when debugging."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(Settings(log_level=level).log_level_no)
    if level != "debug":
        handler.addFilter(privacy.HideMessageData())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("dgls").setLevel(logging.DEBUG)
    logging.getLogger("pygls").setLevel(logging.DEBUG if level == "debug" else logging.ERROR)


def run(args: argparse.Namespace) -> int:
    """`dgls serve`: LSP on stdio, or the TCP daemon with --tcp, or a bridge to one with --connect."""
    if args.connect:
        from .connect import run as bridge

        return bridge(args)
    configure_logging(args.log_level)
    shared = Shared(settings_from_args(args))
    if args.tcp:
        from .daemon import serve_forever

        return serve_forever(shared, args.host, args.port, args.allow_remote, args.token_file)
    ls = create_server(shared)
    try:
        ls.start_io()
    finally:
        shared.close()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # exit closed stdout already
            pass
    os._exit(0)  # the stdin reader thread may still block in read(): do not wait for it
