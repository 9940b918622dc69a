"""The training objective: exactly the canvases the engine builds at serving time.

Each example cuts a span out of a training file the way an editor request would (rest of a line,
whole lines, a random span, the empty body of a block, continuation at the end of a file),
tokenizes prefix, middle and suffix separately (as the engine does), and lays the canvas out with
`engine.canvas.build_canvas`: the middle then `<fill>` up to the budget, then the clamped suffix
head (then eos and pad at the end of the file). Uniform-state noise replaces span slots only;
the loss is cross-entropy on span slots.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..canvas import SpecialTokens, build_canvas, clamp_logits, encoder_ids, shift_in, split_anchor
from .tokenizer import encode

SPAN_KINDS = ("rest_of_line", "lines", "random", "block_body", "eof_continuation")
KIND_WEIGHTS = (0.35, 0.25, 0.15, 0.12, 0.13)
BUDGET_BUCKETS = (8, 16, 24, 32, 48)
SUFFIX_CHARS_PER_TOKEN = 8  # as the engine: tokenize this many suffix chars per free canvas slot
SELF_COND_TEMPERATURE = (0.4, 0.8)


@dataclass
class Span:
    """A cut of one file into the text before, inside and after the span."""

    prefix: str
    middle: str
    suffix: str
    kind: str


@dataclass
class Example:
    """One training example: the encoder prompt and the target canvas with its clamp mask."""

    encoder: list[int]
    canvas: torch.LongTensor
    clamped: torch.BoolTensor
    span_slots: int
    middle_tokens: int
    kind: str
    anchor: int | None = None  # token-shift models: the prompt's last token, read before slot 0


@dataclass
class Batch:
    """Right-padded encoder prompts, target canvases and the masks the model needs."""

    input_ids: torch.LongTensor  # [B, L] right-padded with pad
    encoder_lengths: torch.LongTensor  # [B]
    targets: torch.LongTensor  # [B, C]
    clamped: torch.BoolTensor  # [B, C]
    decoder_positions: torch.LongTensor  # [B, C]: canvas positions continue after each prompt
    decoder_attention_mask: torch.BoolTensor  # [B, L + C]: False on encoder padding
    anchors: torch.LongTensor | None = None  # [B], token-shift models only

    @property
    def span(self) -> torch.BoolTensor:
        return ~self.clamped

    def to(self, device) -> Batch:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()}
        return Batch(**moved)


# ----- spans ------------------------------------------------------------------------------------

def _line_table(text: str) -> list[tuple[int, int, int]]:
    """(start, end without newline, end with newline) for every line."""
    out = []
    pos = 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        out.append((pos, pos + len(body), pos + len(line)))
        pos += len(line)
    return out


def _indent(text: str, start: int, end: int) -> int:
    line = text[start:end]
    return len(line) - len(line.lstrip(" \t"))


def _nonblank(text: str, lines, i: int) -> bool:
    s, e, _ = lines[i]
    return bool(text[s:e].strip())


def sample_span(text: str, rng: random.Random, kind: str | None = None) -> Span | None:
    """Cut one span of the given kind (random kind when None); None when the file has no such span."""
    kind = kind or rng.choices(SPAN_KINDS, KIND_WEIGHTS)[0]
    lines = _line_table(text)
    if not lines:
        return None
    candidates = [i for i in range(len(lines)) if _nonblank(text, lines, i)]
    if not candidates:
        return None
    if kind == "rest_of_line":
        i = rng.choice(candidates)
        s, e, _ = lines[i]
        content = s + _indent(text, s, e)
        r = rng.random()
        if r < 0.3:
            cursor = content
        elif r < 0.35:
            cursor = e  # nothing left to write: the answer is "no insertion"
        else:
            cursor = rng.randint(content, max(content, e - 1))
        return Span(text[:cursor], text[cursor:e], text[e:], kind)
    if kind == "lines":
        i = rng.choice(candidates)
        k = rng.randint(1, 3)
        j = min(len(lines) - 1, i + k - 1)
        s, e, _ = lines[i]
        cursor = s if rng.random() < 0.4 else s + _indent(text, s, e)
        end = lines[j][1]
        return Span(text[:cursor], text[cursor:end], text[end:], kind)
    if kind == "random":
        if len(text) < 2:
            return None
        start = rng.randrange(len(text) - 1)
        length = min(len(text) - start, max(1, int(rng.expovariate(1 / 40))))
        return Span(text[:start], text[start:start + length], text[start + length:], kind)
    if kind == "block_body":
        heads = [i for i in candidates[:-1]
                 if text[lines[i][0]:lines[i][1]].split("#", 1)[0].rstrip().endswith(":")]
        rng.shuffle(heads)
        for h in heads[:8]:
            head_indent = _indent(text, lines[h][0], lines[h][1])
            body = [b for b in range(h + 1, len(lines))]
            first = next((b for b in body if _nonblank(text, lines, b)), None)
            if first is None:
                continue
            body_indent = _indent(text, lines[first][0], lines[first][1])
            if body_indent <= head_indent:
                continue
            last = first
            for b in range(first + 1, len(lines)):
                if not _nonblank(text, lines, b):
                    continue
                if _indent(text, lines[b][0], lines[b][1]) < body_indent:
                    break
                last = b
            last = min(last, first + rng.randint(0, 7))
            cursor = lines[first][0] + body_indent
            end = lines[last][1]
            return Span(text[:cursor], text[cursor:end], text[end:], kind)
        return None
    if kind == "eof_continuation":
        i = rng.choice(candidates)
        j = min(len(lines) - 1, i + rng.randint(0, 5))
        s, e, _ = lines[i]
        cursor = s if rng.random() < 0.5 else s + _indent(text, s, e)
        end = lines[j][1]
        return Span(text[:cursor], text[cursor:end], "" if rng.random() < 0.8 else "\n", kind)
    raise ValueError(f"unknown span kind {kind!r}")


# ----- tokens -----------------------------------------------------------------------------------

def fit_prefix(tok, prefix: str, room: int) -> list[int]:
    """The prefix tokens the engine would use: whole lines cut from the left until `room` fits."""
    if len(prefix) > room * 12:
        cut = prefix.find("\n", len(prefix) - room * 12)
        prefix = prefix[cut + 1:] if cut != -1 else prefix[-room * 12:]
    enc = tok.encode(prefix, add_special_tokens=False) if prefix else None
    while enc is not None and len(enc.ids) > room:
        over = len(enc.ids) - room
        char = enc.offsets[over][0]
        newline = prefix.find("\n", char)
        prefix = prefix[newline + 1:] if newline != -1 else ""
        enc = tok.encode(prefix, add_special_tokens=False) if prefix else None
    return list(enc.ids) if enc is not None else []


def suffix_ids(tok, suffix: str, room: int) -> list[int]:
    """The suffix head tokens, as the engine tokenizes them (a char-bounded head)."""
    head = suffix[: room * SUFFIX_CHARS_PER_TOKEN + 1]
    ids = encode(tok, head)
    if len(head) < len(suffix) and len(ids) <= room:
        ids = encode(tok, suffix)
    return ids


def pick_budget(middle_len: int, rng: random.Random, canvas_length: int) -> int:
    """A planner-like budget: the middle length rounded up to a bucket, sometimes one bucket more."""
    buckets = [b for b in BUDGET_BUCKETS if b < canvas_length]
    idx = next((k for k, b in enumerate(buckets) if b >= max(middle_len, 1)), None)
    if idx is None:
        raise ValueError("middle too long")
    if rng.random() < 0.4 and idx + 1 < len(buckets):
        idx += 1
    return buckets[idx]


def make_example(tok, span: Span, special: SpecialTokens, rng: random.Random, canvas_length: int,
                 prefix_tokens: int, shift: bool = False) -> Example | None:
    """Tokenize a span and lay out its canvas; None when the middle cannot fit any budget."""
    max_budget = max(b for b in BUDGET_BUCKETS if b < canvas_length)
    middle = encode(tok, span.middle)
    if len(middle) > max_budget:
        if span.kind not in ("block_body", "eof_continuation", "lines"):
            return None
        text = span.middle
        while len(middle) > max_budget and "\n" in text:  # keep whole lines that fit
            text = text[: text.rfind("\n")]
            middle = encode(tok, text)
        if len(middle) > max_budget:
            return None
        rest = span.middle[len(text):]
        span = Span(span.prefix, text, rest + span.suffix if span.kind != "eof_continuation" else "", span.kind)
    budget = pick_budget(len(middle), rng, canvas_length)
    room_prefix = prefix_tokens - (1 if special.bos is not None else 0)
    prompt = encoder_ids(fit_prefix(tok, span.prefix, room_prefix), special) or [special.pad]
    anchor = None
    if shift:
        prompt, anchor = split_anchor(prompt)
    suffix = suffix_ids(tok, span.suffix, canvas_length - budget)
    layout = build_canvas(budget, suffix, canvas_length, special, middle_ids=middle, pad_to_length=True)
    return Example(prompt, layout.ids, layout.clamped, budget, len(middle), span.kind, anchor)


def sample_example(tok, text: str, rng: random.Random, special: SpecialTokens, canvas_length: int,
                   prefix_tokens: int, tries: int = 8, shift: bool = False) -> Example | None:
    """Draw spans from one file until one fits."""
    for _ in range(tries):
        span = sample_span(text, rng)
        if span is None:
            continue
        ex = make_example(tok, span, special, rng, canvas_length, prefix_tokens, shift)
        if ex is not None:
            return ex
    return None


def collate(examples: list[Example], special: SpecialTokens) -> Batch:
    """Right-pad prompts: the encoder is causal, so real tokens never see the padding, and the
    decoder masks padded keys out; canvas positions continue right after each prompt."""
    lengths = torch.tensor([len(e.encoder) for e in examples], dtype=torch.long)
    width = int(lengths.max())
    ids = torch.full((len(examples), width), special.pad, dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, : len(e.encoder)] = torch.tensor(e.encoder, dtype=torch.long)
    targets = torch.stack([e.canvas for e in examples])
    clamped = torch.stack([e.clamped for e in examples])
    canvas = targets.shape[1]
    positions = lengths[:, None] + torch.arange(canvas)[None, :]
    enc_mask = torch.arange(width)[None, :] < lengths[:, None]
    dec_mask = torch.cat([enc_mask, torch.ones(len(examples), canvas, dtype=torch.bool)], dim=1)
    anchors = None
    if examples[0].anchor is not None:
        anchors = torch.tensor([e.anchor for e in examples], dtype=torch.long)
    return Batch(ids, lengths, targets, clamped, positions, dec_mask, anchors)


# ----- noise and loss ---------------------------------------------------------------------------

def add_noise(targets: torch.LongTensor, clamped: torch.BoolTensor, vocab_size: int,
              generator: torch.Generator, t: torch.Tensor | None = None,
              ordered: torch.BoolTensor | None = None) -> tuple[torch.LongTensor, torch.Tensor]:
    """Uniform-state noise: each span slot becomes a uniform random id with probability t ~ U(0,1]
    (one t per example); clamped positions are never touched.

    Rows marked `ordered` are noised left to right instead: the last round(t * slots) span slots
    are noise and the ones before them clean, the state a canvas is in when it is decoded
    mostly from the left (what a model adapted from an autoregressive one does).
    """
    b, c = targets.shape
    if t is None:
        t = 1.0 - torch.rand(b, generator=generator)  # (0, 1]
    # drawn on the generator's device (the CPU), then moved: the same noise on any device
    hit = torch.rand(b, c, generator=generator) < t.cpu()[:, None]
    if ordered is not None:
        span = ~clamped.cpu()
        slot = torch.cumsum(span.long(), dim=1) - 1  # index among span slots
        clean = torch.round((1.0 - t.cpu()) * span.sum(1)).long()
        hit = torch.where(ordered.cpu()[:, None], slot >= clean[:, None], hit)
    hit = hit.to(targets.device) & ~clamped
    noise = torch.randint(0, vocab_size, (b, c), generator=generator).to(targets.device)
    return torch.where(hit, noise, targets), t


def encode_prompts(model, batch: Batch):
    """Run the causal encoder over the right-padded prompts into a fresh DynamicCache."""
    from transformers.cache_utils import DynamicCache

    cache = DynamicCache(config=model.config.get_text_config())
    b, width = batch.input_ids.shape
    positions = torch.arange(width, device=batch.input_ids.device)[None, :].expand(b, width)
    model.model.encoder(input_ids=batch.input_ids, past_key_values=cache, position_ids=positions, use_cache=True)
    return cache


def decoder_hidden(model, cache, batch: Batch, canvas: torch.LongTensor,
                   self_conditioning_logits: torch.Tensor | None = None) -> torch.Tensor:
    """One decoder pass over the canvases, reading (never writing) the prompt cache: [B, C, H]."""
    mask = None if bool(batch.decoder_attention_mask.all()) else batch.decoder_attention_mask
    if batch.anchors is not None:
        canvas = shift_in(canvas, batch.anchors)
    out = model.model(decoder_input_ids=canvas, past_key_values=cache,
                      self_conditioning_logits=self_conditioning_logits,
                      decoder_position_ids=batch.decoder_positions, decoder_attention_mask=mask)
    return out.last_hidden_state


def lm_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The model's head: tied lm_head then the final soft-cap, in float32 (as its forward does)."""
    cap = model.final_logit_softcapping
    logits = model.lm_head(hidden).float()
    return torch.tanh(logits / cap) * cap if cap else logits


