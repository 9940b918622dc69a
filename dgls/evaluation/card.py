"""Write engine/weights/default/MODEL_CARD.md from what the run actually recorded.

Numbers come from the exported `training_state.json` and `config.json`, the run's `loss.tsv`
and a `dgls eval --json` output, so the card never drifts from the weights it describes.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from dgls.engine.train.train import DEFAULT_EXPORT

LIMITS = """\
- Trained for CPU-hours, not GPU-days: it has learned which tokens are common near the cursor
  (`self`, `assertEqual`, indentation, `#`), and only a little of how to combine them; its
  infills are mostly not valid code, exact matches are rare, and its raw infills are only a few
  points more similar to the answer than a copy of the line above. Do not expect infilled
  functions to pass their tests. The language server drops infills that would break the parse.
- Python only; other languages are out of distribution.
- Context: at most 255 prefix tokens (about 20-40 lines) before the cursor and, on the CPU,
  the first 16 tokens of the suffix (on a GPU: 64 - budget); anything farther is invisible.
- Span budgets of 8-48 tokens were trained; the engine's repair layout (clamped tokens inside
  the span) was not.
- fp32 on CPU; no quantization was evaluated."""


def loss_summary(loss_tsv: Path, upto: int, buckets: int = 8) -> list[tuple[int, int, float, float]]:
    """(first step, last step, mean loss, mean accuracy) over equal slices of steps 1..`upto`."""
    rows = []
    for line in loss_tsv.read_text().splitlines()[1:]:
        parts = line.split("\t")
        if int(parts[0]) <= upto:
            rows.append((int(parts[0]), float(parts[1]), float(parts[2])))
    if not rows:
        return []
    size = max(1, len(rows) // buckets)
    out = []
    for i in range(0, len(rows), size):
        chunk = rows[i:i + size]
        out.append((chunk[0][0], chunk[-1][0], sum(r[1] for r in chunk) / len(chunk),
                    sum(r[2] for r in chunk) / len(chunk)))
    return out


def eval_table(ev: dict) -> str:
    lines = ["| set | method | n | exact match | similarity | syntax OK | p50 ms | p90 ms | mean steps |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for kind, per in ev["results"].items():
        for name, r in per.items():
            p50 = f"{r['p50_ms']:.0f}" if r.get("p50_ms") is not None else "-"
            p90 = f"{r['p90_ms']:.0f}" if r.get("p90_ms") is not None else "-"
            steps = f"{r['mean_steps']:.1f}" if r.get("mean_steps") is not None else "-"
            lines.append(f"| {kind} | {name} | {r['n']} | {100 * r['exact_match']:.1f}% | "
                         f"{r.get('similarity', 0.0):.1f} | {100 * r['syntax_ok']:.1f}% | {p50} | {p90} | {steps} |")
    return "\n".join(lines)


def data_text() -> str:
    """The Data section's paragraph, from data.PACKAGES (so it names what training reads)."""
    from dgls.engine.train.data import PACKAGES

    dists = sorted({dist for dist, _ in PACKAGES.values()})
    licenses = sorted({lic for _, lic in PACKAGES.values()})
    return ("The Python 3.11.7 standard library (PSF-2.0) and, from step 11,215 on, the source of "
            f"{len(dists)} permissively licensed pure-Python packages ({', '.join(dists)}; licenses: "
            f"{'; '.join(licenses)}), filtered and de-duplicated together, split by a hash of each file's path "
            "(≈3% held out, never trained on). Versions, counts and licenses: `engine/train/DATA.md`. "
            "No benchmark data (HumanEval, MBPP, ...) was used.")


def functions_text(fn: dict) -> str:
    """The function-test result of one eval run."""
    passed = ", ".join(f"{m} {k}/{fn['n']}" for m, k in fn["passed"].items())
    sims = ", ".join(f"{m} {v:.1f}" for m, v in fn.get("similarity", {}).items())
    return (f"Function tests (`dgls eval --functions`: each of {fn['n']} small functions written for this eval "
            "has its body after the docstring removed, the cursor on the empty body line, and its own test run "
            f"on the infilled file): passing {passed}. Body similarity (0-100): {sims}.")


