"""RemoteEngine: the engine surface the pipeline uses, answered by a vLLM DiffusionGemma server.

Planning, post-processing, parse repair, supersession, cancellation and versioned edits stay in
dgls; only the model call goes to the server, as an OpenAI-compatible chat completion
(`/v1/chat/completions`) whose one user message is layout B's prompt (dgls.engine.infill_prompt):
vLLM rejects `suffix` on `/v1/completions`, so the code after the span travels inside the prompt,
and the server applies the model's own chat template. Replies stream (server-sent events), so
`req.on_draft` sees the text as it arrives (DiffusionGemma commits whole canvases, so a short
infill usually arrives in one piece).

What the server cannot do: re-mask tokens of a draft (a parse repair is answered with nothing,
and the pipeline's next candidate, a fresh draft, goes out instead) and seed its canvas with the
old text of a rewrite (the old text is shown in the prompt instead). Its denoising steps and
temperature schedule are the server's (`--diffusion-config`, generation config).

A failure (refused connection, timeout, HTTP error, rate limit, malformed or truncated reply) is
one line: logged, reported through `on_problem` (the server's status), and answered as an empty
result with status "error" -- or raised, for the command line (`raise_errors`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from dgls.engine import EngineError, InfillRequest, InfillResult, InfillStats
from dgls.engine.infill_prompt import HOLE, infill_messages, trim_context

from .options import RemoteOptions
from .remote_http import Cancelled, Endpoint, Pool, RemoteError, exchange, read_json, sse_events

log = logging.getLogger(__name__)

CHAT_PATH, MODELS_PATH = "/v1/chat/completions", "/v1/models"
CANVAS_LENGTH = 256  # the release's canvas (vLLM --diffusion-config canvas_length)
MAX_SPAN_TOKENS = CANVAS_LENGTH * 3 // 4  # as the local engine: a quarter of the canvas for the suffix
CONTEXT_CHARS = 24_000  # code around the span sent per request (~6-8k tokens: a fast prefill, a small bill)
REPLY_SLACK_TOKENS = 16  # room for a fence line or a restated line start, removed afterwards
CONCURRENCY = 8  # requests in flight at once; vLLM batches up to --max-num-seqs and queues the rest


class RemoteEngine:
    """An infill engine whose model runs on a vLLM server; any number of threads may call `infill`."""

    def __init__(self, options: RemoteOptions, model: str | None = None, raise_errors: bool = False,
                 environ: Mapping[str, str] | None = None, context_chars: int = CONTEXT_CHARS) -> None:
        env = os.environ if environ is None else environ
        token = None
        if options.api_key_env:
            token = env.get(options.api_key_env)
            if not token:
                raise EngineError(f"the environment variable {options.api_key_env} (engineApiKeyEnv) that "
                                  "should hold the engine server's API key is not set")
        self.options = options
        self.endpoint = Endpoint.parse(options.url, token=token, allow_http=options.allow_http,
                                       timeout=options.timeout)
        self.model_name = model
        self.raise_errors = raise_errors
        self.context_chars = context_chars
        self.concurrency = CONCURRENCY
        self.device = "remote"  # not "cpu": dgls.threads leaves torch alone (and unimported) for it
        self.canvas_length = CANVAS_LENGTH
        self.max_span_tokens = MAX_SPAN_TOKENS
        self.max_model_len: int | None = None
        self.on_problem: Callable[[str | None], None] | None = None
        self._lock = threading.Lock()
        self._pool = Pool(CONCURRENCY)  # keep-alive connections: no new TLS handshake per keystroke

    # ----- the engine surface ---------------------------------------------------------------------
    def info(self) -> dict:
        return {"engine": "remote", "url": self.endpoint.where + self.endpoint.base_path,
                "model": self.model_name, "max_model_len": self.max_model_len,
                "canvas_length": self.canvas_length, "max_span_tokens": self.max_span_tokens,
                "concurrency": self.concurrency, "api_key": bool(self.endpoint.token)}

    def count_tokens(self, text: str) -> int:
        """An estimate (about 3.5 characters per token of code): the tokenizer lives on the server."""
        return (len(text) * 2 + 6) // 7

    def forget(self, doc_id: str) -> None:
        """Nothing to drop: the server keeps its own prefix cache."""

    def close(self) -> None:
        """Close the idle keep-alive connections."""
        self._pool.close()

    def served_model(self, cancel: threading.Event | None = None) -> str:
        """The model to ask for: the one named in the settings, else the first one `/v1/models` lists."""
        with self._lock:
            if self.model_name:
                return self.model_name
        with exchange(self.endpoint, "GET", MODELS_PATH, None, cancel or threading.Event(), self._pool) as response:
            data = read_json(response, self.endpoint, cancel or threading.Event())
        models = data.get("data") if isinstance(data, dict) else None
        if not isinstance(models, list) or not models or not isinstance(models[0], dict) or "id" not in models[0]:
            raise RemoteError(f"the engine server at {self.endpoint.where} lists no model at {MODELS_PATH}")
        with self._lock:
            self.model_name = str(models[0]["id"])
            length = models[0].get("max_model_len")
            self.max_model_len = length if isinstance(length, int) else None
            return self.model_name

    def infill(self, req: InfillRequest, cancel: threading.Event | None = None) -> InfillResult:
        """One infill from the server. Blocks; status "cancelled" when `cancel` is set, "error" (with
        the reason logged and reported) when the server gives no usable answer.

        At `req.deadline` the request is closed and the text received so far comes back with
        status "deadline". Stats: `encode_ms` is the time to the first text, `denoise_ms` the time waiting on the
        server (request sent to last byte), `total_ms` the whole call; tokens are the server's count.
        """
        cancel = cancel or threading.Event()
        started = time.perf_counter()
        stats = InfillStats(head="remote", canvas_length=self.canvas_length)
        if req.remask is not None:
            return InfillResult(text="", stats=stats)  # the server cannot re-mask part of a draft
        stop, parts = _Stop(cancel, req.deadline), []
        try:
            body = self.request_body(req, self.served_model(stop))
            text, usage = self._complete(body, req, stop, stats, parts)
        except Cancelled:  # the connection is closed; at a deadline the text so far is the draft
            stats.total_ms = _ms(started)
            if cancel.is_set():
                return InfillResult(text="", status="cancelled", stats=stats)
            return InfillResult(text=clean_reply("".join(parts), req.prefix, req.single_line), status="deadline",
                                stats=stats)
        except RemoteError as exc:
            stats.total_ms = _ms(started)
            if self.raise_errors:  # the caller reports it
                raise
            log.warning("remote infill failed: %s", exc)
            self._report(str(exc))
            return InfillResult(text="", status="error", stats=stats)
        self._report(None)
        stats.prefix_tokens = int(usage.get("prompt_tokens") or 0)
        stats.span_tokens = int(usage.get("completion_tokens") or 0)
        stats.span_budget = body["max_tokens"]
        stats.total_ms = _ms(started)
        stats.post_ms = max(0.0, stats.total_ms - stats.denoise_ms)
        return InfillResult(text=text, stats=stats)

    # ----- the request -----------------------------------------------------------------------------
    def request_body(self, req: InfillRequest, model: str) -> dict[str, Any]:
        """The chat completion request for `req`, sampling parameters spelled out.

        `max_tokens` is the planner's span budget plus a little slack (a reply cut short is
        post-processed like any other); `top_p` 1.0 leaves the canvas its whole vocabulary; the
        seed is the pipeline's. Thinking is switched off: an infill wants the code, not reasoning.
        """
        room = self.context_chars
        if self.max_model_len:
            room = min(room, max(1_000, (self.max_model_len - CANVAS_LENGTH - 256) * 3))
        prefix, suffix = trim_context(req.prefix, req.suffix, room)
        budget = max(1, min(req.max_tokens or (16 if req.single_line else 32), self.max_span_tokens))
        messages = infill_messages(prefix, suffix, _language_name(req.language), req.single_line,
                                   replacing=req.span if req.seed_with_span else "")
        body: dict[str, Any] = {
            "model": model, "messages": messages, "stream": True, "stream_options": {"include_usage": True},
            "max_tokens": budget + REPLY_SLACK_TOKENS, "top_p": 1.0, "n": 1,
            "chat_template_kwargs": {"enable_thinking": False},
        }
        if req.seed is not None:
            body["seed"] = req.seed
        return body

    def _complete(self, body: dict, req: InfillRequest, cancel: Any, stats: InfillStats,
                  parts: list[str]) -> tuple[str, dict]:
        """Send the request and gather the reply (streamed or whole) into `parts`; returns (clean
        text, usage)."""
        sent = time.perf_counter()
        usage: dict = {}
        with exchange(self.endpoint, "POST", CHAT_PATH, body, cancel, self._pool) as response:
            if "text/event-stream" not in (response.getheader("Content-Type") or ""):
                data = read_json(response, self.endpoint, cancel)  # a server that does not stream
                parts.append(self._message_text(data))
                usage = data.get("usage") or {} if isinstance(data, dict) else {}
            else:
                for event in sse_events(response, self.endpoint, cancel):
                    delta, event_usage = self._delta(event)
                    usage = event_usage or usage
                    if delta:
                        if not parts:
                            stats.encode_ms = _ms(sent)  # time to the first text
                        parts.append(delta)
                        if req.on_draft is not None:
                            req.on_draft(clean_reply("".join(parts), req.prefix, req.single_line))
        stats.denoise_ms = _ms(sent)  # waiting on the server, first byte to last
        return clean_reply("".join(parts), req.prefix, req.single_line), usage if isinstance(usage, dict) else {}

    def _delta(self, event: Any) -> tuple[str, dict | None]:
        """The text and usage of one stream chunk; a chunk of another shape is a malformed reply."""
        if not isinstance(event, dict) or not isinstance(event.get("choices"), list):
            raise self._malformed("a stream chunk without choices")
        usage = event.get("usage") if isinstance(event.get("usage"), dict) else None
        if not event["choices"]:
            return "", usage  # the closing usage chunk
        choice = event["choices"][0]
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            raise self._malformed("a stream chunk without a delta")
        if choice.get("finish_reason") in ("abort", "error"):
            raise RemoteError(f"the engine server at {self.endpoint.where} aborted the reply "
                              f"(finish_reason {choice['finish_reason']})")
        content = delta.get("content")
        return (content if isinstance(content, str) else ""), usage

    def _message_text(self, data: Any) -> str:
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise self._malformed("a reply without choices[0].message") from None
        return content if isinstance(content, str) else ""

    def _malformed(self, what: str) -> RemoteError:
        return RemoteError(f"the engine server at {self.endpoint.where} sent a malformed reply ({what})")

    def _report(self, problem: str | None) -> None:
        if self.on_problem is not None:
            try:
                self.on_problem(problem)
            except Exception:
                log.debug("on_problem failed", exc_info=True)


class _Stop:
    """The caller's cancel event and the request's deadline as one event (`is_set`, `wait`), for
    the HTTP layer: either one closes the connection."""

    def __init__(self, cancel: threading.Event, deadline: float | None) -> None:
        self.cancel, self.deadline = cancel, deadline

    def is_set(self) -> bool:
        return self.cancel.is_set() or (self.deadline is not None and time.monotonic() >= self.deadline)

    def wait(self, timeout: float) -> bool:
        if self.deadline is not None:
            timeout = max(0.0, min(timeout, self.deadline - time.monotonic()))
        return self.cancel.wait(timeout) or self.is_set()


def clean_reply(text: str, prefix: str, single_line: bool) -> str:
    """The code in a chat reply: without a Markdown fence, a thinking channel, the gap marker or a
    restatement of the line before the cursor; one line for a single-line span."""
    if "<channel|>" in text:  # a thinking channel the server did not strip
        text = text.rsplit("<channel|>", 1)[1]
    text = text.replace(HOLE, "")
    stripped = text.lstrip()
    if stripped.startswith("```"):
        body = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        text = body.split("```", 1)[0]
    line_before = prefix[prefix.rfind("\n") + 1:]
    head = line_before.strip()
    if len(head) >= 2 and text.lstrip().startswith(head):
        rest = text.lstrip()[len(head):]
        text = rest if not line_before.endswith((" ", "\t")) else rest.lstrip(" \t")
    if single_line:
        text = text.lstrip("\n").split("\n", 1)[0]
    return text


def _language_name(language_id: str | None) -> str:
    if not language_id:
        return "source code"
    from .languages import ts_language_name

    return ts_language_name(language_id) or language_id


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000
