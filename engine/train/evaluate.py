"""`dgls eval`: held-out infilling sets, scored like HumanEval-Infilling, against simple baselines.

Three sets are cut from held-out files only (never trained on): single-line (the rest of a line
after its indentation), multi-line (2-4 whole lines) and random-span (a random character span).
Each item is infilled twice: "model" is the raw engine API with a fixed, planner-like budget
(the true length is not revealed); "dgls" is what the language server answers for a cursor at
that spot (span planner, post-processing, syntax check with repair). Scores: exact match after
stripping trailing whitespace, similarity to the answer (difflib's ratio, 0-100: a graded signal
while exact matches are rare), whether the infilled file parses with no more tree-sitter errors
than the original, and engine latency. Baselines run on the same items: an empty insert, a copy
of the line above, and the most frequent line at the cursor's indentation in the train split.
"""

from __future__ import annotations

import argparse
import difflib
import json
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .data import Corpus, load_corpus, load_training_corpus

SETS = ("single-line", "multi-line", "random-span")
BUDGETS = {"single-line": 16, "multi-line": 48, "random-span": 32}
MAX_MIDDLE_TOKENS = {"single-line": 16, "multi-line": 48, "random-span": 32}


@dataclass
class Item:
    """One infill task: the file cut into prefix, middle (the answer) and suffix."""

    set: str
    path: str
    prefix: str
    middle: str
    suffix: str

    @property
    def original(self) -> str:
        return self.prefix + self.middle + self.suffix


