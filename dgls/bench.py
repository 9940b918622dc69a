"""`dgls bench`: speed and memory, as ratios against baselines measured in the same run.

Sections (each can be picked with --only):
- latency:  engine infill latency p50/p95 and tokens per forward for 8/32/128-token spans;
- head:     the diffusion head alone at vocab 262,144, reference vs fused (time, peak memory);
- generate: the engine vs stock `transformers` `generate()` on a random-weight DiffusionGemma at
            real hidden/vocab sizes (few layers), same prompt, canvas and step budget;
- repeat:   a repeat request after a one-character edit near the end of a 5,000-line file vs
            the first request and vs `generate()` on the same prompt;
- growth:   the repeat-request cost as the file grows from 1k to 32k tokens (should stay flat), on
            a tiny long-context model (attention over the prefix is most of its work);
- growth-real: the same at 1k and 32k on the real-size random model with the release's pattern of
            five sliding-window layers to one full-attention layer, its prefix cache seeded with
            random keys/values instead of a 32k-token prefill (about 3 minutes on a CPU);
- release:  the 26B release's exact shapes in bf16 and 4-bit, as many layers as fit, CUDA only
            (bench_release.py; one "skipped" line elsewhere);
and the process's peak RSS. Wall-clock numbers are for reading; the ratios are the result.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

SECTIONS = ("latency", "head", "generate", "repeat", "growth", "growth-real", "release")
SOURCE_DIR = Path(__file__).resolve().parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .cli import add_model_arguments

    add_model_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print every figure as JSON")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="sections to run (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="requests per latency cell")
    parser.add_argument("--steps", type=int, default=8, help="denoising step budget for the comparisons")
    parser.add_argument("--hidden", type=int, default=2304, help="hidden size of the real-size random model")
    parser.add_argument("--soft-eps", type=float, default=0.01,
                        help="truncated soft embedding epsilon for the head and generate() sections "
                             "(the embedded-model sections use the engine's default)")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _source_text(lines: int) -> str:
    """Real code to infill: this package's own sources, repeated until `lines` long."""
    chunks = [p.read_text(encoding="utf-8") for p in sorted(SOURCE_DIR.rglob("*.py"))]
    text = "\n".join(chunks)
    out = []
    while sum(len(c.splitlines()) for c in out) < lines:
        out.append(text)
    return "\n".join("\n".join(out).splitlines()[:lines]) + "\n"