def decoder_logits(model, cache, batch: Batch, canvas: torch.LongTensor,
                   self_conditioning_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Full canvas logits [B, C, V], exactly `model(...).logits`."""
    return lm_logits(model, decoder_hidden(model, cache, batch, canvas, self_conditioning_logits))


def sample_noise_levels(batch_size: int, generator: torch.Generator, full_noise_prob: float = 0.0,
                        views: int = 1) -> torch.Tensor:
    """t ~ U(0,1] per example, with a share set to exactly 1: the all-noise canvas is where every
    denoising run starts, and where a young model wrongly copies its (random) input tokens.

    With `views` > 1 the rows come in groups of `views` copies of one example, and each group's
    levels are stratified ((u + i) / views), so one example is seen both lightly and heavily noised.
    """
    if views < 1 or batch_size % views:
        raise ValueError(f"views must be >= 1 and divide the batch of {batch_size} rows (got {views})")
    if views > 1:
        groups = batch_size // views
        u = torch.rand(groups, 1, generator=generator)
        t = 1.0 - (u + torch.arange(views)[None, :]) / views  # (0, 1]
        t = t.reshape(-1)
    else:
        t = 1.0 - torch.rand(batch_size, generator=generator)
    if full_noise_prob > 0:
        t = torch.where(torch.rand(batch_size, generator=generator) < full_noise_prob, torch.ones_like(t), t)
    return t


def repeat_views(batch: Batch, views: int) -> Batch:
    """Each example `views` times in a row (the decoder's side; the encoder runs once per example)."""
    def rep(x):
        return x.repeat_interleave(views, dim=0)

    return Batch(rep(batch.input_ids), rep(batch.encoder_lengths), rep(batch.targets), rep(batch.clamped),
                 rep(batch.decoder_positions), rep(batch.decoder_attention_mask),
                 rep(batch.anchors) if batch.anchors is not None else None)


def span_loss(model, batch: Batch, generator: torch.Generator, self_condition: bool,
              vocab_size: int, full_noise_prob: float = 0.0, views: int = 1,
              encoder_grad: bool = True, ordered_prob: float = 0.0) -> tuple[torch.Tensor, dict]:
    """Cross-entropy on span slots of noised canvases, optionally with a self-conditioning pass.

    `views` > 1 denoises that many independently noised copies of each canvas against one encoder
    pass over its prompt: the prompt (most of the tokens) is paid for once per `views` losses.
    Without `encoder_grad` the prompt's cache is read only (no backward through the prompt).
    `ordered_prob`: the share of rows noised left to right (see `add_noise`).
    """
    with torch.set_grad_enabled(encoder_grad and torch.is_grad_enabled()):
        cache = encode_prompts(model, batch)
    if views > 1:
        cache.batch_repeat_interleave(views)
        batch = repeat_views(batch, views)
    t = sample_noise_levels(batch.targets.shape[0], generator, full_noise_prob, views)
    ordered = None
    if ordered_prob > 0:
        ordered = torch.rand(batch.targets.shape[0], generator=generator) < ordered_prob
    noisy, t = add_noise(batch.targets, batch.clamped, vocab_size, generator, t=t, ordered=ordered)
    span = batch.span
    sc = None
    if self_condition:
        lo, hi = SELF_COND_TEMPERATURE
        temp = lo + (hi - lo) * float(torch.rand((), generator=generator))
        with torch.no_grad():
            # The head runs on span slots only: clamp_logits overrides every other position anyway.
            first = decoder_hidden(model, cache, batch, noisy)
            sc = torch.zeros(*span.shape, vocab_size, device=span.device)
            sc[span] = lm_logits(model, first[span]) / temp
            sc = clamp_logits(sc, batch.targets, batch.clamped)
    hidden = decoder_hidden(model, cache, batch, noisy, sc)
    logits = lm_logits(model, hidden[span])  # [N, V]: the loss needs span slots only
    loss = F.cross_entropy(logits, batch.targets[span])
    with torch.no_grad():
        acc = (logits.argmax(-1) == batch.targets[span]).float().mean()
    return loss, {"span_tokens": int(span.sum()), "acc": float(acc), "t_mean": float(t.mean())}
