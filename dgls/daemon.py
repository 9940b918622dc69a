"""`dgls serve --tcp`: one daemon, several editors, one resident engine.

pygls' own TCP mode serves a single client; here every accepted connection gets its own
protocol instance (`create_server(shared)`: its own documents, settings and progress) over the
shared engine host and scheduler. Binds 127.0.0.1 unless told otherwise (another address needs
`--allow-remote`), and every connection must first send the daemon's token (dgls.auth): one
without it is closed before any of its messages is read. `dgls connect` is the editors' bridge.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from pathlib import Path

from pygls.io_ import run_async

from . import auth
from .connection import Shared
from .handlers import create_server
from .logroute import CLIENT

log = logging.getLogger("dgls.daemon")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # the daemon stops cleanly on either


async def admitted(reader: asyncio.StreamReader, token: str) -> str | None:
    """None when the first line is the token's handshake, else why the connection is refused."""
    try:
        line = await asyncio.wait_for(reader.readline(), auth.HANDSHAKE_TIMEOUT_S)
    except asyncio.TimeoutError:
        return "no token sent"
    except (ValueError, ConnectionError, asyncio.IncompleteReadError):
        return "no token line"
    return None if auth.check_handshake(line, token) else "wrong or missing token"


async def handle_connection(shared: Shared, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            token: str, open_writers: set[asyncio.StreamWriter]) -> None:
    """Serve one editor until it disconnects or sends `exit`; refuse it without the token."""
    open_writers.add(writer)  # the daemon closes these when it stops
    try:
        await _serve_connection(shared, reader, writer, token)
    finally:
        open_writers.discard(writer)


async def _serve_connection(shared: Shared, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            token: str) -> None:
    peer = writer.get_extra_info("peername")
    refused = await admitted(reader, token)
    if refused is not None:
        log.warning("refused a connection from %s: %s", peer, refused)
        writer.close()
        return
    ls = create_server(shared)
    CLIENT.set(ls.client_id)  # this task and the handler tasks it starts log as this editor
    log.info("%s connected from %s", ls.client_id, peer)
    stop = threading.Event()

    def on_exit() -> None:
        stop.set()
        writer.close()

    ls.on_exit = on_exit
    ls.loop = asyncio.get_running_loop()
    ls.protocol.set_writer(writer)  # type: ignore[arg-type]
    try:
        await run_async(stop_event=stop, reader=reader, protocol=ls.protocol, logger=logging.getLogger("pygls.io_"),
                        error_handler=ls.report_server_error)
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        log.info("%s: connection lost (%s)", ls.client_id, exc)
    finally:
        ls.dispose()
        if not writer.is_closing():
            writer.close()
        log.info("%s disconnected", ls.client_id)


async def serve(shared: Shared, host: str, port: int, started: asyncio.Future | None = None,
                allow_remote: bool = False, token_file: str | None = None) -> None:
    """Accept editors until SIGTERM or SIGINT; `started` receives the bound port (useful with port 0).

    The token file is written once the port is known and removed when the daemon stops. The signals
    only set an event the loop waits on: raising out of a signal handler would unwind whichever task
    happened to run (a progress request, a connection's write), which sometimes skipped this cleanup
    or hung the exit.
    """
    if not auth.is_loopback(host) and not allow_remote:
        raise auth.AuthError(f"{host} is not a loopback address: add --allow-remote to serve other machines "
                             "(they still need the token)")
    token = auth.new_token()
    path = auth.runtime_dir() if token_file is None else None  # fail before binding if unusable
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stopping.set)
    shared.host.configure(shared.defaults.engine_key)  # load while the first editor starts up
    open_writers: set[asyncio.StreamWriter] = set()
    server = await asyncio.start_server(lambda r, w: handle_connection(shared, r, w, token, open_writers),
                                        host, port, limit=2**20)
    bound = server.sockets[0].getsockname()[1]
    target = auth.token_path(bound, path) if token_file is None else Path(token_file)
    try:
        auth.write_token(target, token)
        if not auth.is_loopback(host):
            log.warning("listening on %s: other machines can connect with the token in %s", host, target)
        print(f"dgls: listening on {host}:{bound} (token in {target})", file=sys.stderr, flush=True)
        if started is not None:
            started.set_result(bound)
        await stopping.wait()
        log.info("stopping: closing %d connection(s)", len(open_writers))
    finally:
        target.unlink(missing_ok=True)
        server.close()
        for writer in list(open_writers):
            writer.close()  # their readers see EOF and their handlers finish
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)



def serve_forever(shared: Shared, host: str, port: int, allow_remote: bool = False,
                  token_file: str | None = None) -> int:
    """Run the daemon until SIGTERM or SIGINT; the exit status for the CLI."""
    try:
        asyncio.run(serve(shared, host, port, allow_remote=allow_remote, token_file=token_file))
    except KeyboardInterrupt:
        pass  # a second Ctrl-C while stopping
    except auth.AuthError as exc:
        print(f"dgls: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"dgls: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    finally:
        shared.close()
    return 0
