"""The streaming (online-softmax) diffusion head in torch: see :mod:`.diffusion_head`.

It walks the vocabulary in chunks of ``chunk`` rows of E and never holds more than ``[N, chunk]``
logits. With a :class:`~.head_types.FillRule` the same chunks feed the rule's temperature-1
log-sum-exp (:mod:`.fill_rule`); the filler's column is held out of the statistics until the
rule is known, except in the last chunk, where it is already known before the chunk counts.
"""

from __future__ import annotations

import torch

from .fill_rule import FillTracker, OnlineState, ban_column, merge_token
from .gumbel_race import GumbelRace
from .head_types import FillRule, HeadOutput
from .noise import row_keys

SOFT_TOPK = 64
_NEG_BIG = -1e30


def sorted_banned(banned: torch.Tensor | None, vocab: int, device: torch.device) -> torch.Tensor | None:
    if banned is None or banned.numel() == 0:
        return None
    ids = torch.unique(banned.to(device=device, dtype=torch.int64).flatten())
    if ids.min() < 0 or ids.max() >= vocab:
        raise ValueError(f"banned ids must lie in [0, {vocab})")
    return ids


def _chunk_x(h: torch.Tensor, w: torch.Tensor, softcap: float | None) -> torch.Tensor:
    """float32 soft-capped logits for one vocabulary chunk (temperature 1)."""
    x = (h @ w.T).to(torch.float32)
    if softcap is not None:
        x.div_(softcap).tanh_().mul_(softcap)
    return x


def _temper_(x: torch.Tensor, c0: int, temperature: float, banned: torch.Tensor | None,
             row_ban: torch.Tensor | None) -> torch.Tensor:
    """z = x / temperature with the banned ids at -inf, in place; same op order as the reference."""
    z = x.div_(temperature)
    if banned is not None:
        local = banned[(banned >= c0) & (banned < c0 + z.shape[1])] - c0
        if local.numel():
            z[:, local] = float("-inf")
    if row_ban is not None:
        local = row_ban - c0
        r, k = ((local >= 0) & (local < z.shape[1])).nonzero(as_tuple=True)
        if r.numel():
            z[r, local[r, k]] = float("-inf")
    return z


def _chunk_logits(h, w, c0, temperature, softcap, banned, row_ban=None) -> torch.Tensor:
    return _temper_(_chunk_x(h, w, softcap), c0, temperature, banned, row_ban)


