"""The fused diffusion head against its plain-torch reference.

Tolerances (why they are what they are):
- argmax and sample: EXACT. All paths use the same counter-based Gumbel noise, and the chunked
  path uses the same torch ops on the same values, so even exact ties (saturated soft-cap) break
  the same way (lowest id). The Triton kernel computes tanh/log with its own instructions, so
  under saturation it may pick another id of the same (tied) z: that case checks tie validity.
- entropy / confidence: 1e-4 absolute (float32 sums in a different order).
- soft embedding: float32 1e-5 relative to the largest |value|; bf16 2**-6 of it (the reference
  rounds probabilities and the product to bf16 once, the streaming paths once per chunk).
- soft_eps: ||truncated - exact|| <= 2 * eps * max_i ||E_i|| * embed_scale (+ float slack).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from dgls.kernels.diffusion_head import SOFT_TOPK, FillRule, HeadOutput, diffusion_head
from dgls.kernels.gumbel_race import GumbelRace
from dgls.kernels.noise import (
    fmix32,
    fmix32_,
    fmix32_i32_,
    fmix32_int,
    gumbel_rows,
    gumbel_tile,
    row_keys,
    to_int32_bits,
    uniform,
    uniform_from_i32,
)
from dgls.kernels.reference import reference_logits

CAP = 30.0


def _data(n: int, v: int, d: int, dtype: torch.dtype, scale: float = 3.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(n, d, generator=g) * scale / d**0.5 * 4).to(dtype)
    weight = torch.randn(v, d, generator=g).to(dtype)
    return hidden, weight


def _kw(seed: int = 1234, softcap: float | None = CAP, banned=None, temperature: float = 0.7):
    return dict(temperature=temperature, softcap=softcap, embed_scale=1.7, seed=seed, banned=banned)


def _assert_close(out: HeadOutput, ref: HeadOutput, dtype: torch.dtype, exact_ids: bool = True) -> None:
    if exact_ids:
        assert torch.equal(out.argmax, ref.argmax)
        assert torch.equal(out.sample, ref.sample)
    assert out.entropy.dtype == torch.float32 and out.confidence.dtype == torch.float32
    torch.testing.assert_close(out.entropy, ref.entropy, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.confidence, ref.confidence, atol=1e-4, rtol=0)
    assert out.soft_embedding.dtype == dtype and out.soft_embedding.shape == ref.soft_embedding.shape
    a, b = out.soft_embedding.float(), ref.soft_embedding.float()
    rel = 1e-5 if dtype == torch.float32 else 2**-6
    assert (a - b).abs().max() <= rel * b.abs().max() + 1e-6


# ---------------------------------------------------------------- noise


def test_fmix32_torch_matches_scalar():
    xs = [0, 1, 2, 12345, 2**31 - 1, 2**31, 2**32 - 1, 0xDEADBEEF]
    got = fmix32(torch.tensor(xs, dtype=torch.int64)).tolist()
    assert got == [fmix32_int(x) for x in xs]
    big = torch.randint(0, 2**32, (3, 1001), dtype=torch.int64)  # odd length: vector tails too
    assert torch.equal(fmix32_(big.clone()), fmix32(big))
    fast = fmix32_i32_(to_int32_bits(big))
    assert torch.equal(fast.to(torch.int64) & 0xFFFFFFFF, fmix32(big))
    assert torch.equal(uniform_from_i32(fast), ((fmix32(big) >> 9).float() + 0.5) * 2.0**-23)


def test_noise_is_a_pure_function_of_seed_row_col():
    full = gumbel_tile(7, 0, 5, 0, 1000)
    assert torch.equal(gumbel_tile(7, 2, 2, 300, 777), full[2:4, 300:777])
    assert torch.equal(gumbel_tile(7, 0, 5, 0, 1000), full)
    assert not torch.equal(gumbel_tile(8, 0, 5, 0, 1000), full)
    u = uniform(7, torch.arange(5)[:, None], torch.arange(1000)[None, :])
    torch.testing.assert_close(-torch.log(-torch.log(u)), full, rtol=0, atol=0)
    assert torch.isfinite(full).all()


def test_uniform_is_uniform():
    u = uniform(3, torch.arange(32)[:, None], torch.arange(2048)[None, :]).flatten()
    assert 0.0 < u.min() and u.max() < 1.0
    counts = torch.histc(u, bins=16, min=0.0, max=1.0)
    expected = u.numel() / 16
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 45.0  # chi-square, 15 dof: p ~ 1e-4


def test_gumbel_max_samples_follow_softmax():
    z = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5]])
    p = torch.softmax(z, dim=-1)[0]
    draws = 20000
    noise = gumbel_tile(17, 0, draws, 0, 5)  # one row per draw: rows are independent streams
    freq = torch.bincount(torch.argmax(z + noise, dim=-1), minlength=5).float() / draws
    assert (freq - p).abs().max() < 0.015  # ~4.5 sigma at p=0.5, n=20000
    seeds = torch.stack([torch.argmax(z + gumbel_tile(s, 0, 1, 0, 5), dim=-1)[0] for s in range(2000)])
    freq = torch.bincount(seeds, minlength=5).float() / 2000
    assert (freq - p).abs().max() < 0.05  # across seeds too (~4.5 sigma at n=2000)


@pytest.mark.parametrize("budget", [1024, 10**9])
def test_gumbel_race_equals_dense_gumbel_max(budget):
    """The lazy race (sparse queue + flushes, dense chunks) picks exactly argmax(z + g)."""
    g = torch.Generator().manual_seed(4)
    n, v, chunk = 10, 5000, 250
    z = torch.round(torch.randn(n, v, generator=g) * 3)  # many exact ties in z
    z[:, 5] = 60.0  # peaked rows: once the peak is seen the race queues almost nothing
    z[6, 5], z[6, 3000] = 0.0, 60.0  # a late peak: its row queues whole chunks until then
    z[7, 40:60] = 60.0  # a tied peak
    z[3, 200:300] = float("-inf")  # banned ids
    if budget > 10**6:
        z[8, 5] = 0.0  # one flat row: chunks go dense
    rows = torch.arange(n) * 7 + 3
    keys = row_keys(11, rows)
    race = GumbelRace(keys, budget=budget)
    m = torch.full((n,), float("-inf"))
    for c0 in range(0, v, chunk):
        zc = z[:, c0 : c0 + chunk]
        m = torch.maximum(m, zc.max(dim=1).values)
        race.add(zc, m, c0)
    race.flush(m)
    assert torch.equal(race.idx, torch.argmax(z + gumbel_rows(11, rows, 0, v), dim=1))


# ---------------------------------------------------------------- chunked vs reference

CASES = [
    # n, v, d, chunk
    (1, 1000, 24, 256),
    (7, 3001, 33, 512),
    (16, 5000, 64, 8192),  # chunk larger than V
    (3, 257, 5, 64),  # V = 4 chunks + 1
    (5, 103, 17, 1),  # chunk of one token
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n,v,d,chunk", CASES)
def test_chunked_matches_reference(n, v, d, chunk, dtype):
    if chunk == 1 and dtype == torch.bfloat16:
        pytest.skip("one bf16 case of chunk=1 is enough (covered in float32)")
    hidden, weight = _data(n, v, d, dtype, seed=n * v)
    ref = diffusion_head(hidden, weight, impl="reference", **_kw())
    out = diffusion_head(hidden, weight, impl="chunked", chunk=chunk, **_kw())
    _assert_close(out, ref, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_no_softcap_and_banned(dtype):
    hidden, weight = _data(9, 2000, 40, dtype, scale=6.0, seed=5)
    ref0 = diffusion_head(hidden, weight, impl="reference", **_kw(softcap=None))
    banned = torch.cat([ref0.argmax[:4], torch.tensor([0, 1999, 1024])])  # ban some winners
    ref = diffusion_head(hidden, weight, impl="reference", **_kw(softcap=None, banned=banned))
    out = diffusion_head(hidden, weight, impl="chunked", chunk=300, **_kw(softcap=None, banned=banned))
    _assert_close(out, ref, dtype)
    assert not torch.isin(out.argmax, banned).any() and not torch.isin(out.sample, banned).any()
    assert torch.isfinite(out.entropy).all() and torch.isfinite(out.soft_embedding.float()).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("soft_eps", [0.0, 0.01])
def test_row_banned_matches_reference(dtype, soft_eps):
    """One extra banned id per row (-1: none), as the denoiser bans each noised slot's own token."""
    hidden, weight = _data(12, 1500, 36, dtype, scale=6.0, seed=11)
    ref0 = diffusion_head(hidden, weight, impl="reference", **_kw())
    row_banned = torch.where(torch.arange(12) % 3 == 0, torch.full((12,), -1), ref0.argmax)  # ban most winners
    row_banned[1] = 1499  # the last id of the last chunk
    ref = diffusion_head(hidden, weight, impl="reference", row_banned=row_banned, **_kw(banned=torch.tensor([0])))
    out = diffusion_head(hidden, weight, impl="chunked", chunk=256, soft_eps=soft_eps, row_banned=row_banned,
                         **_kw(banned=torch.tensor([0])))
    if soft_eps == 0:
        _assert_close(out, ref, dtype)
    else:  # the truncated soft embedding is within its eps bound; everything else is exact
        assert torch.equal(out.argmax, ref.argmax) and torch.equal(out.sample, ref.sample)
        torch.testing.assert_close(out.entropy, ref.entropy, atol=1e-4, rtol=0)
        err = (out.soft_embedding.float() - ref.soft_embedding.float()).norm(dim=1).max()
        slack = 1e-4 if dtype == torch.float32 else 2**-6 * float(ref.soft_embedding.float().abs().max()) * 6
        assert err <= 2 * soft_eps * float(weight.float().norm(dim=1).max()) * 1.7 + slack
    hit = row_banned >= 0
    assert not (out.argmax[hit] == row_banned[hit]).any() and not (out.sample[hit] == row_banned[hit]).any()
    assert torch.equal(out.argmax[~hit], ref0.argmax[~hit])
    assert torch.isfinite(out.entropy).all() and torch.isfinite(out.soft_embedding.float()).all()


