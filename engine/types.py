"""The engine's public request/result types and errors (no torch, no model: cheap to import)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field


class EngineError(Exception):
    """An error a user can act on; the message is one line that says what is wrong and what to do."""


class ModelLoadError(EngineError):
    """The model could not be loaded (missing, not DiffusionGemma, corrupt weights...)."""


@dataclass
class InfillRequest:
    """One infill: the text before the span, the text after it, and the span itself.

    `span` is the selected text to rewrite ("" for an insertion at a cursor). `doc_id` keys the
    per-document prefix KV cache. `max_tokens` is the span budget chosen by the planner (None:
    as much as the canvas holds); the engine only clamps it to its capacity. `single_line` says
    the planner wants one line: prompt layouts tell the model so, and layout A stops denoising
    once the first line is decided (`denoise.first_line_settled`) and returns only that line. `on_step(n)` hears each
    finished denoising step (on the worker thread; nothing is decoded for it).
    `remask` (character ranges inside `span`) repairs a draft: the span's tokens outside those
    ranges stay clamped, the tokens touching them (and the free slots after) are denoised again.
    `deadline` (a `time.monotonic()` value) stops the work there: the result then has status
    "deadline" and carries the draft of the last finished step ("" if none finished).
    """

    prefix: str
    suffix: str = ""
    span: str = ""
    doc_id: str | None = None
    max_tokens: int | None = None
    steps: int | None = None
    seed: int | None = None
    single_line: bool = False
    seed_with_span: bool = False
    on_step: Callable[[int], None] | None = None
    remask: list[tuple[int, int]] | None = None
    layout: str | None = None  # "A", "B" or None/"auto" (the checkpoint's; see layout_b.py)
    language: str = ""  # the language's name, for layout B's instruction
    deadline: float | None = None


@dataclass
class InfillStats:
    """Where the time went and how much work was done."""

    steps: int = 0
    decoder_forwards: int = 0
    tokens_per_forward: float = 0.0
    span_budget: int = 0
    span_tokens: int = 0
    canvas_length: int = 0
    prefix_tokens: int = 0
    prefix_tokens_encoded: int = 0
    prefix_tokens_reused: int = 0
    prefix_cut_lines: int = 0
    suffix_tokens: int = 0
    suffix_cut: bool = False
    encode_ms: float = 0.0
    denoise_ms: float = 0.0
    post_ms: float = 0.0
    total_ms: float = 0.0
    queue_ms: float = 0.0
    head: str = ""
    layout: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class InfillResult:
    """The infill text with per-token confidence; `status` is "ok", "cancelled" (the best draft so
    far) or "deadline" (cut by the request's deadline: the best draft so far)."""

    text: str
    status: str = "ok"
    confidence: list[float] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    stats: InfillStats = field(default_factory=InfillStats)

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "status": self.status,
            "confidence": self.confidence,
            "tokens": self.tokens,
            "stats": self.stats.to_dict(),
        }
