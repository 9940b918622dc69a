"""Counter-based Gumbel noise shared by every diffusion-head implementation.

Sampling uses Gumbel-max: ``sample = argmax(z + g)`` with ``g = -log(-log(u))``. If each
implementation drew ``u`` from its own RNG, the reference, the chunked torch path and the
Triton kernel would sample different tokens. Instead ``u`` is a pure function of
``(seed, row, col)``: a murmur3 ``fmix32`` finalizer applied twice,

    row_key = fmix32(row XOR seed_key)          seed_key = fmix32(lo32(seed) XOR fmix32(hi32(seed)))
    bits    = fmix32(col XOR row_key)
    u       = ((bits >> 9) + 0.5) * 2**-23       (exact in float32, strictly inside (0, 1))

so any tile ``[rows, col_start:col_end]`` can be produced on its own and every tiling of the
vocabulary sees the same numbers. Torch computes it in int64 with 32-bit masking (multiplies are
split into 16-bit halves so nothing overflows); Triton computes it in uint32, where wrap-around
is the mask. 23 bits of ``u`` keep ``1 - 2**-24`` (the largest value) representable, so
``-log(u)`` is never 0 and ``g`` is always finite: ``g`` lies in [-2.82, 16.6].
"""

from __future__ import annotations

import torch

MASK32 = 0xFFFFFFFF
FMIX_C1 = 0x85EBCA6B
FMIX_C2 = 0xC2B2AE35
U_SCALE = 2.0**-23
# Bounds of g over all possible u: useful to prove a token can never win the Gumbel race.
GUMBEL_MIN = -2.8134
GUMBEL_MAX = 16.6356


def _mul32(h: torch.Tensor, c: int) -> torch.Tensor:
    """Low 32 bits of ``h * c`` for ``0 <= h < 2**32`` without int64 overflow."""
    lo = h * (c & 0xFFFF)
    hi = ((h * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & MASK32


def fmix32(h: torch.Tensor) -> torch.Tensor:
    """murmur3's 32-bit finalizer on an int64 tensor holding values in [0, 2**32)."""
    h = h ^ (h >> 16)
    h = _mul32(h, FMIX_C1)
    h = h ^ (h >> 13)
    h = _mul32(h, FMIX_C2)
    return h ^ (h >> 16)


def fmix32_(h: torch.Tensor) -> torch.Tensor:
    """In-place ``fmix32`` (one temporary of h's size instead of several): for big tiles."""
    h ^= h >> 16
    _mul32_(h, FMIX_C1)
    h ^= h >> 13
    _mul32_(h, FMIX_C2)
    h ^= h >> 16
    return h


def _mul32_(h: torch.Tensor, c: int) -> None:
    hi = h * (c >> 16)
    hi &= 0xFFFF
    hi <<= 16
    h *= c & 0xFFFF
    h += hi
    h &= MASK32


def to_int32_bits(h: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2**32) -> int32 tensor with the same 32 bits."""
    return torch.where(h >= 2**31, h - 2**32, h).to(torch.int32)


def fmix32_i32_(h: torch.Tensor) -> torch.Tensor:
    """In-place ``fmix32`` on an int32 tensor holding the bits: the fast path for big tiles.

    int32 multiplies wrap modulo 2**32 (two's complement, as torch's CPU and CUDA kernels do;
    ``test_kernels`` checks it against :func:`fmix32`); shifts are arithmetic, so each is masked
    to act as a logical shift. Half the memory traffic and a third of the ops of the int64 form.
    """
    h ^= (h >> 16) & 0xFFFF
    h *= FMIX_C1 - 2**32
    h ^= (h >> 13) & 0x7FFFF
    h *= FMIX_C2 - 2**32
    h ^= (h >> 16) & 0xFFFF
    return h


def uniform_from_i32(bits: torch.Tensor) -> torch.Tensor:
    """u in (0, 1) from int32 hash bits (top 23 bits), same values as the int64 path."""
    return ((bits >> 9) & 0x7FFFFF).to(torch.float32).add_(0.5).mul_(U_SCALE)


def fmix32_int(h: int) -> int:
    """Scalar ``fmix32`` on a Python int (used for per-call keys passed to kernels)."""
    h &= MASK32
    h ^= h >> 16
    h = (h * FMIX_C1) & MASK32
    h ^= h >> 13
    h = (h * FMIX_C2) & MASK32
    return h ^ (h >> 16)


def seed_key(seed: int) -> int:
    """Fold a (possibly 64-bit or negative) seed into the 32-bit key the hash starts from."""
    s = seed & 0xFFFFFFFFFFFFFFFF
    return fmix32_int((s & MASK32) ^ fmix32_int(s >> 32))


def row_keys(seed: int, rows: torch.Tensor) -> torch.Tensor:
    """Per-row 32-bit keys (int64 tensor) for global row indices ``rows``."""
    return fmix32((rows.to(torch.int64) & MASK32) ^ seed_key(seed))


def uniform(seed: int, row: torch.Tensor | int, col: torch.Tensor | int) -> torch.Tensor:
    """Deterministic u in (0, 1), float32, broadcast over ``row`` and ``col`` index tensors."""
    row_t = torch.as_tensor(row, dtype=torch.int64)
    col_t = torch.as_tensor(col, dtype=torch.int64)
    bits = fmix32((col_t & MASK32) ^ row_keys(seed, row_t))
    return ((bits >> 9).to(torch.float32) + 0.5) * U_SCALE


def gumbel_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel variates from uniforms (float32)."""
    return -torch.log(-torch.log(u))


def gumbel_rows(seed: int, rows: torch.Tensor, col_start: int, col_end: int) -> torch.Tensor:
    """Gumbel noise ``[len(rows), col_end - col_start]`` for arbitrary int64 row ids."""
    cols = torch.arange(col_start, col_end, device=rows.device, dtype=torch.int64)
    bits = fmix32(cols[None, :] ^ row_keys(seed, rows)[:, None])
    u = ((bits >> 9).to(torch.float32) + 0.5) * U_SCALE
    return gumbel_from_uniform(u)


def gumbel_tile(
    seed: int,
    row_start: int,
    n_rows: int,
    col_start: int,
    col_end: int,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Gumbel noise for rows ``[row_start, row_start+n_rows)`` x cols ``[col_start, col_end)``.

    The reference builds the whole ``[N, V]`` at once; the chunked path and the kernel make it per
    tile and get the same numbers.
    """
    rows = torch.arange(row_start, row_start + n_rows, device=device, dtype=torch.int64)
    return gumbel_rows(seed, rows, col_start, col_end)