def test_several_row_bans_per_row_match_reference():
    hidden, weight = _data(6, 900, 20, torch.float32, scale=6.0, seed=12)
    first = diffusion_head(hidden, weight, impl="reference", **_kw()).argmax
    second = diffusion_head(hidden, weight, impl="reference", row_banned=first, **_kw()).argmax
    row_banned = torch.stack([first, second], dim=1)
    row_banned[0, 1] = -1
    ref = diffusion_head(hidden, weight, impl="reference", row_banned=row_banned, **_kw())
    out = diffusion_head(hidden, weight, impl="chunked", chunk=128, row_banned=row_banned, **_kw())
    _assert_close(out, ref, torch.float32)
    assert out.argmax[0] == second[0]  # only its winner banned: the runner-up
    assert not (out.argmax[1:, None] == row_banned[1:]).any()


def _fill_threshold(hidden, weight, token, softcap):
    """A threshold between the two middle rows' p(token) at temperature 1: some rows pass, some do not."""
    p = torch.softmax(reference_logits(hidden, weight, temperature=1.0, softcap=softcap), dim=-1)[:, token]
    middle = p.sort().values[hidden.shape[0] // 2 - 1 : hidden.shape[0] // 2 + 1]
    return p, float(middle.mean())


def _fill_case(v, d, dtype, softcap, token, n=10, seed=13):
    """Rows pointing at `token` to different degrees, so its probability spans the threshold."""
    hidden, weight = _data(n, v, d, dtype, scale=2.0, seed=seed)
    hidden = (hidden.float() + weight[token].float() * torch.linspace(0.0, 2.0, n)[:, None]).to(dtype)
    return hidden, weight


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("softcap,chunk,token", [(CAP, 256, 0), (None, 100, 517), (CAP, 256, 999),
                                                 (CAP, 8192, 517), (CAP, 250, 999)])
@pytest.mark.parametrize("soft_eps", [0.0, 0.01])
def test_fill_rule_in_the_pass_matches_reference(dtype, softcap, chunk, token, soft_eps):
    """p(filler) at temperature 1 comes out of the head's own pass (first, middle and last chunk,
    the last one whole or not), and the filler is banned exactly where it is below the threshold."""
    hidden, weight = _fill_case(1000, 24, dtype, softcap, token)
    p, threshold = _fill_threshold(hidden, weight, token, softcap)
    rule = FillRule(token, threshold)
    kw = _kw(softcap=softcap, temperature=0.5)
    ref = diffusion_head(hidden, weight, impl="reference", fill=rule, **kw)
    out = diffusion_head(hidden, weight, impl="chunked", chunk=chunk, soft_eps=soft_eps, fill=rule, **kw)
    torch.testing.assert_close(ref.fill_probability, p)
    assert out.fill_probability.dtype == torch.float32
    torch.testing.assert_close(out.fill_probability, p, atol=1e-6, rtol=1e-4)
    low = p < threshold
    assert low.any() and (~low).any()
    assert not (ref.argmax[low] == token).any() and (ref.argmax[~low] == token).any()
    if soft_eps == 0:
        _assert_close(out, ref, dtype)
    else:
        assert torch.equal(out.argmax, ref.argmax) and torch.equal(out.sample, ref.sample)
        torch.testing.assert_close(out.entropy, ref.entropy, atol=1e-4, rtol=0)
    # where the rule allows the filler it changes nothing
    free = diffusion_head(hidden, weight, impl="chunked", chunk=chunk, soft_eps=soft_eps, **kw)
    assert free.fill_probability is None
    assert torch.equal(free.argmax[~low], out.argmax[~low]) and torch.equal(free.sample[~low], out.sample[~low])
    torch.testing.assert_close(free.entropy[~low], out.entropy[~low], atol=1e-5, rtol=0)


def test_fill_rule_keeps_other_bans_and_ties():
    """A filler banned outright stays banned wherever the rule would allow it; a tie with a lower
    id goes to the lower id, as in a pass in vocabulary order."""
    hidden, weight = _fill_case(600, 16, torch.float32, CAP, 300, seed=21)
    p, threshold = _fill_threshold(hidden, weight, 300, CAP)
    rule = FillRule(300, threshold)
    for extra in (dict(banned=torch.tensor([300])), dict(row_banned=torch.full((10,), 300))):
        kw = {**_kw(temperature=0.5), **extra}
        ref = diffusion_head(hidden, weight, impl="reference", fill=rule, **kw)
        out = diffusion_head(hidden, weight, impl="chunked", chunk=128, fill=rule, **kw)
        _assert_close(out, ref, torch.float32)
        assert not (out.argmax == 300).any() and not (out.sample == 300).any()
    tied = torch.cat([weight[:300], weight[299:300], weight[301:]])  # id 300 ties with 299 everywhere
    ref = diffusion_head(hidden, tied, impl="reference", fill=FillRule(300, 0.0), **_kw())
    out = diffusion_head(hidden, tied, impl="chunked", chunk=128, fill=FillRule(300, 0.0), **_kw())
    _assert_close(out, ref, torch.float32)
    assert not (out.argmax == 300).any()
    with pytest.raises(ValueError, match="fill token"):
        diffusion_head(hidden, weight, fill=FillRule(600, 0.5), **_kw())


def test_row_banned_is_checked():
    hidden, weight = _data(4, 300, 8, torch.float32)
    with pytest.raises(ValueError, match="row_banned must have shape"):
        diffusion_head(hidden, weight, row_banned=torch.tensor([1, 2]), **_kw())
    with pytest.raises(ValueError, match="row_banned ids"):
        diffusion_head(hidden, weight, row_banned=torch.tensor([1, 2, 300, -1]), **_kw())


def test_chunked_saturated_softcap_ties_break_like_reference():
    hidden, weight = _data(8, 3000, 32, torch.float32, seed=11)
    hidden = hidden * 60  # |logits| ~ hundreds: tanh saturates, many z equal cap/T exactly
    z = reference_logits(hidden, weight, temperature=0.5, softcap=CAP)
    ties = (z == z.max(dim=1, keepdim=True).values).sum(dim=1)
    assert (ties > 1).any(), "the case must contain exact ties to test tie-breaking"
    ref = diffusion_head(hidden, weight, impl="reference", **_kw(temperature=0.5))
    out = diffusion_head(hidden, weight, impl="chunked", chunk=512, **_kw(temperature=0.5))
    _assert_close(out, ref, torch.float32)


def test_chunked_large_logits_near_cap():
    hidden, weight = _data(6, 4000, 48, torch.float32, seed=3)
    hidden = hidden * 8  # logits up to ~3 caps: z within a few percent of cap/T, not saturated
    ref = diffusion_head(hidden, weight, impl="reference", **_kw(temperature=0.4))
    assert ref.confidence.max() < 1.0
    out = diffusion_head(hidden, weight, impl="chunked", chunk=1000, **_kw(temperature=0.4))
    _assert_close(out, ref, torch.float32)


def test_entropy_matches_categorical_on_known_distribution():
    weight = torch.eye(4)
    hidden = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]) * 3
    out = diffusion_head(hidden, weight, impl="chunked", chunk=3, **_kw(softcap=None, temperature=1.0))
    z = hidden @ weight.T
    torch.testing.assert_close(out.entropy, torch.distributions.Categorical(logits=z).entropy())
    torch.testing.assert_close(out.entropy[1], torch.log(torch.tensor(4.0)))
    torch.testing.assert_close(out.confidence, torch.softmax(z, -1).max(-1).values)


