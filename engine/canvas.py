"""Canvas layouts for infilling: where the span goes, what is clamped, how long it is.

Both the engine (at serving time) and the trainer (at training time) build canvases through this
module, so the model is trained on exactly what it is asked to denoise.

Layout A (pinned suffix), the one dgls uses:

    encoder:  [bos] prefix...
    canvas:   [span slot] * budget  [suffix head ...]  [eos if the suffix ends here]  [pad ...]
              ^ noise, denoised      ^ clamped: always accepted, never re-noised

A model that declares ``fill_token_id`` in its config learns to write the middle into the first
slots and fill the rest of the budget with the filler token, so one canvas handles an unknown
span length; the text is cut at the first filler.

Token shift (models converted from an autoregressive Gemma declare ``token_shift: true``): the
prompt's last token leaves the encoder and opens the decoder's input, so output i predicts canvas
slot i from the token before it, as the pretrained model always did:

    encoder:        [bos] prefix[:-1]
    decoder input:  prefix[-1]  slot0  slot1 ...  (the canvas shifted right by one)
    decoder output: slot0       slot1  slot2 ...  (the canvas itself)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SpecialTokens:
    """Token ids the engine needs, read from the model config (never hard-coded)."""

    pad: int
    eos: tuple[int, ...]
    bos: int | None
    fill: int | None

    @classmethod
    def from_config(cls, config) -> SpecialTokens:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        eos = text.eos_token_id if text.eos_token_id is not None else getattr(config, "eos_token_id", None)
        eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else ((eos,) if eos is not None else ())
        pad = text.pad_token_id if text.pad_token_id is not None else 0
        return cls(
            pad=int(pad),
            eos=tuple(int(e) for e in eos_ids),
            bos=text.bos_token_id,
            fill=getattr(config, "fill_token_id", None),
        )

    @property
    def first_eos(self) -> int:
        return self.eos[0] if self.eos else self.pad

    def banned_in_span(self) -> list[int]:
        """Tokens that must never be sampled inside the span (end of sequence, padding, bos)."""
        banned = {self.pad, *self.eos}
        if self.bos is not None:
            banned.add(self.bos)
        return sorted(banned)


@dataclass
class CanvasLayout:
    """A canvas template: ids (span slots hold placeholders or training targets) and the clamp mask."""

    ids: torch.LongTensor  # [C]
    clamped: torch.BoolTensor  # [C], True where the token is fixed (suffix head, eos, pad)
    span_slots: int  # the first `span_slots` positions are the span
    suffix_tokens: int  # suffix tokens placed in the canvas
    suffix_cut: bool  # True when the suffix did not fit whole


def encoder_ids(prefix_ids: list[int], special: SpecialTokens) -> list[int]:
    """The prompt the encoder sees: bos (when the model has one) then the prefix tokens."""
    return ([special.bos] if special.bos is not None else []) + list(prefix_ids)


def token_shift(config) -> bool:
    """Whether the model reads its canvas shifted right by one (see the module docstring)."""
    return bool(getattr(config, "token_shift", False))


def split_anchor(prompt: list[int]) -> tuple[list[int], int]:
    """Token shift: (encoder prompt, anchor). The anchor is the prompt's last token; a prompt of
    one token (bos alone) stays in the encoder as well, since the encoder needs a token."""
    return (prompt[:-1] or prompt[:1]), prompt[-1]


def shift_in(canvas: torch.LongTensor, anchor: torch.LongTensor) -> torch.LongTensor:
    """The decoder's input under the token shift: [anchor, c0, ..., c(C-2)] per row.

    `canvas` [B, C]; `anchor` [B] or a scalar tensor.
    """
    first = anchor.reshape(-1, 1).expand(canvas.shape[0], 1).to(canvas.dtype)
    return torch.cat([first, canvas[:, :-1]], dim=1)


def build_canvas(
    budget: int,
    suffix_ids: list[int],
    canvas_length: int,
    special: SpecialTokens,
    middle_ids: list[int] | None = None,
    pad_to_length: bool = False,
) -> CanvasLayout:
    """Lay out span slots then the suffix head.

    `budget` span slots come first; with `middle_ids` (training, or a selection seeding the
    canvas) they hold the middle followed by filler (or pad, for models without a filler token).
    The suffix head fills what is left of `canvas_length`; when the whole suffix fits, an eos
    marks the end of the file. With `pad_to_length` the canvas is padded to `canvas_length`.
    """
    if budget < 1:
        raise ValueError(f"span budget must be at least 1 token, got {budget}")
    if budget >= canvas_length:
        raise ValueError(f"span budget {budget} leaves no room in a canvas of {canvas_length}")
    room = canvas_length - budget
    head = list(suffix_ids[:room])
    suffix_cut = len(suffix_ids) > room
    tail: list[int] = []
    if not suffix_cut and len(head) < room:
        tail.append(special.first_eos)
    if pad_to_length:
        tail += [special.pad] * (room - len(head) - len(tail))
    slot_filler = special.fill if special.fill is not None else special.pad
    if middle_ids is None:
        slots = [slot_filler] * budget
    else:
        if len(middle_ids) > budget:
            raise ValueError(f"middle of {len(middle_ids)} tokens does not fit a budget of {budget}")
        slots = list(middle_ids) + [slot_filler] * (budget - len(middle_ids))
    ids = torch.tensor(slots + head + tail, dtype=torch.long)
    clamped = torch.zeros(len(ids), dtype=torch.bool)
    clamped[budget:] = True
    return CanvasLayout(ids=ids, clamped=clamped, span_slots=budget, suffix_tokens=len(head), suffix_cut=suffix_cut)


def span_tokens(canvas_ids: list[int], span_slots: int, special: SpecialTokens, drop_fill: bool = False) -> list[int]:
    """The infilled tokens: the span slots, cut at the first filler (or end-of-sequence).

    With `drop_fill` (a repaired draft, whose clamped tokens follow the re-masked hole) fillers
    are skipped instead of ending the span.
    """
    out: list[int] = []
    stops = {special.pad, *special.eos}
    for tok in canvas_ids[:span_slots]:
        if tok == special.fill and special.fill is not None:
            if drop_fill:
                continue
            break
        if tok in stops:
            break
        out.append(tok)
    return out


CLAMP_LOGIT_FLOOR = -1.0e4


def clamp_logits(logits: torch.Tensor, canvas_ids: torch.LongTensor, clamped: torch.BoolTensor) -> torch.Tensor:
    """Override logits at clamped positions with a one-hot on the clamped token.

    Softmax of the override is exactly one-hot in float32, so clamped positions have zero entropy
    (always accepted) and self-conditioning sees the clamped token itself. Shapes: logits
    [..., C, V], canvas_ids [..., C], clamped [C] or [..., C]. Returns a new tensor.
    """
    onehot = torch.full_like(logits, CLAMP_LOGIT_FLOOR)
    onehot.scatter_(-1, canvas_ids.unsqueeze(-1), 0.0)
    mask = clamped.expand(canvas_ids.shape).unsqueeze(-1)
    return torch.where(mask, onehot, logits)


def line_end_ids(tokenizer, vocab_size: int, fill: int | None = None) -> torch.BoolTensor:  # noqa: ANN001
    """[vocab_size] True for the ids where a one-line span is over: text holding a line break,
    and the filler (the span ends there). Decoded once per engine (0.2-0.3 s for 8k-22k ids)."""
    known = min(len(tokenizer), vocab_size)
    texts = tokenizer.batch_decode([[i] for i in range(known)])
    ends = torch.zeros(vocab_size, dtype=torch.bool)
    ends[[i for i, text in enumerate(texts) if "\n" in text or "\r" in text]] = True
    if fill is not None and 0 <= fill < vocab_size:
        ends[fill] = True
    return ends
