"""The streaming head's sampler: Gumbel-max over the vocabulary without hashing all of it."""

from __future__ import annotations

import torch

from .noise import (
    GUMBEL_MAX,
    GUMBEL_MIN,
    U_SCALE,
    fmix32_,
    fmix32_i32_,
    gumbel_from_uniform,
    to_int32_bits,
    uniform_from_i32,
)

# A token whose z is this far below the running max can never win the Gumbel race: the winner
# scores at least max(z) + GUMBEL_MIN, the token at most z + GUMBEL_MAX. One unit of slack
# covers float32 rounding.
GUMBEL_MARGIN = GUMBEL_MAX - GUMBEL_MIN + 1.0

class GumbelRace:
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

    def gumbel(self, token: int) -> torch.Tensor:
        """Each row's Gumbel noise for one token [N] (the same numbers the race hashes)."""
        bits = fmix32_(torch.full_like(self.keys, token) ^ self.keys)
        return gumbel_from_uniform(((bits >> 9).to(torch.float32) + 0.5) * U_SCALE)

    def offer(self, z: torch.Tensor, token: int, allowed: torch.Tensor) -> None:
        """Enter one token with logits ``z`` [N] after the pass, where ``allowed``; call after ``flush``.

        Ties go to the lower id, as if the token had been raced in vocabulary order.
        """
        vals = z + self.gumbel(token)
        take = allowed & ((vals > self.best) | ((vals == self.best) & (token < self.idx)))
        self.best = torch.where(take, vals, self.best)
        self.idx = torch.where(take, torch.full_like(self.idx, token), self.idx)