@dataclass
class Score:
    """Per-method totals for one set."""

    n: int = 0
    exact: int = 0
    syntax_ok: int = 0
    similarity: float = 0.0
    latency_ms: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)

    def row(self) -> dict:
        lat = sorted(self.latency_ms)
        return {"mean_steps": statistics.fmean(self.steps) if self.steps else None, "n": self.n, "exact_match": self.exact / self.n if self.n else 0.0,
                "similarity": self.similarity / self.n if self.n else 0.0,
                "syntax_ok": self.syntax_ok / self.n if self.n else 0.0,
                "p50_ms": statistics.median(lat) if lat else None,
                "p90_ms": lat[int(0.9 * (len(lat) - 1))] if lat else None}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options for `dgls eval`."""
    parser.add_argument("--model", default=None, help="checkpoint dir or hub id (default: embedded model)")
    parser.add_argument("--n", type=int, default=100, help="items per set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--small", action="store_true", help="a CI preset: 10 items per set")
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated subset of " + ", ".join(SETS))
    parser.add_argument("--corpus", choices=("stdlib", "packages"), default="stdlib",
                        help="held-out files to cut the sets from: the standard library's (default, comparable "
                             "across sessions) or the training packages' (modern third-party code)")
    parser.add_argument("--functions", nargs="?", const="builtin", default=None, metavar="FILE",
                        help="also blank each function body that has a test_<name> beside it, infill it and run "
                             "the test (default FILE: dgls's own function_tasks.py)")
    parser.add_argument("--no-model", action="store_true", help="baselines only")
    parser.add_argument("--no-server", action="store_true", help="skip the language-server pipeline row")
    parser.add_argument("--steps", type=int, default=None, help="max denoising steps (default: the model's)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--loss", type=int, default=0, metavar="N",
                        help="also report held-out span loss on N training-style examples per noise level")


# ----- sets -------------------------------------------------------------------------------------

def _lines(text: str) -> list[tuple[int, int]]:
    out, pos = [], 0
    for line in text.splitlines(keepends=True):
        out.append((pos, pos + len(line.rstrip("\r\n"))))
        pos += len(line)
    return out


def _is_code(text: str, s: int, e: int) -> bool:
    stripped = text[s:e].strip()
    return len(stripped) >= 2 and not stripped.startswith("#")


def _cut(kind: str, text: str, rng: random.Random) -> tuple[int, int] | None:
    lines = _lines(text)
    code = [i for i, (s, e) in enumerate(lines) if _is_code(text, s, e)]
    if not code:
        return None
    if kind == "single-line":
        s, e = lines[rng.choice(code)]
        start = s + len(text[s:e]) - len(text[s:e].lstrip())
        return start, e
    if kind == "multi-line":
        i = rng.choice(code)
        j = min(len(lines) - 1, i + rng.randint(1, 3))
        if j == i:
            return None
        s, e = lines[i]
        return s + len(text[s:e]) - len(text[s:e].lstrip()), lines[j][1]
    start = rng.randrange(len(text) - 1)
    return start, min(len(text), start + rng.randint(1, 80))


def build_sets(files, n: int, seed: int, count_tokens, sets=SETS) -> dict[str, list[Item]]:
    """Cut `n` items per set from the held-out files (deterministic for a seed)."""
    out: dict[str, list[Item]] = {}
    for kind in sets:
        rng = random.Random(f"{seed}:{kind}")
        items: list[Item] = []
        attempts = 0
        while len(items) < n and attempts < n * 50:
            attempts += 1
            f = rng.choice(files)
            cut = _cut(kind, f.text, rng)
            if cut is None:
                continue
            s, e = cut
            middle = f.text[s:e]
            if not middle.strip() or not 1 <= count_tokens(middle) <= MAX_MIDDLE_TOKENS[kind]:
                continue
            items.append(Item(kind, f.relpath, f.text[:s], middle, f.text[e:]))
        out[kind] = items
    return out


# ----- scoring ----------------------------------------------------------------------------------

class SyntaxChecker:
    """Counts tree-sitter ERROR and MISSING nodes in a Python file (the server's own count)."""

    def errors(self, text: str) -> int:
        from dgls.syntax import parse_error_count

        return parse_error_count("python", text)


def frequent_lines(files) -> dict[int, str]:
    """Most frequent stripped code line per indentation width in the train split."""
    counts: dict[int, Counter] = defaultdict(Counter)
    for f in files:
        for line in f.text.splitlines():
            stripped = line.strip()
            if len(stripped) >= 2 and not stripped.startswith("#"):
                counts[len(line) - len(line.lstrip())][stripped] += 1
    return {indent: c.most_common(1)[0][0] for indent, c in counts.items()}


def _indent_at(prefix: str) -> int:
    """Indentation width of the cursor's line (its text before the cursor)."""
    line = prefix[prefix.rfind("\n") + 1:]
    return len(line) - len(line.lstrip())


def baseline_empty(item: Item) -> str:
    return ""


def baseline_line_above(item: Item) -> str:
    """The previous non-blank line, without its indentation (the cursor keeps its own)."""
    before = item.prefix[: item.prefix.rfind("\n") + 1] if "\n" in item.prefix else ""
    for line in reversed(before.splitlines()):
        if line.strip():
            return line.strip()
    return ""


def make_baseline_frequent(table: dict[int, str]):
    def baseline_frequent(item: Item) -> str:
        return table.get(_indent_at(item.prefix), "")
    return baseline_frequent


def exact(pred: str, item: Item) -> bool:
    return pred.rstrip() == item.middle.rstrip()


def similarity(pred: str, item: Item) -> float:
    """0-100, difflib's ratio of the stripped infill to the stripped answer."""
    a, b = pred.strip(), item.middle.strip()
    if not a and not b:
        return 100.0
    return 100.0 * difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def server_file(engine, prefix: str, suffix: str) -> str:
    """The whole file after the language server's edit for a cursor between `prefix` and
    `suffix`: the same pipeline (`dgls.pipeline`), so planning, post-processing and the syntax
    check count."""
    import threading

    from dgls.documents import Document
    from dgls.options import Settings
    from dgls.pipeline import plan_at, run_plans, snapshot

    settings = Settings()
    doc = Document(uri="file:///eval/item.py", text=prefix + suffix, version=1, language_id="python")
    plan = plan_at(doc, len(prefix), None, settings)
    edits = run_plans(engine, snapshot(doc, doc.uri), [plan], settings, threading.Event())
    if not edits:
        return doc.text
    return doc.text[:edits[0].start] + edits[0].text + doc.text[edits[0].end:]


def make_server_method(engine):
    """What the language server would answer for a cursor where the middle was."""

    def server(item: Item) -> tuple[str | None, str]:
        """(the infilled middle, or None when the edit reached past it; the whole infilled file)"""
        text = server_file(engine, item.prefix, item.suffix)
        if not (text.startswith(item.prefix) and text.endswith(item.suffix)
                and len(text) >= len(item.prefix) + len(item.suffix)):
            return None, text  # the plan replaced text around the cursor: scored as a whole file
        return text[len(item.prefix): len(text) - len(item.suffix)], text

    return server


# ----- held-out loss ----------------------------------------------------------------------------

NOISE_LEVELS = (0.25, 0.5, 1.0)


LOSS_PREFIX_TOKENS = 256


def heldout_loss(model_dir: str | None, files, n: int, seed: int) -> dict[str, float]:
    """Mean span cross-entropy (nats/token) on held-out training-style canvases at fixed noise
    levels, without self-conditioning: a learning signal independent of the sampler."""
    import torch
    import torch.nn.functional as F
    from transformers import DiffusionGemmaForBlockDiffusion

    from ..canvas import SpecialTokens, token_shift
    from ..loading import resolve_model_dir
    from . import objective as obj
    from .tokenizer import load

    path = str(resolve_model_dir(model_dir))
    model = DiffusionGemmaForBlockDiffusion.from_pretrained(path, dtype=torch.float32).eval()
    if hasattr(model, "set_experts_implementation"):
        model.set_experts_implementation("eager")
    tok = load(path)
    special = SpecialTokens.from_config(model.config)
    canvas = int(model.config.canvas_length)
    # the embedded model's whole context; larger models are measured on the same prompt length
    prefix = min(LOSS_PREFIX_TOKENS, int(model.config.get_text_config().max_position_embeddings) - canvas)
    vocab = int(model.config.get_text_config().vocab_size)
    shift = token_shift(model.config)
    rng = random.Random(f"{seed}:loss")
    texts = [f.text for f in files]
    examples = []
    while len(examples) < n:
        ex = obj.sample_example(tok, rng.choice(texts), rng, special, canvas, prefix, shift=shift)
        if ex is not None:
            examples.append(ex)
    out = {}
    with torch.no_grad():
        for level in NOISE_LEVELS:
            gen = torch.Generator().manual_seed(seed)
            total, count = 0.0, 0
            for i in range(0, n, 8):
                batch = obj.collate(examples[i:i + 8], special)
                noisy, _ = obj.add_noise(batch.targets, batch.clamped, vocab, gen,
                                         t=torch.full((batch.targets.shape[0],), level))
                hidden = obj.decoder_hidden(model, obj.encode_prompts(model, batch), batch, noisy)
                logits = obj.lm_logits(model, hidden[batch.span])
                total += float(F.cross_entropy(logits, batch.targets[batch.span], reduction="sum"))
                count += int(batch.span.sum())
            out[f"t={level}"] = total / count
    return out


# ----- main -------------------------------------------------------------------------------------

def evaluate(args: argparse.Namespace, log=print) -> dict:
    """Build the sets, run baselines and the model, return a results dict."""
    n = 10 if args.small else args.n
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    corpus = eval_corpus(args.corpus)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    engine = None
    if not args.no_model:
        from dgls.engine import Engine

        t0 = time.perf_counter()
        engine = Engine(model=args.model, device=None, dtype=None)
        log(f"model {engine.name} loaded in {time.perf_counter() - t0:.1f}s")
    from .tokenizer import encode, load
    from .train import DEFAULT_EXPORT

    # the sets are cut with the embedded model's tokenizer whatever model runs: same seed, same items
    tok = load(DEFAULT_EXPORT)
    items = build_sets(corpus.held_out, n, args.seed, lambda text: len(encode(tok, text)), sets)
    checker = SyntaxChecker()
    methods = {"empty": baseline_empty, "line-above": baseline_line_above,
               "frequent-line": make_baseline_frequent(frequent_lines(corpus.train))}
    results: dict[str, dict[str, Score]] = {kind: defaultdict(Score) for kind in items}
    server = make_server_method(engine) if engine is not None and not args.no_server else None
    for kind, its in items.items():
        for idx, item in enumerate(its):
            base_errors = checker.errors(item.original)
            preds = {}
            for name, fn in methods.items():
                preds[name] = (fn(item), 0.0)
            whole: dict[str, str] = {}
            if engine is not None:
                from dgls.engine import InfillRequest

                res = engine.infill(InfillRequest(prefix=item.prefix, suffix=item.suffix,
                                                  max_tokens=BUDGETS[kind], single_line=kind == "single-line",
                                                  seed=args.seed, steps=args.steps))
                preds["model"] = (res.text, res.stats.total_ms)
                results[kind]["model"].steps.append(res.stats.steps)
                if server is not None:
                    t0 = time.perf_counter()
                    middle, file_text = server(item)
                    preds["dgls"] = (middle or "", (time.perf_counter() - t0) * 1000)  # repairs included
                    if middle is None:  # the edit reached past the cursor: no middle to compare
                        whole["dgls"] = file_text
            for name, (pred, ms) in preds.items():
                sc = results[kind][name]
                sc.n += 1
                file_text = whole.get(name, item.prefix + pred + item.suffix)
                sc.exact += name not in whole and exact(pred, item)
                sc.similarity += 0.0 if name in whole else similarity(pred, item)
                sc.syntax_ok += checker.errors(file_text) <= base_errors
                if name in ("model", "dgls"):
                    sc.latency_ms.append(ms)
            if engine is not None and (idx + 1) % 10 == 0:
                log(f"  {kind}: {idx + 1}/{len(its)}")
    table = {kind: {name: sc.row() for name, sc in per.items()} for kind, per in results.items()}
    losses = heldout_loss(args.model, corpus.held_out, args.loss, args.seed) if args.loss else None
    functions = None
    if getattr(args, "functions", None):
        from .function_eval import run_function_eval

        source = None if args.functions == "builtin" else Path(args.functions).read_text(encoding="utf-8")
        log("function tests:")
        functions = run_function_eval(engine, source, args.seed, log)
    import torch

    return {"corpus": args.corpus, "model": getattr(engine, "name", None), "steps": args.steps,
            "threads": torch.get_num_threads(), "n_per_set": n, "seed": args.seed,
            "budgets": {k: BUDGETS[k] for k in items}, "held_out_files": len(corpus.held_out),
            "results": table, "heldout_span_loss": losses, "functions": functions}


def eval_corpus(name: str) -> Corpus:
    """Held-out files for the sets, and the training files the frequent-line baseline counts."""
    if name == "stdlib":
        return load_corpus()
    full = load_training_corpus()
    held = [f for f in full.held_out if not f.relpath.startswith("stdlib/")]
    return Corpus(train=full.train, held_out=held, stats=full.stats, source=full.source)


def format_table(out: dict) -> str:
    """A readable table: one row per (set, method)."""
    rows = [f"sets cut from {out.get('held_out_files', '?')} held-out files ({out.get('corpus', 'stdlib')})",
            f"{'set':12s} {'method':14s} {'n':>4s} {'exact':>7s} {'simil.':>7s} {'syntax':>7s} {'p50 ms':>8s} "
            f"{'p90 ms':>8s} {'steps':>6s}"]
    for kind, per in out["results"].items():
        for name, r in per.items():
            p50 = f"{r['p50_ms']:.0f}" if r["p50_ms"] is not None else "-"
            p90 = f"{r['p90_ms']:.0f}" if r["p90_ms"] is not None else "-"
            steps = f"{r['mean_steps']:.1f}" if r.get("mean_steps") is not None else "-"
            rows.append(f"{kind:12s} {name:14s} {r['n']:4d} {100 * r['exact_match']:6.1f}% "
                        f"{r.get('similarity', 0.0):7.1f} {100 * r['syntax_ok']:6.1f}% {p50:>8s} {p90:>8s} {steps:>6s}")
    if out.get("functions"):
        fn = out["functions"]
        rows.append(f"functions passing their tests (of {fn['n']}): " +
                    ", ".join(f"{m} {k}" for m, k in fn["passed"].items()))
        rows.append("function-body similarity: " + ", ".join(f"{m} {v:.1f}" for m, v in fn["similarity"].items()))
    if out.get("heldout_span_loss"):
        rows.append("held-out span loss (nats/token): " +
                    ", ".join(f"{k} {v:.3f}" for k, v in out["heldout_span_loss"].items()))
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    """Entry point for `dgls eval`."""
    out = evaluate(args, log=(lambda m: print(m, file=sys.stderr, flush=True)))
    print(json.dumps(out, indent=2) if args.json else format_table(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dgls eval", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