def _cursor_points(text: str, count: int) -> list[int]:
    """Offsets at the end of indented lines spread through the text (a mid-file cursor)."""
    starts = [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    picks = starts[len(starts) // 5 :: max(1, len(starts) // (count * 2))][:count]
    return [max(0, p - 1) for p in picks]


def bench_latency(engine, repeats: int) -> dict:
    from .engine import InfillRequest

    text = _source_text(400)
    rows = {}
    for budget in (8, 32, 128):
        if budget > engine.canvas_length - 8:
            rows[str(budget)] = {"skipped": f"canvas of {engine.canvas_length} tokens holds no {budget}-token span"}
            continue
        times, tpf, steps = [], [], []
        for i, at in enumerate(_cursor_points(text, repeats)):
            res = engine.infill(InfillRequest(prefix=text[:at], suffix=text[at:], max_tokens=budget, seed=i,
                                              single_line=budget == 8))
            times.append(res.stats.total_ms)
            tpf.append(res.stats.tokens_per_forward)
            steps.append(res.stats.steps)
        rows[str(budget)] = {"p50_ms": round(statistics.median(times), 1), "p95_ms": round(_percentile(times, 0.95), 1),
                             "tokens_per_forward": round(statistics.mean(tpf), 2),
                             "steps_mean": round(statistics.mean(steps), 1)}
    return rows


def bench_head_section(hidden: int, soft_eps: float) -> dict:
    import torch

    from .kernels.bench_head import bench_head

    return bench_head(262144, hidden, 64, torch.float32, repeats=2, soft_eps=soft_eps,
                      impls=("reference", "chunked", "chunked_eps"))


def _time(fn, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def _generate_ms(model, prompt_ids: list[int], steps: int) -> float:
    """Stock generate() for one canvas with the same prompt and step budget."""
    import torch

    ids = torch.tensor([prompt_ids], device=model.device)
    canvas = model.config.canvas_length

    def run():
        with torch.inference_mode():
            model.generate(ids, max_new_tokens=canvas, max_denoising_steps=steps)

    return _time(run)


def bench_generate(hidden: int, steps: int, soft_eps: float) -> dict:
    """Engine vs generate() on a random model at real vocab/hidden sizes, two layers."""
    from .engine import Engine, InfillRequest
    from .engine.testing import make_tiny_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        path = make_tiny_checkpoint(Path(tmp) / "real-size", vocab_size=262144, hidden=hidden, layers=2,
                                    canvas_length=64, sliding_window=512, steps=steps, head_dim=256,
                                    global_head_dim=512, num_attention_heads=8, num_key_value_heads=2,
                                    intermediate_size=hidden * 2)
        text = _source_text(60)
        rows = {}
        for label, head, eps in (("reference", "reference", 0.0), ("fused", "auto", 0.0),
                                 ("fused_truncated", "auto", soft_eps)):
            engine = Engine(str(path), head=head, soft_eps=eps, suffix_window=None)  # generate()'s canvas
            req = InfillRequest(prefix=text, suffix="", max_tokens=48, steps=steps, seed=0)
            rows[f"engine_{label}_ms"] = round(_time(lambda e=engine, r=req: e.infill(r)), 1)
            if label == "reference":
                prompt = [engine.special.bos, *engine._encode(text)]
                rows["generate_ms"] = round(_generate_ms(engine.model, prompt, steps), 1)
            del engine
        for label in ("reference", "fused", "fused_truncated"):
            rows[f"speedup_{label}_vs_generate"] = round(rows["generate_ms"] / rows[f"engine_{label}_ms"], 2)
        rows.update({"hidden": hidden, "vocab": 262144, "layers": 2, "canvas": 64, "steps": steps})
        return rows


def bench_repeat(engine, steps: int) -> dict:
    """First request vs a repeat after a one-character edit near the end of a 5,000-line file."""
    from .engine import InfillRequest

    text = _source_text(5000)
    at = text.rfind("\n", 0, len(text) - 200)
    req = InfillRequest(prefix=text[:at], suffix=text[at:], doc_id="bench-5k", steps=steps, seed=0)
    first = engine.infill(req)
    edited = InfillRequest(prefix=text[:at] + "x", suffix=text[at:], doc_id="bench-5k", steps=steps, seed=0)
    repeat_ms = statistics.median([engine.infill(edited).stats.total_ms for _ in range(3)])
    prompt_ids, _ = engine._fit_prefix(text[:at] + "x")
    prompt = ([engine.special.bos] if engine.special.bos is not None else []) + prompt_ids
    generate_ms = _generate_ms(engine.model, prompt, steps)
    return {"prefix_tokens": first.stats.prefix_tokens, "first_ms": round(first.stats.total_ms, 1),
            "repeat_ms": round(repeat_ms, 1), "generate_ms": round(generate_ms, 1),
            "speedup_repeat_vs_first": round(first.stats.total_ms / repeat_ms, 2),
            "speedup_repeat_vs_generate": round(generate_ms / repeat_ms, 2)}


def bench_growth(steps: int) -> dict:
    """Repeat-request cost after a one-character edit as the prefix grows from 1k to 32k tokens."""
    from .engine import Engine, InfillRequest
    from .engine.testing import make_tiny_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(str(make_tiny_checkpoint(Path(tmp) / "long", max_positions=40000, steps=steps)),
                        head="auto", suffix_window=None)  # the whole canvas, as generate() denoises
        text = _source_text(40000)
        rows = {}
        for tokens in (1024, 4096, 16384, 32768):
            prefix = engine.tokenizer.decode(engine._encode(text)[:tokens])
            prefix = prefix[: prefix.rfind("\n") + 1]
            engine.infill(InfillRequest(prefix=prefix, suffix="\n", doc_id=f"g{tokens}", steps=steps))
            ms = statistics.median(
                engine.infill(InfillRequest(prefix=prefix + "x" * (i + 1), suffix="\n", doc_id=f"g{tokens}",
                                            steps=steps)).stats.total_ms for i in range(3))
            rows[str(tokens)] = round(ms, 1)
        rows["ratio_32k_over_1k"] = round(rows["32768"] / rows["1024"], 2)
        rows["repeat_5000_lines"] = bench_repeat(engine, steps)  # a context long enough for the file
        return rows


def _seed_prefix_cache(engine, doc_id: str, prefix: str) -> int:
    """Store random keys/values of the right shapes as the document's cached prefix; returns its
    token count. The cost of a repeat request does not depend on the values in the cache, and a
    real prefill of 32k tokens at this size takes many minutes on a CPU."""
    import torch

    from .engine import InfillRequest
    from .engine.canvas import encoder_ids
    from .engine.prefix_cache import PrefixEntry

    probe = f"{doc_id}-probe"
    engine.infill(InfillRequest(prefix="x = 1\n", suffix="\n", doc_id=probe, steps=1, max_tokens=1))
    shapes = engine.cache.lookup(probe, [])[0]
    engine.forget(probe)
    ids = encoder_ids(engine._fit_prefix(prefix)[0], engine.special)
    gen = torch.Generator().manual_seed(0)

    def like(t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape[0], t.shape[1], len(ids), t.shape[3], generator=gen).to(t.dtype)

    engine.cache.store(doc_id, PrefixEntry(ids=ids, keys=[like(k) for k in shapes.keys],
                                           values=[like(v) for v in shapes.values]))
    return len(ids)


def bench_growth_real_size(hidden: int, steps: int, layers: int = 6, repeats: int = 3) -> dict:
    """The repeat-request curve on the real-size random model (hidden/vocab/head sizes of the
    release, and its pattern of five sliding-window layers to one full-attention layer), the prefix
    cache seeded with random K/V."""
    from .engine import Engine, InfillRequest
    from .engine.testing import make_tiny_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        path = make_tiny_checkpoint(Path(tmp) / "real-size-long", vocab_size=262144, hidden=hidden, layers=layers,
                                    canvas_length=64, sliding_window=512, steps=steps, head_dim=256,
                                    global_head_dim=512, num_attention_heads=8, num_key_value_heads=2,
                                    intermediate_size=hidden * 2, max_positions=40000)
        engine = Engine(str(path), head="auto", suffix_window=None, cache_mb=4096)
        text = _source_text(40000)
        all_ids = engine._encode(text)
        rows: dict = {}
        for tokens in (1024, 32768):
            prefix = engine.tokenizer.decode(all_ids[:tokens])
            prefix = prefix[: prefix.rfind("\n") + 1]
            runs = []
            for i in range(repeats):  # each a one-character edit of the seeded prefix
                doc = f"real-{tokens}-{i}"
                _seed_prefix_cache(engine, doc, prefix)
                runs.append(engine.infill(InfillRequest(prefix=prefix + "x", suffix="\n", doc_id=doc, steps=steps,
                                                        seed=0)).stats)
                engine.forget(doc)
            stats = sorted(runs, key=lambda st: st.total_ms)[len(runs) // 2]
            rows[str(tokens)] = {"ms": round(stats.total_ms, 1), "steps": stats.steps,
                                 "encode_ms": round(stats.encode_ms, 1), "encoded": stats.prefix_tokens_encoded,
                                 "reused": stats.prefix_tokens_reused}
        small, large = rows["1024"], rows["32768"]
        rows["ratio_32k_over_1k"] = round(large["ms"] / small["ms"], 2)
        rows["per_step_ratio_32k_over_1k"] = round((large["ms"] / large["steps"]) / (small["ms"] / small["steps"]), 2)
        return rows


def run(args: argparse.Namespace) -> int:
    from .engine import Engine, EngineError

    results: dict = {"sections": args.only}
    started = time.perf_counter()
    engine = None
    if {"latency", "repeat"} & set(args.only):
        try:
            engine = Engine(args.model, device=args.device, dtype=args.dtype)
        except EngineError as exc:
            print(f"dgls bench: {exc}")
            return 1
        results["model"] = engine.info()
    if "latency" in args.only:
        results["latency"] = bench_latency(engine, args.repeats)
    if "head" in args.only:
        results["head"] = bench_head_section(args.hidden, args.soft_eps)
    if "generate" in args.only:
        results["generate"] = bench_generate(args.hidden, args.steps, args.soft_eps)
    if "repeat" in args.only:
        results["repeat"] = bench_repeat(engine, args.steps)
    if "growth" in args.only:
        results["growth"] = bench_growth(args.steps)
    if "growth-real" in args.only:
        results["growth_real"] = bench_growth_real_size(args.hidden, args.steps)
    if "release" in args.only:
        from .bench_release import bench_release

        results["release"] = bench_release(repeats=args.repeats)
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    results["bench_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    return 0


def format_table(results: dict) -> str:
    """A readable summary of the figures; --json has all of them."""
    lines = []
    if "model" in results:
        m = results["model"]
        lines.append(f"model: {m['model']} ({m['parameters'] / 1e6:.1f}M params, {m['device']}, {m['dtype']}, "
                     f"head {m['head']}, decoder {m.get('decoder')}, suffix window {m.get('suffix_window')})")
    if "latency" in results:
        lines.append("\nlatency           p50 ms   p95 ms   tokens/forward   steps")
        for budget, row in results["latency"].items():
            if "skipped" in row:
                lines.append(f"  {budget:>4}-token span  {row['skipped']}")
            else:
                lines.append(f"  {budget:>4}-token span {row['p50_ms']:>8} {row['p95_ms']:>8} "
                             f"{row['tokens_per_forward']:>16} {row['steps_mean']:>7}")
    if "head" in results:
        h = results["head"]
        lines.append(f"\nhead alone (V={h['V']}, D={h['D']}, N={h['N']}): reference {h['reference_s'] * 1000:.0f} ms, "
                     f"fused {h['chunked_s'] * 1000:.0f} ms ({h.get('speedup_chunked_vs_reference')}x), "
                     f"fused+truncated {h['chunked_eps_s'] * 1000:.0f} ms ({h.get('speedup_eps_vs_chunked')}x vs fused)")
        lines.append(f"  peak extra memory: reference {_mb(h.get('reference_peak_bytes'))}, fused "
                     f"{_mb(h.get('chunked_peak_bytes'))} ({h.get('memory_ratio_reference_over_chunked')}x smaller)")
    if "generate" in results:
        g = results["generate"]
        lines.append(f"\nvs generate() (random weights, hidden {g['hidden']}, vocab {g['vocab']}, {g['layers']} layers, "
                     f"canvas {g['canvas']}, {g['steps']} steps): generate {g['generate_ms']} ms")
        for label in ("reference", "fused", "fused_truncated"):
            lines.append(f"  engine {label:<16} {g[f'engine_{label}_ms']:>9} ms  "
                         f"{g[f'speedup_{label}_vs_generate']}x")
    if "repeat" in results:
        lines.append("\n" + _repeat_line("repeat after a 1-char edit, 5,000-line file", results["repeat"]))
    if "growth" in results:
        g = results["growth"]
        cells = ", ".join(f"{k}: {v} ms" for k, v in g.items() if k.isdigit())
        lines.append(f"\nrepeat cost vs file size (tokens, random model with a 40k context): {cells}; "
                     f"32k/1k = {g['ratio_32k_over_1k']}x")
        lines.append("  " + _repeat_line("same model, 5,000-line file", g["repeat_5000_lines"]))
    if "growth_real" in results:
        g = results["growth_real"]
        cells = ", ".join(f"{k}: {v['ms']} ms in {v['steps']} steps" for k, v in g.items() if k.isdigit())
        lines.append(f"\nrepeat cost vs file size, real-size random model (seeded cache): {cells}; "
                     f"32k/1k = {g['ratio_32k_over_1k']}x, per step {g['per_step_ratio_32k_over_1k']}x")
    if "release" in results:
        from .bench_release import format_release

        lines += format_release(results["release"])
    lines.append(f"\npeak RSS {results['peak_rss_mb']} MB; bench took {results['bench_seconds']} s")
    return "\n".join(lines)


def _repeat_line(label: str, r: dict) -> str:
    return (f"{label} ({r['prefix_tokens']} prompt tokens): first {r['first_ms']} ms, repeat {r['repeat_ms']} ms "
            f"({r['speedup_repeat_vs_first']}x), generate {r['generate_ms']} ms ({r['speedup_repeat_vs_generate']}x)")


def _mb(value) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f} MB"
