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
    proc = subprocess.run([DGLS, "eval", "--small", "--loss", "8", "--json", "--threads", "1", "--functions"],
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
    functions = out["functions"]
    assert functions["passed"]["reference"] == functions["n"] >= 20 and functions["passed"]["empty"] == 0
    assert {"model", "dgls"} <= set(functions["passed"]) and functions["similarity"]["model"] > 0
    loss = out["heldout_span_loss"]
    assert loss["t=0.25"] < 3.5, loss  # an untrained model of this vocabulary scores about 9.0
    assert loss["t=1.0"] < 7.5, loss


def test_similarity_is_graded_and_ignores_surrounding_whitespace():
    from dgls.evaluation.sets import Item, similarity

    item = Item("single-line", "x.py", "def f(a):\n    ", "return a + 1", "\n")
    assert similarity("return a + 1  \n", item) == 100.0
    assert 50.0 < similarity("return a - 1", item) < 100.0
    assert similarity("", item) == 0.0
    assert similarity("zzzz", item) < similarity("return", item)
    assert similarity("", Item("single-line", "x.py", "", "  ", "")) == 100.0


def test_packages_corpus_evaluates_only_unseen_package_files():
    from dgls.evaluation.sets import eval_corpus

    corpus = eval_corpus("packages")
    assert corpus.held_out, "pytest, networkx, ... are installed with the test extras"
    assert not any(f.relpath.startswith("stdlib/") for f in corpus.held_out)
    assert not {f.relpath for f in corpus.held_out} & {f.relpath for f in corpus.train}
    assert not {f.text for f in corpus.held_out} & {f.text for f in corpus.train}


def test_function_tasks_pass_with_their_bodies_and_fail_without():
    from dgls.evaluation.functions import function_tasks, passes, run_function_eval

    out = run_function_eval(None, log=lambda _m: None)
    assert out["n"] >= 20
    assert out["passed"] == {"reference": out["n"], "empty": 0}
    assert out["similarity"] == {"reference": 100.0, "empty": 0.0}
    source = (
        "def add(a, b):\n"
        "    \"\"\"Sum.\"\"\"\n"
        "    total = a + b\n"
        "    return total\n\n\n"
        "def untested():\n"
        "    return 1\n\n\n"
        "def test_add():\n"
        "    assert add(2, 3) == 5\n"
    )
    (task,) = function_tasks(source)
    assert task.name == "add" and task.prefix.endswith('"""Sum."""\n    ')
    assert task.body == "total = a + b\n    return total"
    assert passes(task.prefix + task.body + task.suffix, "test_add")
    assert not passes(task.prefix + "return a - b" + task.suffix, "test_add")
    assert not passes(task.prefix + "while True: pass" + task.suffix, "test_add", timeout=1.0)


class _EchoEngine:
    """Writes a fixed text for every request: stands in for a model that knows the answer, so the
    test checks what the server pipeline does with a correct body (planning, post-processing)."""

    def __init__(self, text: str):
        self.text = text

    def infill(self, req, cancel=None):
        from dgls.engine.types import InfillResult, InfillStats

        return InfillResult(text=self.text, status="ok", confidence=[], tokens=[], stats=InfillStats())


def test_a_correct_body_survives_the_server_pipeline_and_passes():
    from dgls.evaluation.functions import TASKS_FILE, function_tasks, passes, server_infill

    for task in function_tasks(TASKS_FILE.read_text(encoding="utf-8")):
        # as written, and running on into the next definition (the pipeline cuts it where it leaves the block)
        for draft in (task.body, task.body + "\n\n\ndef other():\n    pass"):
            infilled = server_infill(_EchoEngine(draft), task)
            assert infilled == task.prefix + task.body + task.suffix, (task.name, draft)
            assert passes(infilled, f"test_{task.name}"), (task.name, draft)
