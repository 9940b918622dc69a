"""CI's small eval: the embedded model through the real engine on held-out files, every change.

It guards against regressions in the model files, the tokenizer or the training canvas (the
held-out span loss of a broken model jumps towards ln(8192) = 9.0 nats) and checks that every
set runs end to end through the engine with latencies recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DGLS = str(Path(sys.executable).with_name("dgls"))


def test_small_eval_runs_and_the_model_has_learned():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([DGLS, "eval", "--small", "--loss", "8", "--json", "--threads", "1"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert set(out["results"]) == {"single-line", "multi-line", "random-span"}
    for per_set in out["results"].values():
        assert {"model", "dgls", "empty", "line-above", "frequent-line"} <= set(per_set)
        assert per_set["model"]["n"] == 10 and per_set["model"]["p50_ms"] > 0
        assert per_set["dgls"]["n"] == 10 and per_set["dgls"]["p50_ms"] > 0
        assert per_set["empty"]["similarity"] == 0.0
    # A broken sampler or tokenizer writes unrelated text (similarity to the answer about 5);
    # the shipped model scores 15-20 on single-line items.
    assert out["results"]["single-line"]["model"]["similarity"] > 10, out["results"]["single-line"]
    loss = out["heldout_span_loss"]
    assert loss["t=0.25"] < 3.5, loss  # an untrained model of this vocabulary scores about 9.0
    assert loss["t=1.0"] < 7.5, loss


def test_similarity_is_graded_and_ignores_surrounding_whitespace():
    from dgls.engine.train.evaluate import Item, similarity

    item = Item("single-line", "x.py", "def f(a):\n    ", "return a + 1", "\n")
    assert similarity("return a + 1  \n", item) == 100.0
    assert 50.0 < similarity("return a - 1", item) < 100.0
    assert similarity("", item) == 0.0
    assert similarity("zzzz", item) < similarity("return", item)
    assert similarity("", Item("single-line", "x.py", "", "  ", "")) == 100.0


def test_packages_corpus_evaluates_only_unseen_package_files():
    from dgls.engine.train.evaluate import eval_corpus

    corpus = eval_corpus("packages")
    assert corpus.held_out, "pytest, networkx, ... are installed with the test extras"
    assert not any(f.relpath.startswith("stdlib/") for f in corpus.held_out)
    assert not {f.relpath for f in corpus.held_out} & {f.relpath for f in corpus.train}
    assert not {f.text for f in corpus.held_out} & {f.text for f in corpus.train}
