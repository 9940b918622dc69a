"""`dgls serve --tcp`: one daemon, several editors, one resident engine.

pygls' own TCP mode serves a single client; here every accepted connection gets its own
protocol instance (`create_server(shared)`: its own documents, settings and progress) over the
shared engine host and scheduler. Binds 127.0.0.1 unless told otherwise: the protocol carries
source code and has no authentication.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading

from pygls.io_ import run_async

from .connection import Shared
from .handlers import create_server

log = logging.getLogger("dgls.daemon")


async def handle_connection(shared: Shared, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Serve one editor until it disconnects or sends `exit`."""
    ls = create_server(shared)
    peer = writer.get_extra_info("peername")
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


async def serve(shared: Shared, host: str, port: int, started: asyncio.Future | None = None) -> None:
    """Accept editors forever; `started` receives the bound port (useful with port 0)."""
    shared.host.configure(shared.defaults.engine_key)  # load while the first editor starts up
    server = await asyncio.start_server(lambda r, w: handle_connection(shared, r, w), host, port, limit=2**20)
    bound = server.sockets[0].getsockname()[1]
    if host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("listening on %s: anyone who can reach this address can read and edit your code", host)
    print(f"dgls: listening on {host}:{bound}", file=sys.stderr, flush=True)
    if started is not None:
        started.set_result(bound)
    async with server:
        await server.serve_forever()


def serve_forever(shared: Shared, host: str, port: int) -> int:
    """Run the daemon until interrupted; the exit status for the CLI."""
    try:
        asyncio.run(serve(shared, host, port))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"dgls: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    finally:
        shared.close()
    return 0
