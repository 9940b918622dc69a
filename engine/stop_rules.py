"""When a denoising draft is done, per canvas row: the sampler's own rule (stable and confident)
and the one-line rule (the first line is decided). Both read only the step's argmax canvas,
acceptance and entropy, so every step function (reference, fused, lean) shares them."""

from __future__ import annotations

import torch


class StableAndConfident:
    """Stop when the argmax canvas repeated `stability` times and mean span entropy < threshold."""

    def __init__(self, stability: int, confidence: float):
        self.stability = stability
        self.confidence = confidence
        self.history: torch.Tensor | None = None

    def __call__(self, argmax: torch.LongTensor, span_entropy: torch.Tensor) -> torch.BoolTensor:
        if self.stability == 0:
            stable = torch.ones(argmax.shape[0], dtype=torch.bool, device=argmax.device)
        else:
            if self.history is None:
                self.history = torch.full((self.stability, *argmax.shape), -1, dtype=argmax.dtype, device=argmax.device)
            stable = (self.history == argmax[None]).all(dim=-1).all(dim=0)
            self.history = torch.roll(self.history, shifts=-1, dims=0)
            self.history[-1] = argmax
        return stable & (span_entropy < self.confidence)


def first_line_settled(argmax: torch.LongTensor, previous: torch.LongTensor, accepted: torch.BoolTensor,
                       span: torch.BoolTensor, line_end: torch.BoolTensor) -> torch.BoolTensor:
    """Per row: the span's first line is decided, so a one-line request may stop.

    Decided: a span slot's argmax ends a line (a newline token, or the filler that ends the span),
    and that slot and every span slot before it were accepted at this step with the argmax they
    had at the step before. Later slots are still noise, but nobody reads past the first line.
    """
    ends = line_end[argmax] & span
    found = ends.any(-1)
    first = torch.where(found, ends.int().argmax(-1), torch.full_like(found, ends.shape[-1], dtype=torch.long))
    upto = torch.arange(ends.shape[-1], device=ends.device)[None, :] <= first[:, None]
    decided = ~span | (accepted & (argmax == previous))
    return found & (decided | ~upto).all(-1)
