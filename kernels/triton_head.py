"""Triton version of the fused diffusion head (same contract as ``chunked_head``).

Grid ``(row blocks, vocab splits)``: each program owns ``BLOCK_N`` rows and one contiguous slice
of the vocabulary, which it walks in ``BLOCK_V`` tiles. Per tile it computes the logits with a
K-loop of ``tl.dot`` (D need not be a power of two: loads are masked), soft-caps, applies the
temperature and the banned masks (global ids and a few ids per row), updates the online-softmax statistics, the argmax, the Gumbel
argmax (noise hashed in uint32 exactly as :mod:`.noise` does in int64) and the soft-embedding
accumulator. The accumulator (``[BLOCK_N, D]``) is too large for registers at D = 2304, so it
lives in a float32 scratch ``[splits, N, D]`` that the program read-modify-writes in
``BLOCK_DD`` column slices; ``m_acc`` records the max it is currently scaled to, so tiles that
add nothing need no rescale. A few ``[splits, N]`` partials are merged in torch afterwards.

Splitting the vocabulary gives the GPU enough programs when N is small (N=64 is 4 row blocks).
With ``soft_eps > 0`` a tile's soft-embedding matmul is skipped when none of its tokens is
within ``log(V / eps)`` of the running max: each skipped token has probability below eps/V, so
the dropped mass is below eps (renormalized over what was kept). That is a different truncation
from the chunked path's top-K, with the same error bound; GPUs prefer a branch to a top-K.

Runs on the CPU under ``TRITON_INTERPRET=1`` (that is how the tests check it).
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from .fill_rule import OnlineState, merge_token
from .head_types import FillRule, HeadOutput
from .noise import gumbel_from_uniform, seed_key, uniform

_NEG_BIG = -1e30


@triton.jit
def _fmix32(h):
    h ^= h >> 16
    h *= 0x85EBCA6B
    h ^= h >> 13
    h *= 0xC2B2AE35
    h ^= h >> 16
    return h


@triton.jit
def _head_kernel(
    h_ptr,
    rid_ptr,
    w_ptr,
    ban_ptr,
    rban_ptr,
    stat_ptr,
    idx_ptr,
    acc_ptr,
    N,
    V,
    D,
    span,
    key,
    cap,
    temperature,
    skip_thr,
    fill_id,
    stride_h,
    stride_w,
    HAS_CAP: tl.constexpr,
    HAS_BAN: tl.constexpr,
    ROW_BANS: tl.constexpr,
    ROUND_BF16: tl.constexpr,
    SOFT_SKIP: tl.constexpr,
    FILL: tl.constexpr,
    IEEE: tl.constexpr,
    DOT_F32: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_DD: tl.constexpr,
    STATS: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < N
    rid = tl.load(rid_ptr + rows, mask=rmask, other=0)
    rkey = _fmix32(rid.to(tl.uint32) ^ key.to(tl.uint32))
    v_lo = pid_s * span
    v_hi = tl.minimum(v_lo + span, V)

    neg_inf = float("-inf")
    m = tl.full([BLOCK_N], neg_inf, tl.float32)
    l_sum = tl.zeros([BLOCK_N], tl.float32)
    s_sum = tl.zeros([BLOCK_N], tl.float32)
    best = tl.full([BLOCK_N], neg_inf, tl.float32)
    best_i = tl.zeros([BLOCK_N], tl.int64)
    gbest = tl.full([BLOCK_N], neg_inf, tl.float32)
    gbest_i = tl.zeros([BLOCK_N], tl.int64)
    m_acc = tl.full([BLOCK_N], neg_inf, tl.float32)
    l_kept = tl.zeros([BLOCK_N], tl.float32)
    m1 = tl.full([BLOCK_N], neg_inf, tl.float32)  # FILL: temperature-1 running max and sum,
    l1 = tl.zeros([BLOCK_N], tl.float32)  # and the filler's own logit (0 outside its split)
    x_fill = tl.zeros([BLOCK_N], tl.float32)
    margin: tl.constexpr = 20.4497  # noise.GUMBEL_MAX - noise.GUMBEL_MIN + 1

    for v0 in range(v_lo, v_hi, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        cmask = cols < v_hi
        x = tl.zeros([BLOCK_N, BLOCK_V], tl.float32)
        for k0 in range(0, D, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            kmask = ks < D
            a = tl.load(
                h_ptr + rows[:, None] * stride_h + ks[None, :],
                mask=rmask[:, None] & kmask[None, :],
                other=0.0,
            )
            b = tl.load(
                w_ptr + cols[None, :] * stride_w + ks[:, None],
                mask=cmask[None, :] & kmask[:, None],
                other=0.0,
            )
            if DOT_F32:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            if IEEE:
                x = tl.dot(a, b, x, input_precision="ieee")
            else:
                x = tl.dot(a, b, x)
        if ROUND_BF16:
            # bf16 logits like the stock lm_head: round-to-nearest-even by hand, because the
            # interpreter's float32 -> bf16 cast truncates.
            xb = x.to(tl.uint32, bitcast=True)
            xb = (xb + 0x7FFF + ((xb >> 16) & 1)) & 0xFFFF0000
            x = xb.to(tl.float32, bitcast=True)
        if HAS_CAP:
            y = x / cap
            e = tl.exp(-2.0 * tl.abs(y))
            t = (1.0 - e) / (1.0 + e)
            x = tl.where(y < 0, -t, t) * cap
        z = x / temperature
        valid = rmask[:, None] & cmask[None, :]
        if FILL:
            x1 = tl.where(valid, x, neg_inf)
            m1_new = tl.maximum(m1, tl.max(x1, axis=1))
            shift1 = tl.where(m1_new > neg_inf, m1_new, 0.0)
            l1 = tl.where(l1 > 0, l1 * tl.exp(m1 - shift1), 0.0) + tl.sum(tl.exp(x1 - shift1[:, None]), axis=1)
            m1 = m1_new
            x_fill += tl.sum(tl.where((cols == fill_id)[None, :] & valid, x, 0.0), axis=1)
            valid = valid & (cols != fill_id)[None, :]  # held out; merged after the pass if allowed
        if HAS_BAN:
            bn = tl.load(ban_ptr + cols, mask=cmask, other=0)
            valid = valid & (bn == 0)[None, :]
        for j in tl.static_range(ROW_BANS):
            rban = tl.load(rban_ptr + rows * ROW_BANS + j, mask=rmask, other=-1)
            valid = valid & (cols[None, :] != rban[:, None])
        z = tl.where(valid, z, neg_inf)

        tmax = tl.max(z, axis=1)
        targ = tl.argmax(z, axis=1, tie_break_left=True).to(tl.int64) + v0
        upd = tmax > best
        best = tl.where(upd, tmax, best)
        best_i = tl.where(upd, targ, best_i)
        m_new = tl.maximum(m, tmax)

        # Hash only tiles holding a token that can still win the Gumbel race (see GUMBEL_MARGIN).
        if tl.max(tl.max(tl.where(z >= (m_new - margin)[:, None], 1, 0), axis=1), axis=0) > 0:
            bits = _fmix32(cols.to(tl.uint32)[None, :] ^ rkey[:, None])
            u = ((bits >> 9).to(tl.float32) + 0.5) * 1.1920928955078125e-07
            gv = z - tl.log(-tl.log(u))
            gmax = tl.max(gv, axis=1)
            garg = tl.argmax(gv, axis=1, tie_break_left=True).to(tl.int64) + v0
            gupd = gmax > gbest
            gbest = tl.where(gupd, gmax, gbest)
            gbest_i = tl.where(gupd, garg, gbest_i)

        seen = l_sum > 0
        delta = tl.where(seen, m, 0.0) - tl.where(seen, m_new, 0.0)
        alpha = tl.where(seen, tl.exp(delta), 0.0)
        shift = tl.where(m_new > neg_inf, m_new, 0.0)
        zs = tl.maximum(z - shift[:, None], _NEG_BIG)
        p = tl.exp(zs)
        s_sum = alpha * (s_sum + l_sum * delta) + tl.sum(p * zs, axis=1)
        l_sum = alpha * l_sum + tl.sum(p, axis=1)
        m = m_new

        if SOFT_SKIP:
            keep = z >= (m_new - skip_thr)[:, None]
            pk = tl.where(keep, p, 0.0)
            do_tile = tl.max(tl.max(tl.where(keep, 1, 0), axis=1), axis=0) > 0
        else:
            pk = p
            do_tile = True
        if do_tile:
            beta = tl.where(l_kept > 0, tl.exp(m_acc - shift), 0.0)
            l_kept = beta * l_kept + tl.sum(pk, axis=1)
            m_acc = shift
            pw = pk.to(w_ptr.dtype.element_ty)
            for d0 in range(0, D, BLOCK_DD):
                ds = d0 + tl.arange(0, BLOCK_DD)
                dmask = ds < D
                e_t = tl.load(
                    w_ptr + cols[:, None] * stride_w + ds[None, :],
                    mask=cmask[:, None] & dmask[None, :],
                    other=0.0,
                )
                if DOT_F32:
                    part = tl.dot(pw.to(tl.float32), e_t.to(tl.float32), input_precision="ieee")
                elif IEEE:
                    part = tl.dot(pw, e_t, input_precision="ieee")
                else:
                    part = tl.dot(pw, e_t)
                a_ptrs = acc_ptr + (pid_s * N + rows[:, None]) * D + ds[None, :]
                amask = rmask[:, None] & dmask[None, :]
                old = tl.load(a_ptrs, mask=amask, other=0.0)
                tl.store(a_ptrs, old * beta[:, None] + part, mask=amask)

    base = pid_s * STATS * N
    tl.store(stat_ptr + base + 0 * N + rows, m, mask=rmask)
    tl.store(stat_ptr + base + 1 * N + rows, l_sum, mask=rmask)
    tl.store(stat_ptr + base + 2 * N + rows, s_sum, mask=rmask)
    tl.store(stat_ptr + base + 3 * N + rows, best, mask=rmask)
    tl.store(stat_ptr + base + 4 * N + rows, gbest, mask=rmask)
    tl.store(stat_ptr + base + 5 * N + rows, m_acc, mask=rmask)
    tl.store(stat_ptr + base + 6 * N + rows, l_kept, mask=rmask)
    if FILL:
        tl.store(stat_ptr + base + 7 * N + rows, m1, mask=rmask)
        tl.store(stat_ptr + base + 8 * N + rows, l1, mask=rmask)
        tl.store(stat_ptr + base + 9 * N + rows, x_fill, mask=rmask)
    tl.store(idx_ptr + pid_s * 2 * N + rows, best_i, mask=rmask)
    tl.store(idx_ptr + pid_s * 2 * N + N + rows, gbest_i, mask=rmask)


def _interpreting() -> bool:
    """True under TRITON_INTERPRET=1, whose tl.dot mishandles bf16 (dots then run on float32 copies)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _default_splits(n_rows: int, vocab: int, block_n: int, block_v: int, device: torch.device) -> int:
    """Enough programs to fill the GPU; two on the CPU interpreter (still exercises the merge)."""
    tiles = triton.cdiv(vocab, block_v)
    if device.type != "cuda":
        return max(1, min(2, tiles))
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    row_blocks = triton.cdiv(n_rows, block_n)
    return max(1, min(tiles, triton.cdiv(2 * sms, row_blocks)))


