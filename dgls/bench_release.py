"""`dgls bench --only release`: the engine at the 26B release's shapes, on a CUDA device.

A random-weight model with the release's exact configuration (hidden 2816, vocabulary 262,144, 16
heads, 128 experts top-8, canvas 256), as many of its 30 layers as the device holds in bf16, is
built in GPU memory (no checkpoint is written: 48 GB of random weights would take longer to save
than to measure), then measured in bf16 and again after 4-bit quantization: latency, tokens per
decoder forward and tokens/s for 8-, 32- and 128-token spans in layout B, the layout the release
runs in. Random weights never stop early, so every canvas runs the step budget: a trained model's
tokens per forward are higher. Without CUDA the section says so in one line and costs nothing.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

SPANS = (8, 32, 128)
HEADROOM = 0.75  # share of free device memory the bf16 weights may take (the rest: cache, head, 4-bit copy)


def layers_that_fit(free_bytes: float, dtype_bytes: int = 2, widths: dict | None = None) -> int:
    """How many of the release's text layers fit in `free_bytes` at `dtype_bytes` per weight."""
    from .engine.memory import count_parameters
    from .engine.release_model import release_config

    one = count_parameters(release_config(layers=1, widths=widths, vision="tiny")).total
    two = count_parameters(release_config(layers=2, widths=widths, vision="tiny")).total
    per_layer, fixed = two - one, 2 * one - two
    room = free_bytes * HEADROOM / dtype_bytes - fixed
    return max(1, min(30, int(room // per_layer)))


def build_engine(device: str, dtype: str, layers: int, widths: dict | None = None, quantize: str | None = None):
    """An Engine over a random release-configuration model built directly on `device`."""
    import torch
    from transformers import AutoTokenizer, DiffusionGemmaForBlockDiffusion, GenerationConfig

    from .engine import Engine
    from .engine.loading import LoadedModel
    from .engine.quantize import quantize_model
    from .engine.release_model import release_config, release_files, release_tokenizer_dir

    config = release_config(layers=layers, widths=widths, vision="tiny")
    if quantize:
        config._experts_implementation = "eager"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        with torch.device(device):
            model = DiffusionGemmaForBlockDiffusion(config).eval()
    finally:
        torch.set_default_dtype(previous)
    model.generation_config = GenerationConfig.from_dict(release_files()["generation_config"])
    if quantize:
        quantize_model(model, quantize, device)
    tokenizer = AutoTokenizer.from_pretrained(str(release_tokenizer_dir()))
    loaded = LoadedModel(model=model, tokenizer=tokenizer, path=release_tokenizer_dir(),
                         name="release-shapes-random", device=device, dtype=dtype, quantize=quantize)
    return Engine(loaded=loaded, layout="B")


def measure(engine, text: str, spans=SPANS, repeats: int = 3, steps: int | None = None) -> dict:
    """Per span budget: p50 latency, tokens per forward, tokens/s (generated tokens over wall time)."""
    from .engine import InfillRequest

    rows = {}
    cut = len(text) // 2
    for span in spans:
        times, tpf, tokens = [], [], []
        for i in range(repeats):
            res = engine.infill(InfillRequest(prefix=text[:cut + i], suffix=text[cut + i:], max_tokens=span,
                                              seed=i, steps=steps, language="python"))
            times.append(res.stats.total_ms)
            tpf.append(res.stats.tokens_per_forward)
            tokens.append(res.stats.span_budget)
        ms = statistics.median(times)
        rows[str(span)] = {"p50_ms": round(ms, 1), "tokens_per_forward": round(statistics.mean(tpf), 2),
                           "canvas_tokens_per_s": round(statistics.mean(tokens) / (ms / 1000), 1)}
    return rows


def bench_release(device: str | None = None, repeats: int = 3, steps: int | None = None,
                  precisions: tuple[str, ...] = ("bf16", "4bit"), widths: dict | None = None,
                  layers: int | None = None, spans=SPANS, text: str | None = None) -> dict:
    """The release-shapes table; {"skipped": reason} without CUDA unless a device is forced (tests)."""
    import torch

    from .engine.quantize import weight_bytes

    if device is None:
        if not torch.cuda.is_available():
            return {"skipped": "no CUDA device: the release-shapes section runs only on a GPU"}
        device = "cuda"
    if text is None:  # real code to infill around: this module's own source
        text = Path(__file__).read_text(encoding="utf-8")
    if layers is None:
        free = torch.cuda.mem_get_info()[0] if device.startswith("cuda") else 8 * 2**30
        layers = layers_that_fit(free, widths=widths)
    out: dict = {"layers": layers, "of_layers": 30, "device": device, "rows": {}}
    for precision in precisions:
        quantize = precision if precision in ("4bit", "8bit") else None
        dtype = "float32" if precision == "fp32" else "bfloat16"
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        try:
            engine = build_engine(device, dtype, layers, widths, quantize)
        except Exception as exc:  # one failed precision must not hide the others
            out["rows"][precision] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            continue
        row = {"build_s": round(time.perf_counter() - started, 1),
               "weights_gib": round(weight_bytes(engine.model) / 2**30, 2)}
        row["spans"] = measure(engine, text, spans, repeats, steps)
        if device.startswith("cuda"):
            row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        out["rows"][precision] = row
        del engine
    return out


def format_release(result: dict) -> list[str]:
    """Table lines for `dgls bench`."""
    if "skipped" in result:
        return [f"\nrelease shapes: skipped ({result['skipped']})"]
    lines = [f"\nrelease shapes ({result['layers']} of {result['of_layers']} layers, random weights, "
             f"layout B, {result['device']}): span  p50 ms  tokens/forward  canvas tokens/s"]
    for precision, row in result["rows"].items():
        if "error" in row:
            lines.append(f"  {precision:<5} failed: {row['error']}")
            continue
        memory = f"weights {row['weights_gib']} GiB" + (f", peak {row['peak_gib']} GiB" if "peak_gib" in row else "")
        lines.append(f"  {precision:<5} ({memory})")
        for span, cell in row["spans"].items():
            lines.append(f"        {span:>4} {cell['p50_ms']:>9} {cell['tokens_per_forward']:>15} "
                         f"{cell['canvas_tokens_per_s']:>16}")
    return lines