class _Streaming:
    """The running statistics of one pass: max, sum, entropy sum, argmax, Gumbel race, soft embedding."""

    def __init__(self, keys: torch.Tensor, weight: torch.Tensor, chunk: int, truncated: bool) -> None:
        n, d = keys.shape[0], weight.shape[1]
        dev, f32 = keys.device, torch.float32
        self.weight = weight
        self.m = torch.full((n,), float("-inf"), device=dev, dtype=f32)
        self.l = torch.zeros(n, device=dev, dtype=f32)  # noqa: E741
        self.s = torch.zeros(n, device=dev, dtype=f32)
        self.best = torch.full((n,), float("-inf"), device=dev, dtype=f32)
        self.best_idx = torch.zeros(n, device=dev, dtype=torch.int64)
        self.race = GumbelRace(keys, budget=max(1024, n * chunk // 8))
        self.acc = None if truncated else torch.zeros(n, d, device=dev, dtype=f32)
        self.topk = min(SOFT_TOPK, weight.shape[0])
        self.top_vs: list[torch.Tensor] = []
        self.top_is: list[torch.Tensor] = []

    def add(self, z: torch.Tensor, c0: int, masked: bool) -> None:
        """Take one chunk's z (consumed); ``masked``: it may hold -inf (banned ids)."""
        w = self.weight[c0 : c0 + z.shape[1]]
        cmax, carg = z.max(dim=1)
        upd = cmax > self.best
        self.best = torch.where(upd, cmax, self.best)
        self.best_idx = torch.where(upd, carg + c0, self.best_idx)
        m, m_new = self.m, torch.maximum(self.m, cmax)
        self.race.add(z, m_new, c0)
        if self.acc is None:  # each chunk's top-K; merged once after the loop
            cv, ci = torch.topk(z, min(self.topk, z.shape[1]), dim=1)
            self.top_vs.append(cv)
            self.top_is.append(ci.add_(c0))
        seen = self.l > 0  # rows with a finite max before this chunk
        alpha = torch.where(seen, torch.exp(m - m_new), torch.zeros_like(m))
        delta = torch.where(seen, m - m_new, torch.zeros_like(m))
        shift = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        zs = z.sub_(shift[:, None])
        if masked or not bool(torch.isfinite(m_new).all()):
            zs.clamp_(min=_NEG_BIG)  # -inf (banned) -> finite, so p * zs is 0, not nan
        p = torch.exp(zs)
        self.s = alpha * (self.s + self.l * delta) + torch.linalg.vecdot(p, zs)
        self.l = alpha * self.l + p.sum(dim=1)
        if self.acc is not None:
            self.acc.mul_(alpha[:, None])
            if w.dtype == torch.float32:
                self.acc.addmm_(p, w)
            else:
                self.acc.add_((p.to(w.dtype) @ w).to(torch.float32))
        self.m = m_new

    def merge(self, z: torch.Tensor, token: int, allowed: torch.Tensor) -> None:
        """Add one token held out of the pass (its z [N]) where ``allowed``; after ``race.flush``."""
        allowed = allowed & torch.isfinite(z)
        self.race.offer(z, token, allowed)
        if self.acc is None:
            self.top_vs.append(torch.where(allowed, z, torch.full_like(z, float("-inf")))[:, None])
            self.top_is.append(torch.full_like(self.best_idx, token)[:, None])
        state = OnlineState(self.m, self.l, self.s, self.best, self.best_idx, self.acc, self.l)
        state = merge_token(state, z, token, self.weight[token].to(torch.float32), allowed)
        self.m, self.l, self.s, self.best, self.best_idx, self.acc = (
            state.m, state.l, state.s, state.best, state.best_idx, state.acc)


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
    fill: FillRule | None = None,
) -> HeadOutput:
    """Streaming (online-softmax) head in torch; peak extra memory is O(N * chunk + N * D)."""
    n, vocab, dev = hidden.shape[0], weight.shape[0], hidden.device
    h = hidden.to(weight.dtype)
    ban = sorted_banned(banned, vocab, dev)
    row_ban = None if row_banned is None else row_banned.to(device=dev, dtype=torch.int64).reshape(n, -1)
    rows = torch.arange(n, device=dev) if rows is None else rows.to(device=dev, dtype=torch.int64)
    run = _Streaming(row_keys(seed, rows), weight, chunk, truncated=soft_eps > 0.0)
    track = FillTracker(fill, n, dev) if fill is not None else None
    held = None  # the filler's z, held out of the pass until its rule is known
    for c0 in range(0, vocab, chunk):
        x = _chunk_x(h, weight[c0 : c0 + chunk], softcap)
        if track is not None:
            track.see(x, c0)
        z = _temper_(x, c0, temperature, ban, row_ban)
        col = track.local(c0, z.shape[1]) if track is not None else None
        if col is not None and c0 + z.shape[1] >= vocab:  # the last chunk: the rule is known now
            z[:, col] = torch.where(track.allowed(), z[:, col], torch.full_like(z[:, col], float("-inf")))
        elif col is not None:
            held = z[:, col].clone()
            z[:, col] = float("-inf")
        run.add(z, c0, masked=ban is not None or row_ban is not None or track is not None)
    run.race.flush(run.m)
    if track is not None:
        allowed = track.allowed()
        if held is not None:
            run.merge(held, fill.token, allowed)
        row_ban = ban_column(fill, allowed, row_ban)  # for the truncated soft embedding's exact rows
    if run.acc is not None:
        soft = run.acc.div_(run.l[:, None]).mul_(embed_scale)
    else:
        top_v, order = torch.topk(torch.cat(run.top_vs, dim=1), run.topk, dim=1)
        top_i = torch.gather(torch.cat(run.top_is, dim=1), 1, order)
        soft = _truncated_soft(
            hidden, weight, top_v, top_i, run.m, run.l, soft_eps, temperature, softcap, ban, chunk, row_ban
        ).mul_(embed_scale)
    return HeadOutput(
        argmax=run.best_idx,
        sample=run.race.idx,
        entropy=torch.log(run.l) - run.s / run.l,
        confidence=1.0 / run.l,
        soft_embedding=soft.to(weight.dtype),
        fill_probability=track.probability() if track is not None else None,
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