def triton_head(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    *,
    temperature: float,
    softcap: float | None,
    embed_scale: float,
    seed: int,
    banned: torch.Tensor | None = None,
    soft_eps: float = 0.0,
    rows: torch.Tensor | None = None,
    row_banned: torch.Tensor | None = None,
    fill: FillRule | None = None,
    splits: int | None = None,
    block_n: int = 16,
    block_v: int = 128,
    block_k: int = 64,
    block_dd: int = 64,
) -> HeadOutput:
    """Launch the kernel and merge the per-split partials into a ``HeadOutput``."""
    n, d = hidden.shape
    vocab = weight.shape[0]
    dev = hidden.device
    h = hidden.to(weight.dtype).contiguous()
    w = weight.contiguous()
    ban = _ban_mask(banned, vocab, dev)
    if splits is None:
        splits = _default_splits(n, vocab, block_n, block_v, dev)
    span = triton.cdiv(triton.cdiv(vocab, splits), block_v) * block_v
    splits = triton.cdiv(vocab, span)
    stats = torch.empty(splits, 10 if fill is not None else 7, n, device=dev, dtype=torch.float32)
    idx = torch.empty(splits, 2, n, device=dev, dtype=torch.int64)
    acc = torch.zeros(splits, n, d, device=dev, dtype=torch.float32)
    rid = torch.arange(n, device=dev) if rows is None else rows.to(device=dev, dtype=torch.int64).contiguous()
    rban = rid if row_banned is None else row_banned.to(device=dev, dtype=torch.int64).reshape(n, -1).contiguous()
    _head_kernel[(triton.cdiv(n, block_n), splits)](
        h, rid, w, ban, rban, stats, idx, acc,
        n, vocab, d, span, seed_key(seed),
        float(softcap) if softcap is not None else 1.0,
        float(temperature),
        math.log(vocab / soft_eps) if soft_eps > 0 else 0.0,
        fill.token if fill is not None else -1,
        h.stride(0), w.stride(0),
        HAS_CAP=softcap is not None,
        HAS_BAN=banned is not None and banned.numel() > 0,
        ROW_BANS=0 if row_banned is None else rban.shape[1],
        ROUND_BF16=weight.dtype == torch.bfloat16,
        SOFT_SKIP=soft_eps > 0,
        FILL=fill is not None,
        IEEE=weight.dtype == torch.float32,
        DOT_F32=_interpreting(),
        BLOCK_N=block_n, BLOCK_V=block_v, BLOCK_K=block_k, BLOCK_DD=block_dd,
        STATS=stats.shape[1],
    )
    state, gbest, gidx = _merge_splits(stats, idx, acc)
    p_fill = None
    if fill is not None:
        p_fill, z_fill, allowed = _fill_partials(stats, fill, temperature, ban, None if row_banned is None else rban)
        state = merge_token(state, z_fill, fill.token, weight[fill.token].to(torch.float32), allowed)
        allowed = allowed & torch.isfinite(z_fill)
        g = z_fill + gumbel_from_uniform(uniform(seed, rid, fill.token))
        take = allowed & ((g > gbest) | ((g == gbest) & (fill.token < gidx)))
        gidx = torch.where(take, torch.full_like(gidx, fill.token), gidx)
    return HeadOutput(
        argmax=state.best_idx,
        sample=gidx,
        entropy=torch.log(state.l) - state.s / state.l,
        confidence=1.0 / state.l,
        soft_embedding=(state.acc / state.acc_l[:, None] * embed_scale).to(weight.dtype),
        fill_probability=p_fill,
    )


