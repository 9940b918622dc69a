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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .noise import (
    GUMBEL_MAX,
    GUMBEL_MIN,
    U_SCALE,
    fmix32_,
    fmix32_i32_,
    gumbel_from_uniform,
    row_keys,
    to_int32_bits,
    uniform_from_i32,
)
from .reference import reference_head

SOFT_TOPK = 64
# A token whose z is this far below the running max can never win the Gumbel race: the winner
# scores at least max(z) + GUMBEL_MIN, the token at most z + GUMBEL_MAX. One unit of slack
# covers float32 rounding.
GUMBEL_MARGIN = GUMBEL_MAX - GUMBEL_MIN + 1.0
_NEG_BIG = -1e30


@dataclass
class HeadOutput:
    """Per-row results of one denoising step's head."""

    argmax: torch.Tensor  # [N] int64
    sample: torch.Tensor  # [N] int64, Gumbel-max sample of softmax(z)
    entropy: torch.Tensor  # [N] float32, Categorical(logits=z).entropy()
    confidence: torch.Tensor  # [N] float32, max softmax probability
    soft_embedding: torch.Tensor  # [N, D] in the weight dtype


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
    to, and from ending the span where the model does not think it ends.
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
    if not 0.0 <= soft_eps < 1.0:
        raise ValueError(f"soft_eps must be in [0, 1) (got {soft_eps})")
    if impl == "auto":
        impl = "triton" if hidden.is_cuda and _triton_available() else "chunked"
    common = dict(temperature=temperature, softcap=softcap, embed_scale=embed_scale, seed=seed, banned=banned,
                  rows=rows, row_banned=row_banned)
    if impl == "reference":
        return HeadOutput(**reference_head(hidden, weight, **common))
    if impl == "chunked":
        return chunked_head(hidden, weight, soft_eps=soft_eps, chunk=chunk, **common)
    if impl == "triton":
        from .triton_head import triton_head

        return triton_head(hidden, weight, soft_eps=soft_eps, **common)
    raise ValueError(f"unknown impl {impl!r}: expected auto, reference, chunked or triton")


def token_probability(hidden: torch.Tensor, weight: torch.Tensor, token: int, *, softcap: float | None,
                      chunk: int = 8192) -> torch.Tensor:
    """softmax(softcap(hidden @ weight.T))[:, token] at temperature 1, streaming over the vocabulary.

    [N] float32. The denoiser asks it whether a slot's span has ended (the filler's probability)
    before temperature sharpens the choice; it never holds more than [N, chunk] logits.
    """
    h = hidden.to(weight.dtype)
    lse = torch.full((h.shape[0],), float("-inf"), device=h.device, dtype=torch.float32)
    for c0 in range(0, weight.shape[0], chunk):
        x = (h @ weight[c0 : c0 + chunk].T).to(torch.float32)
        if softcap is not None:
            x.div_(softcap).tanh_().mul_(softcap)
        lse = torch.logaddexp(lse, torch.logsumexp(x, dim=1))
    x_token = (h @ weight[token]).to(torch.float32)
    if softcap is not None:
        x_token = torch.tanh(x_token / softcap) * softcap
    return torch.exp(x_token - lse)


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _sorted_banned(banned: torch.Tensor | None, vocab: int, device: torch.device) -> torch.Tensor | None:
    if banned is None or banned.numel() == 0:
        return None
    ids = torch.unique(banned.to(device=device, dtype=torch.int64).flatten())
    if ids.min() < 0 or ids.max() >= vocab:
        raise ValueError(f"banned ids must lie in [0, {vocab})")
    return ids


def _chunk_logits(
    h: torch.Tensor,
    w: torch.Tensor,
    c0: int,
    temperature: float,
    softcap: float | None,
    banned: torch.Tensor | None,
    row_ban: torch.Tensor | None = None,
) -> torch.Tensor:
    """float32 z for one vocabulary chunk, same op order as the reference (in place)."""
    z = (h @ w.T).to(torch.float32)
    if softcap is not None:
        z.div_(softcap).tanh_().mul_(softcap)
    z.div_(temperature)
    if banned is not None:
        local = banned[(banned >= c0) & (banned < c0 + w.shape[0])] - c0
        if local.numel():
            z[:, local] = float("-inf")
    if row_ban is not None:
        local = row_ban - c0
        r, k = ((local >= 0) & (local < w.shape[0])).nonzero(as_tuple=True)
        if r.numel():
            z[r, local[r, k]] = float("-inf")
    return z


