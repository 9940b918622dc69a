"""Engine: (prefix, span, suffix) -> infill, thread-safe, cancellable, with a per-document prefix cache."""

from __future__ import annotations

import functools
import threading
import time

import torch
from transformers import DynamicCache

from ..kernels.diffusion_head import triton_available
from .canvas import (
    CanvasLayout,
    SpecialTokens,
    build_canvas,
    encoder_ids,
    line_end_ids,
    span_tokens,
    split_anchor,
    token_shift,
)
from .denoise import CanvasSpec, DenoiseSettings, SamplerRules, denoise, fused_step, reference_step
from .fast_decoder import FastDecoder, unsupported_reason
from .layout_b import infill_b, resolve_layout
from .loading import load_model
from .prefill import KeysOnlyPrefill
from .prefix_cache import PrefixCache, PrefixEntry
from .prefix_window import fit_prefix
from .stop import StopCheck, Stopped
from .types import EngineError, InfillRequest, InfillResult, InfillStats

MIN_SUFFIX_ROOM = 8
# Suffix tokens carried in the canvas after the span ("auto": this many on the CPU, the whole
# canvas on a GPU). On the CPU every decoder step costs in proportion to the canvas, and the
# embedded model's held-out span loss is the same with 16 suffix tokens as with its whole
# 64-token canvas (2.23 vs 2.28 nats at t=0.5), so a one-line span denoises 32 tokens, not 64.
# On a GPU a wider canvas is nearly free and a large model can use the right context.
CPU_SUFFIX_WINDOW = 16
REPAIR_SLACK = 4  # extra free slots after each re-masked run
PREFILL_CHUNK = 2048  # prefix tokens per encoder call (bounds the attention mask's memory)
SUFFIX_CHARS_PER_TOKEN = 8  # tokenize at most this many chars per canvas slot of suffix
HEADS = ("auto", "reference", "fused", "chunked", "triton")


# Truncated soft embedding (kernels/diffusion_head.py) by default only for large vocabularies:
# on held-out eval items (50 per set) eps 0.01 left exact match (0/150) and similarity (within
# 0.2 points) unchanged, it made the head 1.72x faster at V=262,144, and at V=8,192 it saved
# nothing (rows the top-64 does not cover take a second pass).
TRUNCATE_SOFT_FROM_VOCAB = 65_536
DEFAULT_SOFT_EPS = 0.01


def default_soft_eps(vocab_size: int) -> float:
    return DEFAULT_SOFT_EPS if vocab_size >= TRUNCATE_SOFT_FROM_VOCAB else 0.0