def _ban_mask(banned: torch.Tensor | None, vocab: int, device: torch.device) -> torch.Tensor:
    """int8 [V], 1 where an id is banned for every row."""
    ban = torch.zeros(vocab, dtype=torch.int8, device=device)
    if banned is not None and banned.numel() > 0:
        ids = banned.to(device=device, dtype=torch.int64).flatten()
        if ids.min() < 0 or ids.max() >= vocab:
            raise ValueError(f"banned ids must lie in [0, {vocab})")
        ban[ids] = 1
    return ban


def _merge_splits(stats: torch.Tensor, idx: torch.Tensor,
                  acc: torch.Tensor) -> tuple[OnlineState, torch.Tensor, torch.Tensor]:
    """One online-softmax state (soft-embedding accumulator included) and the Gumbel winner from
    the per-split partials."""
    m_s, l_s, s_s, best_s, gbest_s, macc_s, lk_s = stats[:, :7].unbind(1)
    big_m = m_s.max(dim=0).values
    seen = l_s > 0
    wgt = torch.where(seen, torch.exp(m_s - big_m), torch.zeros_like(m_s))
    dlt = torch.where(seen, m_s - big_m, torch.zeros_like(m_s))
    pick = best_s.argmax(dim=0, keepdim=True)  # first split wins ties = lowest vocab id
    gpick = gbest_s.argmax(dim=0, keepdim=True)
    beta = torch.where(lk_s > 0, torch.exp(macc_s - big_m), torch.zeros_like(macc_s))
    state = OnlineState(
        m=big_m, l=(wgt * l_s).sum(dim=0), s=(wgt * (s_s + l_s * dlt)).sum(dim=0),
        best=best_s.gather(0, pick)[0], best_idx=idx[:, 0].gather(0, pick)[0],
        acc=(beta[:, :, None] * acc).sum(dim=0), acc_l=(beta * lk_s).sum(dim=0),
    )
    return state, gbest_s.gather(0, gpick)[0], idx[:, 1].gather(0, gpick)[0]


def _fill_partials(stats: torch.Tensor, fill: FillRule, temperature: float, ban: torch.Tensor,
                   row_ban: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """p(filler) at temperature 1, the filler's z and where the rule allows it, from the partials."""
    m1_s, l1_s, xf_s = stats[:, 7:10].unbind(1)
    big_m1 = m1_s.max(dim=0).values
    l1 = torch.where(l1_s > 0, l1_s * torch.exp(m1_s - big_m1), torch.zeros_like(l1_s)).sum(dim=0)
    x_fill = xf_s.sum(dim=0)
    p_fill = torch.exp(x_fill - (big_m1 + torch.log(l1)))
    z_fill = x_fill / temperature
    banned = ban[fill.token] != 0
    if row_ban is not None:
        banned = banned | (row_ban == fill.token).any(dim=1)
    z_fill = torch.where(banned, torch.full_like(z_fill, float("-inf")), z_fill)
    return p_fill, z_fill, p_fill >= fill.threshold
