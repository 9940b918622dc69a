"""The filler rule inside the head's own pass over the vocabulary.

The rule needs p(filler) at temperature 1, ``exp(x_fill - logsumexp(x))`` over the soft-capped
logits ``x``, before it can say whether the filler may be sampled; the head's statistics are at
the sampling temperature. Both come from the same logits tile: the streaming heads keep a running
log-sum-exp of ``x`` beside their own statistics and hold the filler's column out of them. After
the pass, where the rule allows it, the filler is merged back in as one more token
(:func:`merge_token`): one more online-softmax update, one more argmax and Gumbel candidate, one
embedding row. No second pass over the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .head_types import FillRule


class FillTracker:
    """Running logsumexp of the temperature-1 logits and the filler's own logit, fed tile by tile."""

    def __init__(self, rule: FillRule, n: int, device: torch.device) -> None:
        self.rule = rule
        self.lse = torch.full((n,), float("-inf"), device=device, dtype=torch.float32)
        self.x_fill = torch.full((n,), float("-inf"), device=device, dtype=torch.float32)

    def local(self, c0: int, width: int) -> int | None:
        """The filler's column in the tile [c0, c0 + width), or None."""
        col = self.rule.token - c0
        return col if 0 <= col < width else None

    def see(self, x: torch.Tensor, c0: int) -> None:
        """Take one tile of soft-capped float32 logits ``x`` [N, width] starting at id ``c0``."""
        self.lse = torch.logaddexp(self.lse, torch.logsumexp(x, dim=1))
        col = self.local(c0, x.shape[1])
        if col is not None:
            self.x_fill = x[:, col].clone()

    def probability(self) -> torch.Tensor:
        """p(filler) at temperature 1 [N] (complete once every tile was seen)."""
        return torch.exp(self.x_fill - self.lse)

    def allowed(self) -> torch.Tensor:
        return self.probability() >= self.rule.threshold


@dataclass
class OnlineState:
    """A streaming head's final statistics for rows [N], all relative to the running max ``m``.

    ``l`` = sum exp(z - m), ``s`` = sum exp(z - m) (z - m); ``acc`` = sum exp(z - m) E_i over the
    tokens the soft embedding kept (float32 [N, D]) and ``acc_l`` their mass (``l`` when exact).
    """

    m: torch.Tensor
    l: torch.Tensor  # noqa: E741
    s: torch.Tensor
    best: torch.Tensor
    best_idx: torch.Tensor
    acc: torch.Tensor | None = None
    acc_l: torch.Tensor | None = None


def merge_token(state: OnlineState, z: torch.Tensor, token: int, embedding: torch.Tensor,
                allowed: torch.Tensor) -> OnlineState:
    """Add one token with logits ``z`` [N] to ``state`` where ``allowed`` (elsewhere unchanged).

    ``embedding`` is the token's row of E (float32 [D]). The argmax ties go to the lower id, as in
    a pass in vocabulary order. The caller enters the same token into its Gumbel race.
    """
    allowed = allowed & torch.isfinite(z)  # a filler banned outright stays banned
    neg_inf = torch.full_like(z, float("-inf"))
    zf = torch.where(allowed, z, neg_inf)
    m_new = torch.maximum(state.m, zf)
    shift = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
    seen = state.l > 0
    alpha = torch.where(seen, torch.exp(state.m - m_new), torch.zeros_like(m_new))
    delta = torch.where(seen, state.m - m_new, torch.zeros_like(m_new))
    p = torch.where(allowed, torch.exp(zf - shift), torch.zeros_like(zf))
    p_z = torch.where(allowed, p * (zf - shift), torch.zeros_like(zf))
    take = allowed & ((zf > state.best) | ((zf == state.best) & (token < state.best_idx)))
    acc = acc_l = None
    if state.acc is not None:
        acc = state.acc * alpha[:, None] + p[:, None] * embedding[None, :]
        acc_l = alpha * state.acc_l + p
    return OnlineState(
        m=m_new, l=alpha * state.l + p, s=alpha * (state.s + state.l * delta) + p_z,
        best=torch.where(take, zf, state.best),
        best_idx=torch.where(take, torch.full_like(state.best_idx, token), state.best_idx),
        acc=acc, acc_l=acc_l,
    )


def ban_column(rule: FillRule, allowed: torch.Tensor, row_ban: torch.Tensor | None) -> torch.Tensor:
    """``row_ban`` [N, K] (or None) with one more column banning the filler where not ``allowed``."""
    col = torch.where(allowed, -1, rule.token).to(torch.int64)[:, None]
    return col if row_ban is None else torch.cat([row_ban, col], dim=1)