def _architecture(weights: Path, state: dict) -> list[str]:
    """The card's title and architecture section, read from the exported files."""
    from transformers import AutoConfig

    cfg = json.loads((weights / "config.json").read_text())
    gen = json.loads((weights / "generation_config.json").read_text())
    text = cfg["text_config"]
    softcap = AutoConfig.from_pretrained(str(weights)).get_text_config().final_logit_softcapping
    size_mb = sum(p.stat().st_size for p in weights.iterdir() if p.is_file()) / 1e6
    return [
        "# dgls embedded default model",
        "",
        f"A tiny DiffusionGemma (`DiffusionGemmaForBlockDiffusion`, transformers {cfg.get('transformers_version')}) "
        "trained from scratch "
        "by `dgls train` to infill Python with the engine's pinned-suffix canvas (layout A + `<fill>`).",
        "",
        "## Architecture",
        "",
        f"- text: hidden {text['hidden_size']}, {text['num_hidden_layers']} layers "
        f"({', '.join(sorted(set(text['layer_types'])))}), {text['num_attention_heads']} query heads / "
        f"{text['num_key_value_heads']} KV head, head dim {text['head_dim']}, dense MLP {text['intermediate_size']} "
        f"+ MoE {text['num_experts']} experts top-{text['top_k_experts']} of width {text['moe_intermediate_size']}, "
        f"vocab {text['vocab_size']} (byte-level BPE, tied embeddings, logit soft-cap "
        f"{softcap})",
        f"- canvas {cfg['canvas_length']}, `fill_token_id` {cfg.get('fill_token_id')}, max positions "
        f"{text['max_position_embeddings']} (prefix ≤ {text['max_position_embeddings'] - cfg['canvas_length']} "
        "tokens incl. `<bos>`)",
        "- a 1-layer 32-wide vision tower is present only because the class requires one; it is untrained "
        "and unused",
        f"- parameters: {state['parameters_text']:,} without the vision tower (tied weights counted once), "
        f"{state['parameters_total']:,} in total",
        f"- files: {size_mb:.1f} MB (fp32 safetensors + config + generation config + tokenizer)",
        f"- generation config: {gen.get('max_denoising_steps')} steps max, entropy bound "
        f"{gen.get('sampler_config', {}).get('entropy_bound')}, temperature {gen.get('t_max')}→{gen.get('t_min')}, "
        f"stability {gen.get('stability_threshold')}, confidence {gen.get('confidence_threshold')}; "
        "the engine bans each freshly noised slot's own noise token (`exclude_noise_tokens`, on) and lets a "
        "slot end the span only where `<fill>` has at least 1/2 at temperature 1 (`fill_threshold` 0.5)",
        "",
    ]


def _training(state: dict, run_dir: Path) -> list[str]:
    """Data and training sections, with the loss table from the run's loss.tsv."""
    args = state.get("args", {})
    hours = state["elapsed_s"] / 3600
    parts = [
        "## Data",
        "",
        data_text(),
        "",
        "## Training",
        "",
        f"- objective: uniform-state span denoising on the engine's canvas; t ~ U(0,1] per example "
        f"(t = 1 for a share {args.get('full_noise_prob', 0.0)} of examples); "
        f"cross-entropy on span slots (middle + `<fill>`); self-conditioning in {args.get('self_cond_prob')} "
        "of batches (two passes, first without gradient, logits / U[0.4,0.8], clamped positions one-hot)",
        "- spans: rest of line, 1-3 lines, random span, block body, end-of-file continuation; budgets "
        "8/16/24/32/48 (the middle rounded up, sometimes one bucket more)",
        f"- AdamW lr {args.get('lr')} (warmup {args.get('warmup')} steps, then constant"
        + (f"; linear cooldown to 10% from step {args['cooldown_from']} over {args.get('cooldown_steps')} steps"
           if args.get("cooldown_from") else "")
        + "), betas (0.9, 0.98), "
        f"weight decay {args.get('weight_decay')}, grad clip 1.0, batch {args.get('batch')}, seed {args.get('seed')}"
        + (f"; each canvas denoised in {args['views']} noised copies per encoder pass over its prompt, their "
           "noise levels stratified" if args.get("views", 1) > 1 else ""),
        f"- {state['step']:,} steps, {state['tokens']:,} tokens (prompt + canvas), {hours:.2f} h of "
        f"wall-clock on 1-2 threads of a shared 2-core CPU "
        f"({platform.machine()}, no GPU), contended by other jobs",
        "",
        "Loss (span cross-entropy, nats/token, random noise levels; accuracy = argmax on span slots):",
        "",
        "| steps | mean loss | mean acc |",
        "|---|---:|---:|",
    ]
    for first, last, loss, acc in loss_summary(run_dir / "loss.tsv", state["step"]):
        parts.append(f"| {first}-{last} | {loss:.3f} | {acc:.3f} |")
    return parts + [""]


