"""The stress suite, short: each section of `dgls stress` against real `dgls serve` processes on
the tiny checkpoint, asserting the suite's own invariants (nothing unanswered, nothing crashed,
the engine idle afterwards, no stale edit, every fault survived).

These are also the regression tests for what the full-size suite found: requests in another
JSON-RPC version went unanswered (fuzz), pygls wrote a traceback per bad message to the log
(fuzz), a model file truncated while serving killed the server with SIGBUS (faults), and a
damaged or restored model was never reloaded (faults).
"""

from __future__ import annotations

import json

import pytest

from dgls.cli import main
from dgls.stress.cancel import run_cancel
from dgls.stress.faults import run_faults
from dgls.stress.load import run_load, run_soak
from dgls.stress.servers import copy_model, start_daemon


@pytest.fixture
def model(tiny_model_dir, tmp_path):
    """A private copy: the fault section damages it."""
    return copy_model(str(tiny_model_dir), tmp_path)


def test_fuzz_through_the_command_answers_every_request(tiny_model_dir, capsys):
    assert main(["stress", "fuzz", "--messages", "1000", "--seed", "1", "--json", "--model", str(tiny_model_dir)]) == 0
    f = json.loads(capsys.readouterr().out)["fuzz"]
    assert f["failures"] == [], f
    assert f["messages"] == 1_000 and f["requests"] > 500 and f["unanswered"] == 0
    assert f["results"] > 0 and f["errors"] > 0  # both the engine path and the error paths were reached
    assert f["error_codes"].get("-32600", 0) > 0  # requests in another JSON-RPC version get InvalidRequest
    assert f["tracebacks"] == 0  # bad input is one log line, not a traceback
    assert f["alive"] and f["serving_after"] and f["exit_code"] == 0
    assert main(["stress", "nonsense"]) == 2


def test_cancel_storm_leaves_no_work_and_no_stale_edit(model, tmp_path):
    f = run_cancel(model, tmp_path, 100, seed=2)
    assert f["failures"] == [], f
    assert f["unanswered"] == 0 and f["stale_edits"] == 0
    assert f["cancelled"] > 0 and f["results"] > 0  # cancels landed before and after answers
    assert f["cpu_after"] < 0.25 and f["last_status"] != "busy"


def test_load_and_soak_answer_every_keystroke(model, tmp_path):
    daemon = start_daemon(model, tmp_path)
    try:
        load = run_load(model, tmp_path, clients=2, seconds=6, daemon=daemon)
        soak = run_soak(model, tmp_path, seconds=10, daemon=daemon)
    finally:
        daemon.stop()
    assert load["failures"] == [], load
    assert load["unanswered"] == 0 and load["errors"] == 0 and load["p50_s"] is not None
    assert load["rss_before_mb"] > 0 and load["rss_after_mb"] > 0
    assert soak["failures"] == [], soak
    assert soak["unanswered"] == 0 and soak["errors"] == 0 and soak["rss_growth_mb"] is not None


def test_faults_are_survived_and_the_engine_reloads(model, tmp_path):
    f = run_faults(model, tmp_path)
    assert f["failures"] == [], f
    s = f["scenarios"]
    assert f["survived"] == len(s) == 5
    assert "RuntimeError" in s["engine_exception"]["error_message"]
    assert "MemoryError" in s["memory_error"]["error_message"]
    for damaged in ("model_corrupted", "model_deleted"):
        assert s[damaged]["reported"] and s[damaged]["reloaded"] and s[damaged]["errors_while_damaged"] == 0
    assert s["client_disconnect"]["cpu_after"] < 0.25