class Engine:
    """The resident model. One request denoises at a time; any thread may call `infill`.
    `cache` (the per-document PrefixCache) is public: benchmarks seed it, tests inspect it."""

    def __init__(self, model: str | None = None, device: str | None = None, dtype: str | None = None,
                 cache_mb: float = 256.0, head: str = "auto", max_prefix_tokens: int | None = None,
                 soft_eps: float | None = None, suffix_window: int | str | None = "auto",
                 fast_decoder: bool = True, layout: str | None = "auto", quantize: str | None = None,
                 loaded=None):
        if head not in HEADS:
            raise EngineError(f"unknown head '{head}'; use one of {', '.join(HEADS)}")
        # `loaded` (a loading.LoadedModel) serves a model built in memory, e.g. the release-shapes bench
        loaded = loaded or load_model(model, device=device, dtype=dtype, quantize=quantize)
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.path, self.name = loaded.path, loaded.name
        self.device, self.dtype, self.quantize = loaded.device, loaded.dtype, loaded.quantize
        self.config = self.model.config
        self.text_config = self.config.get_text_config()
        self.special = SpecialTokens.from_config(self.config)
        self.layout = resolve_layout(layout, self.config, self.tokenizer, self.name)  # "A" or "B" (layout_b.py)
        self.token_shift = token_shift(self.config)
        self.vocab_size = int(self.text_config.vocab_size)
        self.canvas_length = int(self.config.canvas_length or 256)
        context = int(self.text_config.max_position_embeddings) - self.canvas_length
        self.max_prefix_tokens = min(context, max_prefix_tokens) if max_prefix_tokens else context
        # At most 3/4 of the canvas for the span, so the code after it stays in view: 48 of the
        # embedded model's 64 (its largest trained budget), 192 of the release's 256.
        self.max_span_tokens = max(1, min(self.canvas_length - MIN_SUFFIX_ROOM, self.canvas_length * 3 // 4))
        self.cache = PrefixCache(cache_mb)
        self.head = head
        self.soft_eps = default_soft_eps(self.vocab_size) if soft_eps is None else soft_eps
        if suffix_window == "auto":
            suffix_window = CPU_SUFFIX_WINDOW if self.device == "cpu" else None
        if suffix_window is not None and (not isinstance(suffix_window, int) or suffix_window < 1):
            raise EngineError(f"suffix_window must be a number of tokens >= 1, 'auto' or None, got {suffix_window!r}")
        self.suffix_window = suffix_window
        self._lock = threading.Lock()
        # The lean CPU decoder forward (same weights, fewer ops) wherever it applies.
        lean = fast_decoder and self.quantize is None and unsupported_reason(self.model) is None
        self._fast_decoder = FastDecoder(self.model) if lean else None
        self._prefill = KeysOnlyPrefill(self.model)  # the encoder for its keys/values only
        self._line_end_ids: torch.BoolTensor | None = None

    # ----- public API -------------------------------------------------------------------------

    def info(self) -> dict:
        params = sum(p.numel() for p in self.model.parameters())
        return {"model": self.name, "path": str(self.path), "device": self.device, "dtype": self.dtype,
                "parameters": params, "vocab_size": self.vocab_size, "canvas_length": self.canvas_length,
                "filler_token": self.special.fill is not None, "token_shift": self.token_shift, "head": self._head_name(),
                "max_prefix_tokens": self.max_prefix_tokens, "max_span_tokens": self.max_span_tokens,
                "suffix_window": self.suffix_window, "layout": self.layout, "quantize": self.quantize,
                "soft_eps": self.soft_eps, "decoder": "lean" if self._fast_decoder is not None else "transformers"}

    def forget(self, doc_id: str) -> None:
        self.cache.forget(doc_id)

    def close(self) -> None:
        self.cache.clear()
        self._prefill.close()

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text))

    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text`, no special tokens."""
        return self._encode(text)

    def prompt_ids(self, prefix: str) -> list[int]:
        """The encoder prompt the engine builds for `prefix` (bos, then the prefix windowed to the
        context), before any token-shift split: what stock `generate()` would be given."""
        return encoder_ids(self._fit_prefix(prefix)[0], self.special)

    def infill(self, req: InfillRequest, cancel: threading.Event | None = None) -> InfillResult:
        """Infill one span. Blocks; returns status "cancelled" (with the best draft) when `cancel` is
        set, "deadline" (the same) when `req.deadline` passes first."""
        queued = time.perf_counter()
        stop = StopCheck(cancel, req.deadline)
        while not self._lock.acquire(timeout=0.02):
            if stop.is_set():
                return InfillResult(text="", status=stop.reason(), stats=InfillStats(queue_ms=_ms(queued)))
        try:
            stats = InfillStats(queue_ms=_ms(queued), head=self._head_name())
            # torchao's quantized experts cannot be indexed under inference_mode (quantize.py)
            with torch.no_grad() if self.quantize else torch.inference_mode():
                return self._infill(req, stop, stats)
        except Stopped:
            return InfillResult(text="", status=stop.reason(), stats=InfillStats(queue_ms=_ms(queued)))
        finally:
            self._lock.release()

    # ----- the pieces -------------------------------------------------------------------------

    def _head_name(self) -> str:
        """The head that runs: "fused"/"auto" mean Triton on CUDA (when it imports), chunked torch elsewhere."""
        if self.head not in ("auto", "fused"):
            return self.head
        return "triton" if self.device.startswith("cuda") and triton_available() else "chunked"

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _fit_prefix(self, prefix: str) -> tuple[list[int], int]:
        room = self.max_prefix_tokens - (1 if self.special.bos is not None else 0)
        return fit_prefix(self.tokenizer, prefix, room)

    def _suffix_ids(self, suffix: str, room: int) -> list[int]:
        head = suffix[: room * SUFFIX_CHARS_PER_TOKEN + 1]
        ids = self._encode(head)
        if len(head) < len(suffix) and len(ids) <= room:
            ids = self._encode(suffix)  # a rare suffix of very long tokens: take it whole
        return ids

    def _budget(self, req: InfillRequest, span_ids: list[int]) -> int:
        wanted = req.max_tokens or self.max_span_tokens  # the planner decides; the engine clamps
        if span_ids:
            wanted = max(wanted, len(span_ids) + 4)
        return max(1, min(wanted, self.max_span_tokens))

    def _encode_prefix(self, ids: list[int], doc_id: str | None, stats: InfillStats,
                       stop: StopCheck | None = None) -> DynamicCache:
        """Encode the prompt, reusing the document's cached keys/values for the common token prefix."""
        entry, common = self.cache.lookup(doc_id, ids)
        if entry is not None and common == len(ids):
            keys = [k[:, :, :common] for k in entry.keys]
            values = [v[:, :, :common] for v in entry.values]
            stats.prefix_tokens_reused, stats.prefix_tokens_encoded = common, 0
            return DynamicCache(ddp_cache_data=list(zip(keys, values, strict=True)), config=self.text_config)
        cache = DynamicCache(config=self.text_config)
        for layer in cache.layers:
            if getattr(layer, "is_sliding", False):
                layer.activate_past_recording()  # keep full history so later requests can roll back
        if entry is not None and common > 0:
            for i, layer in enumerate(cache.layers):
                layer.update(entry.keys[i][:, :, :common], entry.values[i][:, :, :common])
        for begin in range(common, len(ids), PREFILL_CHUNK):
            if stop is not None and stop.is_set():  # keep what is encoded for the next request
                self._store_prefix(doc_id, ids[:begin], cache)
                raise Stopped()
            end = min(begin + PREFILL_CHUNK, len(ids))
            chunk = torch.tensor([ids[begin:end]], device=self.device)
            positions = torch.arange(begin, end, device=self.device).unsqueeze(0)
            self._prefill.encode(chunk, positions, cache)
        keys, values = self._store_prefix(doc_id, ids, cache)
        stats.prefix_tokens_reused, stats.prefix_tokens_encoded = common, len(ids) - common
        # The decoder's view: sliding layers see only their window, exactly as after generate()'s encoder.
        return DynamicCache(ddp_cache_data=list(zip(keys, values, strict=True)), config=self.text_config)

    def _store_prefix(self, doc_id: str | None, ids: list[int], cache: DynamicCache) -> tuple[list, list]:
        keys = [layer.keys for layer in cache.layers]
        values = [layer.values for layer in cache.layers]
        if ids:
            self.cache.store(doc_id, PrefixEntry(ids=list(ids), keys=keys, values=values))
        return keys, values

    @staticmethod
    def _stops_at_line_end(req: InfillRequest) -> bool:
        """A one-line insertion: not a repair (clamped tokens sit inside its span) nor a rewrite
        seeded with the old text (that line is 'decided' before the model has changed anything)."""
        return req.single_line and req.remask is None and not (req.span and req.seed_with_span)

    def _line_ends(self) -> torch.BoolTensor:
        """Which ids end a line (for one-line requests' early stop), decoded on first use."""
        if self._line_end_ids is None:
            self._line_end_ids = line_end_ids(self.tokenizer, self.vocab_size, self.special.fill).to(self.device)
        return self._line_end_ids

    def _step_fn(self):
        head = self._head_name()
        if head == "reference":
            return reference_step
        return functools.partial(fused_step, impl=head, soft_eps=self.soft_eps, decoder=self._fast_decoder)

    def _layout_for(self, req: InfillRequest) -> str:
        """The request's layout (None/"auto": the engine's); repairs always run in layout A."""
        if req.remask is not None:
            return "A"
        if req.layout in (None, "", "auto"):
            return self.layout
        return resolve_layout(req.layout, self.config, self.tokenizer, self.name)

    def _infill(self, req: InfillRequest, stop: StopCheck, stats: InfillStats) -> InfillResult:
        if self._layout_for(req) == "B":
            return infill_b(self, req, stop, stats, req.language)
        stats.layout = "A"
        start = time.perf_counter()
        prefix_ids, stats.prefix_cut_lines = self._fit_prefix(req.prefix)
        prompt = encoder_ids(prefix_ids, self.special) or [self.special.pad]
        anchor = None
        if self.token_shift:
            prompt, anchor_id = split_anchor(prompt)
            anchor = torch.tensor(anchor_id, device=self.device)
        span_ids = self._encode(req.span) if req.span else []
        budget = self._budget(req, span_ids)
        suffix_ids = self._suffix_ids(req.suffix, self.canvas_length - 1)
        layouts = self._layouts(budget, suffix_ids)
        stats.prefix_tokens = len(prompt)
        stats.canvas_length = length = int(layouts[0].ids.numel())

        cache = self._encode_prefix(prompt, req.doc_id, stats, stop)
        if len(layouts) > 1:
            cache.batch_repeat_interleave(len(layouts))
        t_enc = time.perf_counter()
        stats.encode_ms = (t_enc - start) * 1000

        rules = SamplerRules.build(DenoiseSettings.from_model(self.model, req.steps), self.vocab_size,
                                   banned=self.special.banned_in_span(), device=self.device,
                                   # in a repair the filler pads slack slots, it does not end the span
                                   fill=self.special.fill if req.remask is None else None,
                                   line_end=self._line_ends() if self._stops_at_line_end(req) else None)
        generator = torch.Generator(device=self.device).manual_seed(req.seed if req.seed is not None else 0)
        if req.remask is not None and req.span:
            layouts = [self._repair_layout(layouts[0], req.span, req.remask)]
        template = torch.stack([lay.ids for lay in layouts]).to(self.device)
        clamped = torch.stack([lay.clamped for lay in layouts]).to(self.device)
        seeded = None
        if req.span and req.seed_with_span:
            seeded = torch.stack([
                build_canvas(lay.span_slots, suffix_ids, length, self.special,
                             middle_ids=span_ids[: lay.span_slots], pad_to_length=True).ids
                for lay in layouts]).to(self.device)
        positions = torch.arange(len(prompt), len(prompt) + length, device=self.device).unsqueeze(0)
        spec = CanvasSpec.build(template, clamped, positions, batch=len(layouts), start=seeded, anchor=anchor)
        outcome = self.run_denoise(cache, spec, rules, generator, stop, req.on_step, stats)
        t_den = time.perf_counter()

        best = int(torch.argmin(outcome.span_entropy)) if len(layouts) > 1 else 0
        chosen = layouts[best]
        stats.span_budget, stats.suffix_tokens, stats.suffix_cut = chosen.span_slots, chosen.suffix_tokens, chosen.suffix_cut
        tokens = span_tokens(outcome.canvas[best].tolist(), chosen.span_slots, self.special,
                             drop_fill=req.remask is not None)
        if outcome.steps == 0:  # stopped before the first step: the canvas is still noise
            tokens = []
        if rules.line_end is not None:  # one line asked: what follows its end may still be noise
            ends = rules.line_end[torch.tensor(tokens, dtype=torch.long, device=self.device)].tolist() if tokens else []
            tokens = tokens[: ends.index(True) + 1] if True in ends else tokens
        text = self.tokenizer.decode(tokens, skip_special_tokens=True) if tokens else ""
        if rules.line_end is not None:
            text = text.split("\n", 1)[0].split("\r", 1)[0]
        confidence = outcome.confidence[best, : len(tokens)].tolist()
        stats.span_tokens = len(tokens)
        stats.tokens_per_forward = len(tokens) / outcome.forwards if outcome.forwards else 0.0
        stats.post_ms = _ms(t_den)
        stats.total_ms = _ms(start)
        pieces = self.tokenizer.convert_ids_to_tokens(tokens) if tokens else []
        status = stop.reason() if outcome.cancelled else "ok"
        return InfillResult(text=text, status=status, confidence=confidence, tokens=pieces, stats=stats)

    def run_denoise(self, cache: DynamicCache, spec: CanvasSpec, rules: SamplerRules, generator: torch.Generator,
                    stop, on_step, stats: InfillStats):  # noqa: ANN001
        """Denoise one prepared canvas (either layout) with this engine's head; fills the step stats."""
        started = time.perf_counter()
        try:
            outcome = denoise(self.model, cache, spec, rules, self._step_fn(), generator=generator, cancel=stop,
                              on_step=on_step)
        finally:
            if self._fast_decoder is not None:
                self._fast_decoder.release()
        stats.denoise_ms = (time.perf_counter() - started) * 1000
        stats.steps, stats.decoder_forwards = outcome.steps, outcome.forwards
        return outcome

    def _repair_layout(self, layout: CanvasLayout, span: str, remask: list[tuple[int, int]]) -> CanvasLayout:
        """Keep the span's good tokens clamped; each re-masked run becomes free slots, with room to grow.

        Slots: good tokens (clamped), then for every run of tokens touching a `remask` range that
        many free slots plus REPAIR_SLACK more, ..., then clamped filler to the end of the span.
        The model may write filler into free slots it does not need (dropped when decoding).
        """
        enc = self.tokenizer(span, add_special_tokens=False, return_offsets_mapping=True)
        ids: list[int] = []
        free: list[bool] = []
        filler = self.special.fill if self.special.fill is not None else self.special.pad
        for tok, (lo, hi) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
            touched = any(lo < end and start < max(hi, lo + 1) for start, end in remask)
            if not touched and free and free[-1]:
                ids += [filler] * REPAIR_SLACK
                free += [True] * REPAIR_SLACK
            ids.append(tok)
            free.append(touched)
        if free and free[-1]:
            ids += [filler] * REPAIR_SLACK
            free += [True] * REPAIR_SLACK
        slots = layout.span_slots
        ids, free = ids[:slots], free[:slots]
        layout.ids[: len(ids)] = torch.tensor(ids, dtype=torch.long)
        layout.ids[len(ids): slots] = filler
        layout.clamped[:slots] = True
        layout.clamped[: len(free)] = ~torch.tensor(free, dtype=torch.bool)
        return layout

    def _layouts(self, budget: int, suffix_ids: list[int]) -> list[CanvasLayout]:
        """Canvas layouts to denoise together, one per batch row.

        A model with a filler token gets one canvas of the budget (it fills what it does not
        need). Without one the right length is unknown: a small batch of budgets is denoised
        together and the one the model is most certain of (lowest mean span entropy) wins.
        """
        window = self.canvas_length if self.suffix_window is None else self.suffix_window
        length = min(self.canvas_length, budget + window)
        if self.special.fill is not None:
            return [build_canvas(budget, suffix_ids, length, self.special, pad_to_length=True)]
        budgets = sorted({max(1, budget // 4), max(1, budget // 2), budget})
        length = min(length, budget + len(suffix_ids) + 1)  # as generate() would: no padding
        return [build_canvas(b, suffix_ids, length, self.special, pad_to_length=True) for b in budgets]


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000

