"""Which connection a log record belongs to, so each editor receives only its own log messages.

A daemon serves several editors in one process, and Python's logging has one tree of handlers:
every connection's window/logMessage handler sees every record. The record's owner is the
connection whose work emitted it, kept in a context variable: set for the connection's event-loop
task (handlers and their tasks inherit it), for callbacks posted to that loop, and for the
worker while it runs that connection's job. Records with no owner (the shared engine loading,
the daemon itself) go to every connection.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Hashable, Iterator
from contextlib import contextmanager

CLIENT: contextvars.ContextVar[Hashable | None] = contextvars.ContextVar("dgls_client", default=None)


def context_for(client: Hashable) -> contextvars.Context:
    """A context owned by `client`, for `loop.call_soon_threadsafe(fn, context=...)`."""
    ctx = contextvars.copy_context()
    ctx.run(CLIENT.set, client)
    return ctx


@contextmanager
def owned_by(client: Hashable) -> Iterator[None]:
    """Records emitted inside belong to `client` (the worker running one of its jobs)."""
    token = CLIENT.set(client)
    try:
        yield
    finally:
        CLIENT.reset(token)


class OwnerFilter(logging.Filter):
    """Passes records that belong to `client` or to nobody."""

    def __init__(self, client: Hashable) -> None:
        super().__init__()
        self.client = client

    def filter(self, record: logging.LogRecord) -> bool:
        owner = CLIENT.get()
        return owner is None or owner == self.client