def test_row_ids_make_samples_independent_of_batch_position():
    hidden, weight = _data(6, 700, 12, torch.float32, scale=1.0, seed=8)
    ids = torch.tensor([50, 51, 52, 9000, 9001, 9002])
    perm = torch.tensor([3, 4, 5, 0, 1, 2])  # the two "requests" swap places in the batch
    for impl in ("reference", "chunked"):
        a = diffusion_head(hidden, weight, impl=impl, chunk=128, rows=ids, **_kw())
        b = diffusion_head(hidden[perm], weight, impl=impl, chunk=128, rows=ids[perm], **_kw())
        assert torch.equal(a.sample[perm], b.sample)
    ref = diffusion_head(hidden, weight, impl="reference", rows=ids, **_kw())
    out = diffusion_head(hidden, weight, impl="chunked", chunk=100, rows=ids, **_kw())
    _assert_close(out, ref, torch.float32)
    with pytest.raises(ValueError):
        diffusion_head(hidden, weight, rows=ids[:3], **_kw())


def test_auto_is_chunked_on_cpu_and_bad_args_raise():
    hidden, weight = _data(2, 300, 8, torch.float32)
    a = diffusion_head(hidden, weight, **_kw())
    b = diffusion_head(hidden, weight, impl="chunked", **_kw())
    assert torch.equal(a.sample, b.sample) and torch.equal(a.soft_embedding, b.soft_embedding)
    with pytest.raises(ValueError):
        diffusion_head(hidden, weight, impl="nope", **_kw())
    with pytest.raises(ValueError):
        diffusion_head(hidden, weight[:, :4], **_kw())
    with pytest.raises(ValueError):
        diffusion_head(hidden, weight, **_kw(temperature=0.0))
    with pytest.raises(ValueError):
        diffusion_head(hidden, weight, **_kw(banned=torch.tensor([300])))


