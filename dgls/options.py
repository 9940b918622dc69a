"""Typed settings, read from `initializationOptions` and `workspace/didChangeConfiguration`.

Clients send camelCase keys under a "dgls" section (or the section's content directly); unknown
keys and values of the wrong type are ignored with a warning instead of failing the session.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace
from typing import Any

SECTION = "dgls"
LOG_LEVELS = {"off": logging.CRITICAL + 10, "error": logging.ERROR, "warning": logging.WARNING,
              "info": logging.INFO, "debug": logging.DEBUG}

# camelCase (as clients send it) -> field name, expected type(s), bounds for numbers.
_KEYS: dict[str, tuple[str, tuple[type, ...], tuple[int, int] | None]] = {
    "model": ("model", (str,), None),
    "device": ("device", (str,), None),
    "dtype": ("dtype", (str,), None),
    "maxSpanTokens": ("max_span_tokens", (int,), (1, 4096)),
    "steps": ("steps", (int,), (1, 1024)),
    "debounceMs": ("debounce_ms", (int, float), (0, 10_000)),
    "logLevel": ("log_level", (str,), None),
    "engineUrl": ("engine_url", (str,), None),
    "engineApiKeyEnv": ("engine_api_key_env", (str,), None),
    "engineAllowHttp": ("engine_allow_http", (bool,), None),
    "engineTimeout": ("engine_timeout", (int, float), (0.1, 3600)),
    "quantize": ("quantize", (str,), None),
    "infillLayout": ("infill_layout", (str,), None),
    "threads": ("threads", (int,), (0, 256)),
    "deadlineMs": ("deadline_ms", (int, float), (1, 600_000)),
    "commandDeadlineMs": ("command_deadline_ms", (int, float), (1, 3_600_000)),
}
CHOICES = {"quantize": ("none", "4bit", "8bit"), "infill_layout": ("auto", "A", "B")}


@dataclass(frozen=True)
class RemoteOptions:
    """A vLLM (OpenAI-compatible) server that runs the model instead of this process.

    `api_key_env` names the environment variable holding the bearer token (the token itself is
    never stored in settings); `allow_http` permits plain http to a host that is not loopback;
    `timeout` is how long to wait, in seconds, for the server's next bytes.
    """

    url: str
    api_key_env: str | None = None
    allow_http: bool = False
    timeout: float = 30.0

    @property
    def shown_url(self) -> str:
        """The URL for messages and logs, without any user:password part."""
        scheme, sep, rest = self.url.partition("://")
        host, slash, path = rest.partition("/")
        return f"{scheme}{sep}{host.rpartition('@')[2]}{slash}{path}" if sep else self.url


@dataclass(frozen=True)
class Settings:
    """One client's settings; `model`/`device`/`dtype` select the shared engine (None: default)."""

    model: str | None = None
    device: str | None = None
    dtype: str | None = None
    max_span_tokens: int = 192  # a user cap; the engine also caps at 3/4 of its canvas
    steps: int | None = None
    debounce_ms: float = 150
    log_level: str = "info"
    quantize: str | None = None  # "4bit" / "8bit" (engine/quantize.py); None: the load dtype
    infill_layout: str = "auto"  # "A", "B" or "auto" (the checkpoint's; engine/layout_b.py)
    threads: int = 0  # CPU threads for the engine; 0: measured default (dgls.threads)
    deadline_ms: float = 3000  # inline completion and completion answer by then (best draft or nothing)
    command_deadline_ms: float = 15000  # the same for code actions' commands
    engine_url: str | None = None  # a vLLM server's base URL: the model runs there
    engine_api_key_env: str | None = None
    engine_allow_http: bool = False
    engine_timeout: float = 30.0

    @property
    def remote(self) -> RemoteOptions | None:
        """The server to send infills to, or None for the model in this process."""
        if not self.engine_url:
            return None
        return RemoteOptions(self.engine_url, self.engine_api_key_env or None, self.engine_allow_http,
                             float(self.engine_timeout))

    @property
    def engine_key(self) -> tuple[str | None, str | None, str | None, str | None, RemoteOptions | None]:
        """What identifies a loaded engine: changing any of these reloads it. With a remote
        server, `model` names the model it serves (None: the first one it lists)."""
        return (self.model, self.device, self.dtype, self.quantize, self.remote)

    def with_engine_key(self, key: tuple) -> Settings:
        """These settings pointed at the engine `key` identifies (a client joining the daemon's engine)."""
        model, device, dtype, quantize, remote = key
        fields_ = {"engine_url": None} if remote is None else {
            "engine_url": remote.url, "engine_api_key_env": remote.api_key_env,
            "engine_allow_http": remote.allow_http, "engine_timeout": remote.timeout}
        return replace(self, model=model, device=device, dtype=dtype, quantize=quantize, **fields_)

    @property
    def log_level_no(self) -> int:
        return LOG_LEVELS.get(self.log_level, logging.INFO)

    def merged(self, data: Any) -> tuple[Settings, list[str]]:
        """These settings updated from a client payload; also returns one warning per bad entry."""
        section = section_of(data)
        if section is None:
            return self, []
        changes: dict[str, Any] = {}
        problems: list[str] = []
        for key, value in section.items():
            spec = _KEYS.get(key)
            if spec is None:
                problems.append(f"unknown setting dgls.{key} (ignored)")
                continue
            name, kinds, bounds = spec
            if value is None or value == "":
                changes[name] = _default(name)
                continue
            if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
                problems.append(f"dgls.{key} should be {kinds[0].__name__}, got {value!r} (ignored)")
                continue
            if bounds is not None and not bounds[0] <= value <= bounds[1]:
                problems.append(f"dgls.{key}={value!r} is outside {bounds[0]}..{bounds[1]} (ignored)")
                continue
            if name == "log_level" and value.lower() not in LOG_LEVELS:
                problems.append(f"dgls.logLevel must be one of {', '.join(LOG_LEVELS)} (ignored)")
                continue
            if name in CHOICES:
                value = _choice(name, value)
                if value is None:
                    problems.append(f"dgls.{key} must be one of {', '.join(CHOICES[name])} (ignored)")
                    continue
            changes[name] = value.lower() if name == "log_level" else value
        return replace(self, **changes), problems


def section_of(data: Any) -> dict[str, Any] | None:
    """The "dgls" section of a settings payload, whether nested under "dgls" or sent bare."""
    if not isinstance(data, dict):
        return None
    inner = data.get(SECTION)
    if isinstance(inner, dict):
        return inner
    if any(key in _KEYS for key in data):
        return data
    return None


def _choice(name: str, value: str) -> str | None:
    """A CHOICES value in its canonical spelling ("none" quantization is None), or None if invalid."""
    for choice in CHOICES[name]:
        if value.strip().lower() == choice.lower():
            return None if (name, choice) == ("quantize", "none") else choice
    return None


def _default(name: str) -> Any:
    for f in fields(Settings):
        if f.name == name:
            return f.default
    raise KeyError(name)
