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

from .noise import seed_key

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
    stride_h,
    stride_w,
    HAS_CAP: tl.constexpr,
    HAS_BAN: tl.constexpr,
    ROW_BANS: tl.constexpr,
    ROUND_BF16: tl.constexpr,
    SOFT_SKIP: tl.constexpr,
    IEEE: tl.constexpr,
    DOT_F32: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_DD: tl.constexpr,
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

    base = pid_s * 7 * N
    tl.store(stat_ptr + base + 0 * N + rows, m, mask=rmask)
    tl.store(stat_ptr + base + 1 * N + rows, l_sum, mask=rmask)
    tl.store(stat_ptr + base + 2 * N + rows, s_sum, mask=rmask)
    tl.store(stat_ptr + base + 3 * N + rows, best, mask=rmask)
    tl.store(stat_ptr + base + 4 * N + rows, gbest, mask=rmask)
    tl.store(stat_ptr + base + 5 * N + rows, m_acc, mask=rmask)
    tl.store(stat_ptr + base + 6 * N + rows, l_kept, mask=rmask)
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
    splits: int | None = None,
    block_n: int = 16,
    block_v: int = 128,
    block_k: int = 64,
    block_dd: int = 64,
):
    """Launch the kernel and merge the per-split partials into a ``HeadOutput``."""
    from .diffusion_head import HeadOutput

    n, d = hidden.shape
    vocab = weight.shape[0]
    dev = hidden.device
    h = hidden.to(weight.dtype).contiguous()
    w = weight.contiguous()
    ban = torch.zeros(vocab, dtype=torch.int8, device=dev)
    has_ban = banned is not None and banned.numel() > 0
    if has_ban:
        ids = banned.to(device=dev, dtype=torch.int64).flatten()
        if ids.min() < 0 or ids.max() >= vocab:
            raise ValueError(f"banned ids must lie in [0, {vocab})")
        ban[ids] = 1
    if splits is None:
        splits = _default_splits(n, vocab, block_n, block_v, dev)
    span = triton.cdiv(triton.cdiv(vocab, splits), block_v) * block_v
    splits = triton.cdiv(vocab, span)
    stats = torch.empty(splits, 7, n, device=dev, dtype=torch.float32)
    idx = torch.empty(splits, 2, n, device=dev, dtype=torch.int64)
    acc = torch.zeros(splits, n, d, device=dev, dtype=torch.float32)
    skip_thr = math.log(vocab / soft_eps) if soft_eps > 0 else 0.0
    grid = (triton.cdiv(n, block_n), splits)
    rid = torch.arange(n, device=dev) if rows is None else rows.to(device=dev, dtype=torch.int64).contiguous()
    rban = rid if row_banned is None else row_banned.to(device=dev, dtype=torch.int64).reshape(n, -1).contiguous()
    _head_kernel[grid](
        h,
        rid,
        w,
        ban,
        rban,
        stats,
        idx,
        acc,
        n,
        vocab,
        d,
        span,
        seed_key(seed),
        float(softcap) if softcap is not None else 1.0,
        float(temperature),
        skip_thr,
        h.stride(0),
        w.stride(0),
        HAS_CAP=softcap is not None,
        HAS_BAN=has_ban,
        ROW_BANS=0 if row_banned is None else rban.shape[1],
        ROUND_BF16=weight.dtype == torch.bfloat16,
        SOFT_SKIP=soft_eps > 0,
        IEEE=weight.dtype == torch.float32,
        DOT_F32=_interpreting(),
        BLOCK_N=block_n,
        BLOCK_V=block_v,
        BLOCK_K=block_k,
        BLOCK_DD=block_dd,
    )
    m_s, l_s, s_s, best_s, gbest_s, macc_s, lk_s = stats.unbind(1)
    big_m = m_s.max(dim=0).values
    seen = l_s > 0
    wgt = torch.where(seen, torch.exp(m_s - big_m), torch.zeros_like(m_s))
    dlt = torch.where(seen, m_s - big_m, torch.zeros_like(m_s))
    l_tot = (wgt * l_s).sum(dim=0)
    s_tot = (wgt * (s_s + l_s * dlt)).sum(dim=0)
    pick = best_s.argmax(dim=0, keepdim=True)  # first split wins ties = lowest vocab id
    gpick = gbest_s.argmax(dim=0, keepdim=True)
    beta = torch.where(lk_s > 0, torch.exp(macc_s - big_m), torch.zeros_like(macc_s))
    soft = (beta[:, :, None] * acc).sum(dim=0) / (beta * lk_s).sum(dim=0)[:, None]
    return HeadOutput(
        argmax=idx[:, 0].gather(0, pick)[0],
        sample=idx[:, 1].gather(0, gpick)[0],
        entropy=torch.log(l_tot) - s_tot / l_tot,
        confidence=1.0 / l_tot,
        soft_embedding=(soft * embed_scale).to(weight.dtype),
    )
