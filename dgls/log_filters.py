"""Keep the server's stderr log readable when clients misbehave.

pygls logs every failed request with a full traceback, so a client sending malformed messages
writes tens of lines per message (the fuzz section counted ~2,500 tracebacks for 10,000
messages). The failure was already answered to the client with its error; below `debug` the log
keeps pygls' one-line summary and drops the traceback.
"""

from __future__ import annotations

import logging


class OneLinePygls(logging.Filter):
    """pygls' records become one line of at most MAX_CHARS: the message's first line and the
    exception's type (pygls also pastes tracebacks and whole messages into the text itself)."""

    MAX_CHARS = 300

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("pygls"):
            return True
        text = record.getMessage().splitlines()[0] if record.getMessage() else ""
        if record.exc_info and record.exc_info[1] is not None:
            text = f"{text}: {type(record.exc_info[1]).__name__}"
        if len(text) > self.MAX_CHARS:
            text = text[: self.MAX_CHARS] + "..."
        record.msg, record.args, record.exc_info, record.exc_text = text, (), None, None
        return True
