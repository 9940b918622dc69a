"""Time and peak memory of the diffusion-head implementations (``python -m dgls.kernels.bench_head``).

Peak extra memory is measured, not assumed:
- CUDA: ``torch.cuda.max_memory_allocated()`` minus what was allocated before the call.
- CPU: the process's peak resident set (``VmHWM`` in ``/proc/self/status``) after resetting it
  through ``/proc/self/clear_refs``, minus the resident set before the call: every page the call
  touched at its high point (large blocks go back to the OS on free, so the mark is the call's
  own peak, not leftovers). Where ``clear_refs`` is not writable the CPU peaks
  are reported as None.

Inputs: ``profile="peaked"`` builds hidden states that point at one embedding row each plus
noise (what a trained model's confident positions look like, where the truncated soft
embedding's top-K covers the mass); ``profile="flat"`` is pure noise (every row falls back).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import time
from collections.abc import Callable

import torch

from .diffusion_head import diffusion_head


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _measure(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, float, int | None]:
    """One warm-up call, then ``repeats`` timed calls; the first timed call also gives the peak.

    Returns (best wall seconds, best process CPU seconds, peak bytes). On a shared CPU the wall
    time mostly measures the neighbours; CPU time (all threads) measures the work itself.
    """
    cuda = device.type == "cuda"
    fn()
    best, best_cpu, peak = float("inf"), float("inf"), None
    for i in range(max(1, repeats)):
        if cuda:
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        else:
            _malloc_trim()  # hand freed heap pages back so the baseline holds only live memory
            base = _status_kb("VmRSS") * 1024
            tracked = _reset_peak_rss()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
        if i == 0:
            if cuda:
                peak = torch.cuda.max_memory_allocated() - base
            elif tracked:
                peak = _status_kb("VmHWM") * 1024 - base
    return best, best_cpu, peak


def make_inputs(
    V: int, D: int, N: int, dtype: torch.dtype, device: str | torch.device = "cpu", profile: str = "peaked"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random tied embeddings [V, D] and hidden states [N, D] (see module docstring for profiles)."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(V, D, generator=g) * 0.05
    hidden = torch.randn(N, D, generator=g) * 0.05
    if profile == "peaked":
        target = torch.randint(0, V, (N,), generator=g)
        hidden += weight[target] * (40.0 / (D * 0.05**2))  # target logit ~40, the rest ~N(0, 2)
    elif profile != "flat":
        raise ValueError(f"profile must be 'peaked' or 'flat' (got {profile!r})")
    return hidden.to(device=device, dtype=dtype), weight.to(device=device, dtype=dtype)


def bench_head(
    V: int,
    D: int,
    N: int,
    dtype: torch.dtype = torch.float32,
    repeats: int = 3,
    *,
    device: str = "cpu",
    profile: str = "peaked",
    soft_eps: float = 0.01,
    chunk: int = 8192,
    impls: tuple[str, ...] = ("reference", "chunked", "chunked_eps", "triton", "triton_eps"),
    threads: int | None = 1,
) -> dict:
    """Seconds (best of ``repeats``) and peak extra bytes per implementation, plus ratios.

    ``threads`` (CPU): torch intra-op threads during the run, 1 by default: on a shared machine
    multi-threaded ops spin at barriers while a neighbour holds the other core, which makes
    both wall and CPU time measure the neighbours. None keeps torch's setting.
    """
    dev = torch.device(device)
    old_threads = torch.get_num_threads()
    if threads is not None and dev.type == "cpu":
        torch.set_num_threads(threads)
    try:
        return _bench(V, D, N, dtype, repeats, dev, profile, soft_eps, chunk, impls)
    finally:
        torch.set_num_threads(old_threads)


def _bench(
    V: int,
    D: int,
    N: int,
    dtype: torch.dtype,
    repeats: int,
    dev: torch.device,
    profile: str,
    soft_eps: float,
    chunk: int,
    impls: tuple[str, ...],
) -> dict:
    hidden, weight = make_inputs(V, D, N, dtype, dev, profile)
    kw = dict(temperature=0.6, softcap=30.0, embed_scale=D**0.5, seed=1, banned=torch.tensor([0, 1]))
    runs: dict[str, Callable[[], object]] = {
        "reference": lambda: diffusion_head(hidden, weight, impl="reference", **kw),
        "chunked": lambda: diffusion_head(hidden, weight, impl="chunked", chunk=chunk, **kw),
        "chunked_eps": lambda: diffusion_head(
            hidden, weight, impl="chunked", chunk=chunk, soft_eps=soft_eps, **kw
        ),
    }
    if dev.type == "cuda":
        runs["triton"] = lambda: diffusion_head(hidden, weight, impl="triton", **kw)
        runs["triton_eps"] = lambda: diffusion_head(hidden, weight, impl="triton", soft_eps=soft_eps, **kw)
    result: dict = {
        "V": V,
        "D": D,
        "N": N,
        "dtype": str(dtype).replace("torch.", ""),
        "device": str(dev),
        "profile": profile,
        "soft_eps": soft_eps,
        "chunk": chunk,
        "threads": torch.get_num_threads(),
        "peak_method": "cuda.max_memory_allocated" if dev.type == "cuda" else "VmHWM-VmRSS (/proc)",
        "logits_bytes": N * V * 4,
    }
    for name in impls:
        if name not in runs:
            continue
        seconds, cpu_seconds, peak = _measure(runs[name], dev, repeats)
        result[f"{name}_s"] = round(seconds, 4)
        result[f"{name}_cpu_s"] = round(cpu_seconds, 4)
        result[f"{name}_peak_bytes"] = peak
    if "reference_s" in result and "chunked_s" in result:
        result["speedup_chunked_vs_reference"] = round(result["reference_s"] / result["chunked_s"], 2)
        result["cpu_speedup_chunked_vs_reference"] = round(
            result["reference_cpu_s"] / result["chunked_cpu_s"], 2
        )
        if result.get("chunked_peak_bytes") and result.get("reference_peak_bytes"):
            result["memory_ratio_reference_over_chunked"] = round(
                result["reference_peak_bytes"] / result["chunked_peak_bytes"], 1
            )
    if "chunked_eps_s" in result and "chunked_s" in result:
        result["speedup_eps_vs_chunked"] = round(result["chunked_s"] / result["chunked_eps_s"], 2)
        result["cpu_speedup_eps_vs_chunked"] = round(result["chunked_cpu_s"] / result["chunked_eps_cpu_s"], 2)
    return result


def main() -> None:
    """CLI: one JSON line per configuration."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--V", type=int, default=262144)
    ap.add_argument("--D", type=int, nargs="+", default=[256, 2304])
    ap.add_argument("--N", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--profile", default="peaked", choices=["peaked", "flat"])
    ap.add_argument("--chunk", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (0: torch default)")
    args = ap.parse_args()
    for d in args.D:
        for n in args.N:
            res = bench_head(
                args.V,
                d,
                n,
                getattr(torch, args.dtype),
                args.repeats,
                device=args.device,
                profile=args.profile,
                chunk=args.chunk,
                threads=args.threads or None,
            )
            print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
