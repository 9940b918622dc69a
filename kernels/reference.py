"""Plain-torch ground truth for the fused diffusion head.

It materializes the ``[N, V]`` logits on purpose: every step is the obvious torch call, so the
chunked and Triton paths can be checked against it. Numerics follow the stock
``DiffusionGemmaForBlockDiffusion``: the lm_head matmul runs in the weight dtype (a bf16 model
gets bf16 logits), everything after it runs in float32, and the soft embedding multiplies
probabilities cast to the weight dtype by the weight, as the model's self-conditioning does.
"""

from __future__ import annotations

import torch

from .head_types import FillRule
from .noise import gumbel_rows


def reference_logits(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    *,
    temperature: float,
    softcap: float | None,
    banned: torch.Tensor | None = None,
    row_banned: torch.Tensor | None = None,
) -> torch.Tensor:
    """``z = softcap(hidden @ weight.T) / temperature`` in float32, banned ids set to -inf.

    ``row_banned`` [N] or [N, K]: more ids per row set to -inf (-1: none).
    """
    logits = (hidden.to(weight.dtype) @ weight.T).to(torch.float32)
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    z = logits / temperature
    if banned is not None and banned.numel() > 0:
        z[:, banned.to(z.device)] = float("-inf")
    if row_banned is not None:
        ids = row_banned.to(device=z.device, dtype=torch.int64).reshape(z.shape[0], -1)
        r, k = (ids >= 0).nonzero(as_tuple=True)
        z[r, ids[r, k]] = float("-inf")
    return z


def reference_head(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    *,
    temperature: float,
    softcap: float | None,
    embed_scale: float,
    seed: int,
    banned: torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
    row_banned: torch.Tensor | None = None,
    fill: FillRule | None = None,
) -> dict[str, torch.Tensor]:
    """All head outputs from full logits: argmax, Gumbel-max sample, entropy, confidence, soft
    embedding, and with a ``fill`` rule p(filler) at temperature 1 (the filler banned below it)."""
    p_fill = None
    if fill is not None:
        p_fill = torch.softmax(reference_logits(hidden, weight, temperature=1.0, softcap=softcap), dim=-1)[:, fill.token]
        no_end = torch.where(p_fill < fill.threshold, fill.token, -1)[:, None]
        ids = None if row_banned is None else row_banned.to(device=no_end.device, dtype=torch.int64)
        row_banned = no_end if ids is None else torch.cat([ids.reshape(no_end.shape[0], -1), no_end], dim=1)
    z = reference_logits(hidden, weight, temperature=temperature, softcap=softcap, banned=banned,
                         row_banned=row_banned)
    n, v = z.shape
    if rows is None:
        rows = torch.arange(n, device=z.device)
    noise = gumbel_rows(seed, rows.to(device=z.device, dtype=torch.int64), 0, v)
    sample = torch.argmax(z + noise, dim=-1)
    argmax = torch.argmax(z, dim=-1)
    entropy = torch.distributions.Categorical(logits=z).entropy().to(torch.float32)
    probs = torch.softmax(z, dim=-1)
    confidence = probs.max(dim=-1).values
    soft = (probs.to(weight.dtype) @ weight) * embed_scale
    return {
        "argmax": argmax,
        "sample": sample,
        "entropy": entropy,
        "confidence": confidence,
        "soft_embedding": soft.to(weight.dtype),
        "fill_probability": p_fill,
    }