class _GumbelRace:
    """Running Gumbel-max (first index on ties) that hashes only tokens that can still win.

    A token can win only if ``z + GUMBEL_MAX >= winner``, and the winner scores at least
    ``max(m + GUMBEL_MIN, best so far)``. Candidates are kept (row, col, z) and hashed lazily,
    at the end or when ``budget`` entries pile up, after re-filtering with the newer, higher
    bound: a peaked row ends up hashing a handful of tokens instead of V. The result equals the
    dense ``argmax(z + gumbel)``.
    """

    def __init__(self, keys: torch.Tensor, budget: int) -> None:
        n = keys.shape[0]
        self.keys = keys
        self.keys32 = to_int32_bits(keys)
        self.budget = budget
        self.best = torch.full((n,), float("-inf"), device=keys.device)
        self.idx = torch.zeros(n, dtype=torch.int64, device=keys.device)
        self.pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.size = 0

    def _threshold(self, m: torch.Tensor) -> torch.Tensor:
        floor = torch.maximum(m + GUMBEL_MIN, self.best) - (GUMBEL_MAX + 1.0)
        return floor.clamp_(min=-3e38)  # never admit z = -inf (banned ids)

    def add(self, z: torch.Tensor, m: torch.Tensor, c0: int) -> None:
        """Queue this chunk's possible winners; ``m`` is the running max including the chunk."""
        cand = z >= self._threshold(m)[:, None]
        if int(cand.sum()) * 8 > cand.numel():  # a flat chunk: hashing it whole is cheaper
            self.flush(m)  # earlier columns first, so ties still go to the lowest id
            self._dense(z, c0)
            return
        r, c = cand.nonzero(as_tuple=True)
        if r.numel():
            self.pending.append((r, c + c0, z[r, c]))
            self.size += r.numel()
        if self.size > self.budget:
            self.flush(m)

    def _dense(self, z: torch.Tensor, c0: int) -> None:
        cols = torch.arange(c0, c0 + z.shape[1], device=z.device, dtype=torch.int32)
        bits = fmix32_i32_(cols[None, :] ^ self.keys32[:, None])
        u = uniform_from_i32(bits)
        del bits
        vals = u.log_().neg_().log_().neg_().add_(z)  # z + gumbel(u), as gumbel_from_uniform
        vmax, varg = vals.max(dim=1)
        upd = vmax > self.best
        self.best = torch.where(upd, vmax, self.best)
        self.idx = torch.where(upd, varg + c0, self.idx)

    def flush(self, m: torch.Tensor) -> None:
        """Hash the queued candidates that still pass the bound and merge them into the best."""
        if not self.pending:
            return
        r, c, zv = (torch.cat(t) for t in zip(*self.pending, strict=True))
        self.pending, self.size = [], 0
        keep = zv >= self._threshold(m)[r]
        r, c, zv = r[keep], c[keep], zv[keep]
        if not r.numel():
            return
        bits = fmix32_(c ^ self.keys[r])
        vals = zv + gumbel_from_uniform(((bits >> 9).to(torch.float32) + 0.5) * U_SCALE)
        row_max = torch.full_like(self.best, float("-inf")).scatter_reduce_(0, r, vals, "amax")
        big = torch.iinfo(torch.int64).max
        first = torch.full_like(self.idx, big).scatter_reduce_(
            0, r, torch.where(vals == row_max[r], c, big), "amin"
        )
        # Queued tokens all come after previously merged ones: strict > keeps the first index.
        upd = row_max > self.best
        self.best = torch.where(upd, row_max, self.best)
        self.idx = torch.where(upd, first, self.idx)


