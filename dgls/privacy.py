"""No document text in logs below debug level.

dgls's own log calls name documents by URI and never format their text. pygls' error records do:
a failing notification is logged with its params (a didOpen's whole file), a message that does
not deserialize with a traceback whose last line may quote a value. At the default levels this
filter keeps such a record's template and short plain arguments (ids, method names) and hides the
rest, including the exception text; `--log-level debug` shows everything.
"""

from __future__ import annotations

import logging

HIDDEN = "<hidden: --log-level debug shows it>"
MAX_PLAIN_ARG = 80


def _plain(arg: object) -> bool:
    """Short ids and method names pass; params objects, dicts, tracebacks do not."""
    if isinstance(arg, bool) or isinstance(arg, (int, float)) or arg is None:
        return True
    return isinstance(arg, str) and len(arg) <= MAX_PLAIN_ARG and "\n" not in arg and " " not in arg


class HideMessageData(logging.Filter):
    """Strips what may carry document text from records of the loggers it is told to watch."""

    def __init__(self, watched: tuple[str, ...] = ("pygls",)) -> None:
        super().__init__()
        self.watched = watched

    def filter(self, record: logging.LogRecord) -> bool:
        if not any(record.name == w or record.name.startswith(f"{w}.") for w in self.watched):
            return True
        if isinstance(record.args, tuple):
            record.args = tuple(a if _plain(a) else HIDDEN for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: v if _plain(v) else HIDDEN for k, v in record.args.items()}
        if record.exc_info and record.exc_info[0] is not None:
            record.msg = f"{record.msg} ({record.exc_info[0].__name__}; {HIDDEN})"
            record.exc_info, record.exc_text = None, None
        return True


def describe(error: BaseException, debug: bool = False) -> str:
    """An error for the log: its own message when it is one of the protocol's (built from the
    message's structure, not its values), else only its type unless debugging."""
    from json import JSONDecodeError

    from pygls.exceptions import JsonRpcException

    if debug or isinstance(error, (JsonRpcException, JSONDecodeError)):
        return str(error) or type(error).__name__
    return f"{type(error).__name__} ({HIDDEN})"
