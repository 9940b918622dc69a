"""Side-by-side measurements on the held-out sets of `dgls eval`, in one run on the same items.

`python -m dgls.evaluation.compare [--n N]` prints, per set:
- span length (issue 2): the filler token with the planner's budget (what dgls does), the true
  length revealed (an oracle upper bound), and a batch of budgets scored by entropy (what dgls
  does for models without a filler token);
- the syntax check (issue 5): the share of infills that keep the file parsing and the exact
  match, with post-processing only vs with the syntax check (re-mask repair, another draft, or drop).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import threading
from collections import defaultdict

from dgls.engine.train.data import load_corpus

from .sets import BUDGETS, SETS, SyntaxChecker, build_sets, exact


def _plan(item, budget: int):
    """The planner's view of the hole (kind, indentation, single line) with the set's budget."""
    from dgls.spans import plan_span

    text = item.prefix + item.suffix
    plan = plan_span(text, "python", len(item.prefix))
    return dataclasses.replace(plan, budget=budget), text


def compare(n: int, seed: int, model: str | None = None, steps: int | None = None) -> dict:
    from dgls.engine import Engine, InfillRequest
    from dgls.postprocess import choose_infill, clean_infill

    engine = Engine(model)
    items = build_sets(load_corpus().held_out, n, seed, engine.count_tokens, SETS)
    checker = SyntaxChecker()
    table: dict[str, dict[str, dict[str, float]]] = {}
    for kind, its in items.items():
        tally: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # exact, parses, n
        for item in its:
            base = checker.errors(item.original)
            plan, text = _plan(item, BUDGETS[kind])
            req = InfillRequest(prefix=item.prefix, suffix=item.suffix, max_tokens=BUDGETS[kind],
                                single_line=plan.single_line, seed=seed, steps=steps)
            raw = engine.infill(req).text
            raw = raw.split("\n", 1)[0] if plan.single_line else raw
            oracle = engine.infill(dataclasses.replace(req, max_tokens=max(1, engine.count_tokens(item.middle))))
            fill = engine.special
            engine.special = dataclasses.replace(fill, fill=None)  # as for a model without a filler
            try:
                batch = engine.infill(req).text
            finally:
                engine.special = fill

            def repair(candidate, bad, req=req):
                fixed = engine.infill(dataclasses.replace(req, span=candidate, remask=bad), threading.Event())
                again = engine.infill(dataclasses.replace(req, seed=seed + 1))
                return [fixed.text, again.text]

            preds = {
                "filler+planner budget": raw,
                "filler+true length": oracle.text,
                "batch of budgets": batch,
                "post-processed": clean_infill(raw, plan, text),
                "post+syntax check": choose_infill([raw], plan, text, "python", repair=repair).text,
            }
            for name, pred in preds.items():
                row = tally[name]
                row[0] += exact(pred, item)
                row[1] += checker.errors(item.prefix + pred + item.suffix) <= base
                row[2] += 1
        table[kind] = {name: {"exact": e / k, "parses": p / k, "n": k} for name, (e, p, k) in tally.items()}
    return {"model": engine.name, "n_per_set": n, "seed": seed, "results": table}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    out = compare(args.n, args.seed, args.model, args.steps)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{'set':12s} {'method':24s} {'n':>4s} {'exact':>7s} {'parses':>7s}")
    for kind, rows in out["results"].items():
        for name, r in rows.items():
            print(f"{kind:12s} {name:24s} {r['n']:4d} {100 * r['exact']:6.1f}% {100 * r['parses']:6.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