# ---------------------------------------------------------------- truncated soft embedding


def _peaked(n: int, v: int, d: int, dtype: torch.dtype, seed: int = 0):
    """Rows that point at one embedding each, like a trained model's confident positions."""
    hidden, weight = _data(n, v, d, dtype, scale=0.5, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    target = torch.randint(0, v, (n,), generator=g)
    hidden = (hidden.float() + weight[target].float() * 0.35).to(dtype)
    return hidden, weight


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("eps", [0.1, 0.01, 1e-3])
def test_truncated_soft_embedding_error_is_bounded_by_eps(dtype, eps):
    n, v, d = 12, 6000, 32
    hidden, weight = _peaked(n, v, d, dtype, seed=2)
    flat_h, _ = _data(4, v, d, dtype, scale=0.5, seed=9)  # flat rows: top-K cannot cover them
    hidden = torch.cat([hidden, flat_h])
    kw = _kw(temperature=0.7)
    exact = diffusion_head(hidden, weight, impl="reference", **kw)
    out = diffusion_head(hidden, weight, impl="chunked", chunk=1024, soft_eps=eps, **kw)
    # Everything but the soft embedding is untouched by soft_eps.
    assert torch.equal(out.argmax, exact.argmax) and torch.equal(out.sample, exact.sample)
    torch.testing.assert_close(out.entropy, exact.entropy, atol=1e-4, rtol=0)
    bound = 2 * eps * weight.float().norm(dim=1).max() * kw["embed_scale"]
    slack = 1e-4 if dtype == torch.float32 else 0.05 * exact.soft_embedding.float().norm(dim=1).max()
    err = (out.soft_embedding.float() - exact.soft_embedding.float()).norm(dim=1)
    assert (err <= bound + slack).all(), (err.max(), bound)
    # The flat rows took the exact fallback path.
    assert err[n:].max() <= slack
    assert SOFT_TOPK >= 16


# ---------------------------------------------------------------- Triton (interpreter on the CPU)

_TRITON_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    assert os.environ.get("TRITON_INTERPRET") == "1"
    import torch
    from dgls.kernels import triton_head as th
    from dgls.kernels.diffusion_head import FillRule, diffusion_head
    from dgls.kernels.reference import reference_logits
    assert type(th._head_kernel).__name__ == "InterpretedFunction", type(th._head_kernel)
    results = []
    cases = json.loads(sys.argv[1])
    for c in cases:
        dtype = getattr(torch, c["dtype"])
        g = torch.Generator().manual_seed(c["seed"])
        hidden = (torch.randn(c["n"], c["d"], generator=g) * c["scale"]).to(dtype)
        weight = torch.randn(c["v"], c["d"], generator=g).to(dtype)
        fill = None
        if c.get("fill") is not None:  # rows pointing at the filler to different degrees; threshold in the middle
            hidden = (hidden.float() + weight[c["fill"]].float() * torch.linspace(0, 2, c["n"])[:, None]).to(dtype)
            p = torch.softmax(reference_logits(hidden, weight, temperature=1.0, softcap=c["cap"]), -1)[:, c["fill"]]
            mid = p.sort().values[c["n"] // 2 - 1 : c["n"] // 2 + 1]
            fill = FillRule(c["fill"], float(mid.mean()))
        banned = torch.tensor(c["banned"]) if c["banned"] else None
        rows = torch.tensor(c["rows"]) if c.get("rows") else None
        row_banned = torch.tensor(c["row_banned"]) if c.get("row_banned") else None
        if row_banned is not None:  # -2: ban that row's own winner
            winners = reference_logits(hidden, weight, temperature=c["t"], softcap=c["cap"]).argmax(dim=1)
            winners = winners if row_banned.dim() == 1 else winners[:, None]
            row_banned = torch.where(row_banned == -2, winners, row_banned)
        kw = dict(temperature=c["t"], softcap=c["cap"], embed_scale=1.7, seed=99, banned=banned, rows=rows,
                  row_banned=row_banned, fill=fill)
        ref = diffusion_head(hidden, weight, impl="reference", **kw)
        out = diffusion_head(hidden, weight, impl="triton", soft_eps=c["eps"], **kw)
        z = reference_logits(hidden, weight, temperature=c["t"], softcap=c["cap"], banned=banned,
                             row_banned=row_banned)
        if fill is not None:
            z[ref.fill_probability < fill.threshold, fill.token] = float("-inf")
        zmax = z.max(dim=1).values
        picked = z.gather(1, out.argmax[:, None])[:, 0]
        results.append(dict(
            argmax_equal=bool(torch.equal(out.argmax, ref.argmax)),
            argmax_gap=float((zmax - picked).max()),
            zmax=float(zmax.abs().max()),
            sample_equal=bool(torch.equal(out.sample, ref.sample)),
            entropy_err=float((out.entropy - ref.entropy).abs().max()),
            conf_err=float((out.confidence - ref.confidence).abs().max()),
            soft_err=float((out.soft_embedding.float() - ref.soft_embedding.float()).abs().max()),
            soft_max=float(ref.soft_embedding.float().abs().max()),
            soft_norm_err=float((out.soft_embedding.float() - ref.soft_embedding.float()).norm(dim=1).max()),
            e_norm=float(weight.float().norm(dim=1).max()),
            dtype_ok=out.soft_embedding.dtype == dtype,
            fill_err=float((out.fill_probability - ref.fill_probability).abs().max()) if fill else 0.0,
            fill_mixed=bool(fill is None or 0 < int((ref.argmax == fill.token).sum()) < c["n"]),
        ))
    print("RESULT" + json.dumps(results))
    """
)

TRITON_CASES = [
    dict(n=1, v=300, d=24, dtype="float32", scale=1.0, cap=CAP, t=0.7, banned=[], eps=0.0, seed=1),
    dict(n=17, v=301, d=33, dtype="float32", scale=1.0, cap=None, t=1.0, banned=[0, 5, 300], eps=0.0, seed=2),
    dict(n=5, v=257, d=40, dtype="bfloat16", scale=1.0, cap=CAP, t=0.6, banned=[7], eps=0.0, seed=3),
    dict(
        n=4,
        v=200,
        d=16,
        dtype="float32",
        scale=12.0,
        cap=CAP,
        t=0.5,
        banned=[],
        eps=0.0,
        seed=4,
        rows=[7, -1, 2**40, 3],
    ),
    dict(n=6, v=400, d=20, dtype="float32", scale=2.0, cap=CAP, t=0.5, banned=[], eps=0.01, seed=5),
    dict(n=8, v=300, d=16, dtype="float32", scale=60.0, cap=CAP, t=0.5, banned=[], eps=0.0, seed=6),
    dict(n=5, v=300, d=24, dtype="float32", scale=3.0, cap=CAP, t=0.7, banned=[4], eps=0.0, seed=7,
         row_banned=[-1, -2, 299, -2, 151]),
    dict(n=3, v=257, d=40, dtype="bfloat16", scale=3.0, cap=CAP, t=0.6, banned=[], eps=0.0, seed=8,
         row_banned=[-2, -1, 5]),
    dict(n=4, v=300, d=24, dtype="float32", scale=3.0, cap=CAP, t=0.7, banned=[], eps=0.0, seed=9,
         row_banned=[[-2, 7], [-1, -1], [3, -2], [-2, 299]]),
    # the filler rule: in the first split, in the last tile, with bf16, with soft_eps and row bans
    dict(n=8, v=300, d=24, dtype="float32", scale=1.0, cap=CAP, t=0.5, banned=[], eps=0.0, seed=10, fill=3),
    dict(n=8, v=301, d=24, dtype="float32", scale=1.0, cap=None, t=0.5, banned=[0], eps=0.0, seed=11, fill=300),
    dict(n=8, v=257, d=40, dtype="bfloat16", scale=1.0, cap=CAP, t=0.6, banned=[], eps=0.0, seed=12, fill=200),
    dict(n=8, v=400, d=20, dtype="float32", scale=1.0, cap=CAP, t=0.5, banned=[], eps=0.01, seed=13, fill=150,
         row_banned=[-1, 7, -1, 150, -1, -1, 9, -1]),
]


@pytest.fixture(scope="module")
def triton_results():
    pytest.importorskip("triton", reason="triton is not installed")
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, "-c", _TRITON_SCRIPT, json.dumps(TRITON_CASES)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


@pytest.mark.parametrize("i", range(len(TRITON_CASES)))
def test_triton_interpreter_matches_reference(triton_results, i):
    case, r = TRITON_CASES[i], triton_results[i]
    assert r["dtype_ok"]
    assert r["sample_equal"]
    saturated = case["scale"] * case["d"] ** 0.5 > 6 * (case["cap"] or float("inf"))
    if saturated:
        # tanh saturates to exactly cap/T for several ids; Triton's tanh rounds differently
        # from torch's near saturation, so it may pick another id whose z ties to the ulp.
        assert r["argmax_gap"] <= 4 * 1.2e-7 * r["zmax"]
    else:
        assert r["argmax_equal"]
    assert r["entropy_err"] <= 1e-4 and r["conf_err"] <= 1e-4
    assert r["fill_err"] <= 1e-5 and r["fill_mixed"]
    if case["eps"] > 0:
        assert r["soft_norm_err"] <= 2 * case["eps"] * r["e_norm"] * 1.7 + 1e-4
    else:
        rel = 1e-5 if case["dtype"] == "float32" else 2**-6
        assert r["soft_err"] <= rel * r["soft_max"] + 1e-6


def test_triton_on_cuda_matches_reference():
    if not torch.cuda.is_available():
        print("skipping the CUDA Triton check: no CUDA device (the interpreter tests cover the kernel)")
        pytest.skip("no CUDA device")
    pytest.importorskip("triton")
    for dtype in (torch.float32, torch.bfloat16):
        hidden, weight = _data(64, 50000, 200, dtype)
        hidden, weight = hidden.cuda(), weight.cuda()
        ref = diffusion_head(hidden, weight, impl="reference", **_kw(banned=torch.tensor([1, 2])))
        out = diffusion_head(hidden, weight, impl="triton", **_kw(banned=torch.tensor([1, 2])))
        _assert_close(out, ref, dtype, exact_ids=False)
        # cuBLAS and tl.dot sum in different orders: ids may differ only on float near-ties.
        assert (out.argmax == ref.argmax).float().mean() > 0.95
        assert (out.sample == ref.sample).float().mean() > 0.95
