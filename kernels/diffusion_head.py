"""The fused diffusion head: lm_head -> soft-cap -> temperature -> per-row statistics.

Every denoising step needs, per canvas row, the argmax, a sample, the entropy, the max
probability and the self-conditioning soft embedding ``softmax(z) @ E * embed_scale``. Done
naively that materializes ``[N, V]`` float32 logits (V = 262,144) several times over. The
``chunked`` path here streams over the vocabulary like flash-attention streams over keys: it
keeps a running max ``m``, running ``l = sum exp(z - m)``, running ``s = sum exp(z - m) (z - m)``
(for the entropy), a running soft-embedding accumulator rescaled by ``exp(m_old - m_new)``, a
running argmax and a running Gumbel argmax, and never holds more than ``[N, chunk]``.

Numerics match :mod:`.reference` (the stock model's order of operations): the matmul runs in
the weight dtype, everything after it in float32. Sampling is Gumbel-max over the counter-based
noise of :mod:`.noise`, so all implementations draw the same token for the same ``seed``.

``soft_eps > 0`` selects the *truncated* soft embedding. The pass keeps a running top-K
(``SOFT_TOPK`` = 64) of ``z`` per row instead of the second V-sized matmul; afterwards each row
uses the smallest prefix of its top-K holding at least ``1 - soft_eps`` of the probability,
renormalized, and gathers just those rows of ``E`` (``embedding_bag``). Rows whose top-K mass is
below ``1 - soft_eps`` (flat distributions) fall back to the exact soft embedding through a
second pass over those rows only. Dropping mass ``<= eps`` and renormalizing moves the result by
at most ``2 * eps * max_i ||E_i|| * embed_scale``.

A :class:`~.head_types.FillRule` (the denoiser's end-of-span rule) is applied inside the same
pass: see :mod:`.fill_rule`. Modules: :mod:`.chunked_head` (torch), :mod:`.triton_head`,
:mod:`.reference` (full logits), :mod:`.gumbel_race` (the chunked sampler).
"""

from __future__ import annotations

import functools

import torch

from .chunked_head import SOFT_TOPK, chunked_head
from .head_types import FillRule, HeadOutput
from .reference import reference_head

__all__ = ["SOFT_TOPK", "FillRule", "HeadOutput", "chunked_head", "diffusion_head"]


def diffusion_head(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    *,
    temperature: float,
    softcap: float | None,
    embed_scale: float,
    seed: int,
    banned: torch.Tensor | None = None,
    soft_eps: float = 0.0,
    impl: str = "auto",
    chunk: int = 8192,
    rows: torch.Tensor | None = None,
    row_banned: torch.Tensor | None = None,
    fill: FillRule | None = None,
) -> HeadOutput:
    """Compute the head for ``hidden`` [N, D] against tied embeddings ``weight`` [V, D].

    ``impl``: "reference" (materializes logits), "chunked" (torch, streams over ``chunk``
    vocabulary rows), "triton" (one kernel, tiles the vocabulary), "auto" (triton on CUDA when it
    imports, else chunked). ``banned`` ids get z = -inf. ``soft_eps`` > 0 truncates the soft
    embedding (see module docstring); the reference path ignores it. ``rows`` [N] (int64) are
    the row ids the sampling noise is keyed on (default ``arange(N)``): give each request's rows
    ids of their own (e.g. ``request_key * canvas_len + position``) so its sample does not depend
    on where it sits in a batch. ``row_banned`` [N] or [N, K] (int64) bans more ids per row (-1:
    none): the denoiser uses it to keep a slot from copying the random token it was just noised
    to. ``fill`` bans the filler in the rows where its temperature-1 probability is below the
    rule's threshold, in the same pass (``HeadOutput.fill_probability`` says what it was).
    """
    if rows is not None and rows.shape != (hidden.shape[0],):
        raise ValueError(f"rows must have shape [{hidden.shape[0]}] (got {tuple(rows.shape)})")
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"hidden {tuple(hidden.shape)} and weight {tuple(weight.shape)} must be [N, D] and [V, D]"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (got {temperature})")
    if row_banned is not None:
        if row_banned.dim() not in (1, 2) or row_banned.shape[0] != hidden.shape[0]:
            raise ValueError(f"row_banned must have shape [{hidden.shape[0]}] or [{hidden.shape[0]}, K] "
                             f"(got {tuple(row_banned.shape)})")
        if row_banned.numel() and (row_banned.min() < -1 or row_banned.max() >= weight.shape[0]):
            raise ValueError(f"row_banned ids must lie in [-1, {weight.shape[0]})")
    if fill is not None and not 0 <= fill.token < weight.shape[0]:
        raise ValueError(f"fill token {fill.token} must lie in [0, {weight.shape[0]})")
    if not 0.0 <= soft_eps < 1.0:
        raise ValueError(f"soft_eps must be in [0, 1) (got {soft_eps})")
    if impl == "auto":
        impl = "triton" if hidden.is_cuda and triton_available() else "chunked"
    common = dict(temperature=temperature, softcap=softcap, embed_scale=embed_scale, seed=seed, banned=banned,
                  rows=rows, row_banned=row_banned, fill=fill)
    if impl == "reference":
        return HeadOutput(**reference_head(hidden, weight, **common))
    if impl == "chunked":
        return chunked_head(hidden, weight, soft_eps=soft_eps, chunk=chunk, **common)
    if impl == "triton":
        from .triton_head import triton_head

        return triton_head(hidden, weight, soft_eps=soft_eps, **common)
    raise ValueError(f"unknown impl {impl!r}: expected auto, reference, chunked or triton")


@functools.cache
def triton_available() -> bool:
    """Whether Triton imports here (the engine and this dispatcher pick the Triton head only then)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
