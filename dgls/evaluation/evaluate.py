"""`dgls eval`: held-out infilling sets, scored like HumanEval-Infilling, against simple baselines.

Each item (dgls.evaluation.sets) is infilled twice: "model" is the raw engine API with a fixed,
planner-like budget (the true length is not revealed); "dgls" is what the language server answers
for a cursor at that spot (span planner, post-processing, syntax check with repair), through
the same pipeline as the server. Engine latency is reported beside the scores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

from dgls.engine.train.heldout import heldout_loss
from dgls.pipeline import infilled_file

from .sets import (
    BUDGETS,
    SETS,
    Item,
    Score,
    SyntaxChecker,
    baseline_empty,
    baseline_line_above,
    build_sets,
    eval_corpus,
    exact,
    frequent_lines,
    make_baseline_frequent,
    similarity,
)


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


def make_server_method(engine):
    """What the language server would answer for a cursor where the middle was."""

    def server(item: Item) -> tuple[str | None, str]:
        """(the infilled middle, or None when the edit reached past it; the whole infilled file)"""
        text = infilled_file(engine, item.prefix, item.suffix)
        if not (text.startswith(item.prefix) and text.endswith(item.suffix)
                and len(text) >= len(item.prefix) + len(item.suffix)):
            return None, text  # the plan replaced text around the cursor: scored as a whole file
        return text[len(item.prefix): len(text) - len(item.suffix)], text

    return server


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
    from dgls.engine.train.tokenizer import encode, load
    from dgls.engine.train.train import DEFAULT_EXPORT

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
                # the raw engine is not the planner: a single-line item keeps the first line, as dgls would
                text = res.text.split("\n", 1)[0] if kind == "single-line" else res.text
                preds["model"] = (text, res.stats.total_ms)
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
        from .functions import run_function_eval

        source = None if args.functions == "builtin" else Path(args.functions).read_text(encoding="utf-8")
        log("function tests:")
        functions = run_function_eval(engine, source, args.seed, log)
    import torch

    return {"corpus": args.corpus, "model": getattr(engine, "name", None), "steps": args.steps,
            "threads": torch.get_num_threads(), "n_per_set": n, "seed": args.seed,
            "budgets": {k: BUDGETS[k] for k in items}, "held_out_files": len(corpus.held_out),
            "results": table, "heldout_span_loss": losses, "functions": functions}


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

