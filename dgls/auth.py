"""Who may use a TCP daemon: the holder of a random token the daemon writes where only its user
can read it.

The daemon serves source code and applies edits, so "any local process that connects" is too
many. At start it draws a token, writes it (mode 0600) to `daemon-<port>.token` in the user's
runtime directory (`$XDG_RUNTIME_DIR/dgls/`, else a private `dgls-<uid>` directory in the temp
directory, mode 0700, checked to be ours), and requires it as the first line a client sends:

    DGLS-TOKEN <64 hex digits>\\r\\n

before any LSP message. A connection whose first line is anything else is closed unread.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import stat
import tempfile
from pathlib import Path

HANDSHAKE = b"DGLS-TOKEN "
TOKEN_BYTES = 32
HANDSHAKE_TIMEOUT_S = 10.0
MAX_HANDSHAKE_BYTES = len(HANDSHAKE) + 2 * TOKEN_BYTES + 2


class AuthError(Exception):
    """The token or its directory cannot be used; the message says what to fix."""


def runtime_dir() -> Path:
    """The user's private directory for daemon tokens, created 0700 if missing, checked if present."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        path = Path(base) / "dgls"
    else:
        path = Path(tempfile.gettempdir()) / f"dgls-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise AuthError(f"cannot create {path}: {exc}") from None
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise AuthError(f"{path} is not a directory (a symlink?); remove it")
    if info.st_uid != os.getuid():
        raise AuthError(f"{path} belongs to another user; remove it or set XDG_RUNTIME_DIR")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def token_path(port: int, directory: Path | None = None) -> Path:
    """Where the daemon on `port` keeps its token."""
    return (directory or runtime_dir()) / f"daemon-{port}.token"


def new_token() -> str:
    return secrets.token_hex(TOKEN_BYTES)


def write_token(path: Path, token: str) -> None:
    """Write the token readable by its owner only; atomically, so no reader sees half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(tmp, flags, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, f"{token}\n".encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise AuthError(f"cannot write the token file {path}: {exc}") from None


def read_token(path: Path) -> str:
    """The token in `path`, refusing a file others can read (someone may have swapped it)."""
    try:
        info = os.stat(path)
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise AuthError(f"no token file {path}: is `dgls serve --tcp` running on that port?") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AuthError(f"cannot read the token file {path}: {exc}") from None
    if info.st_mode & 0o077 or info.st_uid != os.getuid():
        raise AuthError(f"{path} is readable by others or not yours; restart the daemon to rewrite it")
    if len(text) != 2 * TOKEN_BYTES or any(c not in "0123456789abcdef" for c in text):
        raise AuthError(f"{path} does not hold a dgls token")
    return text


def handshake_line(token: str) -> bytes:
    """What a client sends first."""
    return HANDSHAKE + token.encode("ascii") + b"\r\n"


def check_handshake(line: bytes, token: str) -> bool:
    """True when `line` is the handshake for `token` (compared in constant time)."""
    if not line.startswith(HANDSHAKE) or len(line) > MAX_HANDSHAKE_BYTES:
        return False
    given = line[len(HANDSHAKE):].rstrip(b"\r\n")
    return hmac.compare_digest(given, token.encode("ascii"))


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the daemon on this machine (names other than localhost: no)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
