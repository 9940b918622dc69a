"""`dgls connect`: an editor's stdio bridged to a running `dgls serve --tcp` daemon.

Editors start a language server as a command on stdio; making that command `dgls connect`
gives every editor the shared daemon (one resident model) without a TCP client of its own. The
bridge reads the daemon's token file, sends the handshake line, then copies bytes both ways
until either side closes.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
from pathlib import Path

from . import auth

CHUNK = 65536


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="the daemon's address (default: loopback)")
    parser.add_argument("--port", type=int, default=2087, help="the daemon's port (default 2087)")
    parser.add_argument("--token-file", default=None,
                        help="the daemon's token file (default: $XDG_RUNTIME_DIR/dgls/daemon-PORT.token)")


def _pump_stdin(sock: socket.socket) -> None:
    """Editor -> daemon; at the editor's end of input, half-close so the daemon sees it."""
    try:
        while data := os.read(sys.stdin.fileno(), CHUNK):
            sock.sendall(data)
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _pump_socket(sock: socket.socket) -> int:
    """Daemon -> editor until the daemon closes; returns the bytes forwarded."""
    out, total = sys.stdout.buffer, 0
    try:
        while data := sock.recv(CHUNK):
            out.write(data)
            out.flush()
            total += len(data)
    except OSError:
        pass
    return total


def bridge(host: str, port: int, token: str) -> int:
    """Connect, authenticate, forward; the exit status."""
    try:
        sock = socket.create_connection((host, port), timeout=10)
    except OSError as exc:
        print(f"dgls connect: no daemon on {host}:{port} ({exc}); start one with `dgls serve --tcp`",
              file=sys.stderr)
        return 1
    sock.settimeout(None)
    sock.sendall(auth.handshake_line(token))
    threading.Thread(target=_pump_stdin, args=(sock,), name="dgls-connect-stdin", daemon=True).start()
    if _pump_socket(sock) == 0:
        print("dgls connect: the daemon closed the connection before answering (wrong token?)", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        path = Path(args.token_file) if args.token_file else auth.token_path(args.port)
        token = auth.read_token(path)
    except auth.AuthError as exc:
        print(f"dgls connect: {exc}", file=sys.stderr)
        return 1
    status = bridge(args.host, args.port, token)
    sys.stdout.flush()
    os._exit(status)  # the stdin pump may still block in read(): do not wait for it