def _evaluation(eval_json: Path | None, packages_json: Path | None) -> list[str]:
    """The evaluation sections from `dgls eval --json` outputs (none when not given)."""
    parts: list[str] = []
    if eval_json is not None and eval_json.exists():
        ev = json.loads(eval_json.read_text())
        parts += ["## Evaluation (held-out standard-library files, `dgls eval`)", "",
                  f"{ev['n_per_set']} items per set, seed {ev['seed']}, budgets {ev['budgets']} (fixed per "
                  "set, the true length is not revealed). `model` = the raw engine; `dgls` = what the language "
                  "server answers for a cursor at that spot (span planner, post-processing, syntax check with "
                  "repair; an infill that would break the parse is dropped). Exact match after stripping "
                  "trailing whitespace; similarity = difflib ratio of infill to answer, 0-100; "
                  "syntax OK = the infilled file has no more tree-sitter errors than the original; latency = "
                  f"engine `total_ms` (`dgls`: wall time incl. repairs) with {ev.get('threads')} torch thread(s); "
                  f"max steps {ev.get('steps') or 'from generation_config.json'}.", "", eval_table(ev), ""]
        if ev.get("heldout_span_loss"):
            parts.append("Held-out span loss (no self-conditioning): " +
                         ", ".join(f"{k}: {v:.3f}" for k, v in ev["heldout_span_loss"].items()) + " nats/token.")
            parts.append("")
        if ev.get("functions"):
            parts += [functions_text(ev["functions"]), ""]
    if packages_json is not None and packages_json.exists():
        ev = json.loads(packages_json.read_text())
        parts += ["### Held-out files of the training packages (`dgls eval --corpus packages`)", "",
                  f"Modern third-party code ({ev['held_out_files']} held-out files of the packages above), same "
                  f"settings, {ev['n_per_set']} items per set, seed {ev['seed']}.", "", eval_table(ev), ""]
        if ev.get("heldout_span_loss"):
            parts += ["Held-out span loss on these files: " +
                      ", ".join(f"{k}: {v:.3f}" for k, v in ev["heldout_span_loss"].items()) + " nats/token.", ""]
    return parts


def write_card(weights: Path, run_dir: Path, eval_json: Path | None, notes: str = "",
               packages_json: Path | None = None) -> Path:
    """Render MODEL_CARD.md into `weights`."""
    state = json.loads((weights / "training_state.json").read_text())
    parts = _architecture(weights, state) + _training(state, run_dir) + _evaluation(eval_json, packages_json)
    if notes:
        parts += [notes.rstrip(), ""]
    parts += ["## Known limits", "", LIMITS, "",
              "## Reproduce / continue", "",
              "```", "dgls train --out runs/embedded --threads 1        # resumes; without a checkpoint it",
              "                                                  # starts from these weights",
              "dgls train --out runs/embedded --export engine/weights/default",
              "dgls eval --n 50 --loss 64 --threads 1 --functions",
              "dgls eval --n 50 --loss 64 --threads 1 --corpus packages", "```", ""]
    out = weights / "MODEL_CARD.md"
    out.write_text("\n".join(parts))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=DEFAULT_EXPORT)
    parser.add_argument("--run", default="runs/embedded")
    parser.add_argument("--eval", default=None, help="dgls eval --json output")
    parser.add_argument("--eval-packages", default=None, help="dgls eval --corpus packages --json output")
    parser.add_argument("--notes", default="", help="a markdown file with extra notes (latency...)")
    args = parser.parse_args(argv)
    notes = Path(args.notes).read_text() if args.notes else ""
    print(write_card(Path(args.weights), Path(args.run), Path(args.eval) if args.eval else None, notes,
                     Path(args.eval_packages) if args.eval_packages else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
