"""What every head implementation takes beyond the logits' inputs, and what it returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FillRule:
    """A slot may become ``token`` (the filler: the span ends before it) only where the filler's
    probability at temperature 1 is at least ``threshold``; elsewhere the filler is banned.

    Whether a span ends is a question for the model's own distribution; temperature sharpening
    would make the filler win every late slot whose single likeliest token it is.
    """

    token: int
    threshold: float


@dataclass
class HeadOutput:
    """Per-row results of one denoising step's head."""

    argmax: torch.Tensor  # [N] int64
    sample: torch.Tensor  # [N] int64, Gumbel-max sample of softmax(z)
    entropy: torch.Tensor  # [N] float32, Categorical(logits=z).entropy()
    confidence: torch.Tensor  # [N] float32, max softmax probability
    soft_embedding: torch.Tensor  # [N, D] in the weight dtype
    fill_probability: torch.Tensor | None = None  # [N] float32, p(filler) at temperature 1 (with a FillRule)