def chunked_head(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    *,
    temperature: float,
    softcap: float | None,
    embed_scale: float,
    seed: int,
    banned: torch.Tensor | None = None,
    soft_eps: float = 0.0,
    chunk: int = 8192,
    rows: torch.Tensor | None = None,
    row_banned: torch.Tensor | None = None,
) -> HeadOutput:
    """Streaming (online-softmax) head in torch; peak extra memory is O(N * chunk + N * D)."""
    n, d = hidden.shape
    vocab = weight.shape[0]
    dev = hidden.device
    f32 = torch.float32
    h = hidden.to(weight.dtype)
    ban = _sorted_banned(banned, vocab, dev)
    row_ban = None if row_banned is None else row_banned.to(device=dev, dtype=torch.int64).reshape(n, -1)
    if rows is None:
        rows = torch.arange(n, device=dev)
    keys = row_keys(seed, rows.to(device=dev, dtype=torch.int64))
    truncated = soft_eps > 0.0
    topk = min(SOFT_TOPK, vocab)

    m = torch.full((n,), float("-inf"), device=dev, dtype=f32)
    l_sum = torch.zeros(n, device=dev, dtype=f32)
    s_sum = torch.zeros(n, device=dev, dtype=f32)
    best = torch.full((n,), float("-inf"), device=dev, dtype=f32)
    best_idx = torch.zeros(n, device=dev, dtype=torch.int64)
    race = _GumbelRace(keys, budget=max(1024, n * chunk // 8))
    acc = None if truncated else torch.zeros(n, d, device=dev, dtype=f32)
    top_vs: list[torch.Tensor] = []
    top_is: list[torch.Tensor] = []

    for c0 in range(0, vocab, chunk):
        w = weight[c0 : c0 + chunk]
        z = _chunk_logits(h, w, c0, temperature, softcap, ban, row_ban)
        cmax, carg = z.max(dim=1)
        upd = cmax > best
        best = torch.where(upd, cmax, best)
        best_idx = torch.where(upd, carg + c0, best_idx)
        m_new = torch.maximum(m, cmax)

        race.add(z, m_new, c0)

        if truncated:  # each chunk's top-K; merged once after the loop
            cv, ci = torch.topk(z, min(topk, z.shape[1]), dim=1)
            top_vs.append(cv)
            top_is.append(ci.add_(c0))

        seen = l_sum > 0  # rows with a finite max before this chunk
        alpha = torch.where(seen, torch.exp(m - m_new), torch.zeros_like(m))
        delta = torch.where(seen, m - m_new, torch.zeros_like(m))
        shift = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        zs = z.sub_(shift[:, None])
        if ban is not None or row_ban is not None or not bool(torch.isfinite(m_new).all()):
            zs.clamp_(min=_NEG_BIG)  # -inf (banned) -> finite, so p * zs is 0, not nan
        p = torch.exp(zs)
        s_sum = alpha * (s_sum + l_sum * delta) + torch.linalg.vecdot(p, zs)
        l_sum = alpha * l_sum + p.sum(dim=1)
        if acc is not None:
            acc.mul_(alpha[:, None])
            if weight.dtype == f32:
                acc.addmm_(p, w)
            else:
                acc.add_((p.to(weight.dtype) @ w).to(f32))
        m = m_new

    race.flush(m)
    entropy = torch.log(l_sum) - s_sum / l_sum
    confidence = 1.0 / l_sum
    if acc is not None:
        soft = acc.div_(l_sum[:, None]).mul_(embed_scale)
    else:
        top_v, order = torch.topk(torch.cat(top_vs, dim=1), topk, dim=1)
        top_i = torch.gather(torch.cat(top_is, dim=1), 1, order)
        soft = _truncated_soft(
            hidden, weight, top_v, top_i, m, l_sum, soft_eps, temperature, softcap, ban, chunk, row_ban
        ).mul_(embed_scale)
    return HeadOutput(
        argmax=best_idx,
        sample=race.idx,
        entropy=entropy,
        confidence=confidence,
        soft_embedding=soft.to(weight.dtype),
    )


def _truncated_soft(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    top_v: torch.Tensor,
    top_i: torch.Tensor,
    m: torch.Tensor,
    l_sum: torch.Tensor,
    soft_eps: float,
    temperature: float,
    softcap: float | None,
    ban: torch.Tensor | None,
    chunk: int,
    row_ban: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(z) @ E (unscaled, float32) from the top-K, exact for rows the top-K does not cover."""
    f32 = torch.float32
    p_top = torch.exp(top_v - m[:, None]) / l_sum[:, None]  # sorted descending
    cum = torch.cumsum(p_top, dim=1)
    keep = (cum - p_top) < (1.0 - soft_eps)
    covered = cum[:, -1] >= (1.0 - soft_eps)
    wts = torch.where(keep, p_top, torch.zeros_like(p_top))
    wts = wts / wts.sum(dim=1, keepdim=True)
    soft = torch.nn.functional.embedding_bag(
        top_i, weight, per_sample_weights=wts.to(weight.dtype), mode="sum"
    ).to(f32)
    rows = torch.nonzero(~covered, as_tuple=True)[0]
    if rows.numel():
        soft[rows] = _exact_soft_rows(
            hidden[rows], weight, m[rows], l_sum[rows], temperature, softcap, ban, chunk,
            None if row_ban is None else row_ban[rows],
        )
    return soft


def _exact_soft_rows(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    m: torch.Tensor,
    l_sum: torch.Tensor,
    temperature: float,
    softcap: float | None,
    ban: torch.Tensor | None,
    chunk: int,
    row_ban: torch.Tensor | None = None,
) -> torch.Tensor:
    """Second pass for fallback rows: m and l are final, so no rescaling is needed."""
    h = hidden.to(weight.dtype)
    acc = torch.zeros(h.shape[0], h.shape[1], device=h.device, dtype=torch.float32)
    for c0 in range(0, weight.shape[0], chunk):
        w = weight[c0 : c0 + chunk]
        z = _chunk_logits(h, w, c0, temperature, softcap, ban, row_ban)
        p = torch.exp(z.sub_(m[:, None])).div_(l_sum[:, None])
        acc.add_((p.to(weight.dtype) @ w).to(torch.float32))
    return acc
