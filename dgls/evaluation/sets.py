"""The held-out infill sets `dgls eval` scores: how items are cut, the baselines, and the scores.

Three sets are cut from held-out files only (never trained on): single-line (the rest of a line
after its indentation), multi-line (2-4 whole lines) and random-span (a random character span).
Scores: exact match after stripping trailing whitespace, similarity to the answer (difflib's
ratio, 0-100) and whether the infilled file parses with no more tree-sitter errors than the
original. Baselines: an empty insert, a copy of the line above, and the most frequent line at the
cursor's indentation in the train split.
"""

from __future__ import annotations

import difflib
import random
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from dgls.engine.train.data import Corpus, load_corpus, load_training_corpus

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


def eval_corpus(name: str) -> Corpus:
    """Held-out files for the sets, and the training files the frequent-line baseline counts."""
    if name == "stdlib":
        return load_corpus()
    full = load_training_corpus()
    held = [f for f in full.held_out if not f.relpath.startswith("stdlib/")]
    return Corpus(train=full.train, held_out=held, stats=full.stats, source=full.source)
