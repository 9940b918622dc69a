"""The per-request deadline: the engine, the repair loop, the queue and the server stop at it and
answer (the best draft that keeps the file parsing, or nothing), and then keep serving."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import CancelledError

import pytest
from dgls.engine import InfillRequest
from lsp_client import LspClient, pos

from dgls import pipeline
from dgls.deadline import DeadlineExceeded, await_job, deadline_for
from dgls.documents import Document
from dgls.host import EngineHost, Superseded
from dgls.options import Settings
from dgls.scheduler import Scheduler
from dgls.syntax import SyntaxTree

SLOW = {"steps": 400, "maxSpanTokens": 48}


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from dgls.engine import Engine

    return Engine(model=str(tiny_model_dir))


def _slow_drafts(drafts: list[str]):
    """An on_draft that makes every denoising step take 20 ms more (a busy machine)."""
    def on_draft(text: str) -> None:
        drafts.append(text)
        time.sleep(0.02)

    return on_draft


def test_engine_stops_at_the_deadline_with_its_last_draft(engine):
    drafts: list[str] = []
    req = InfillRequest(prefix="def g():\n", steps=400, on_draft=_slow_drafts(drafts),
                        deadline=time.monotonic() + 0.3)
    res = engine.infill(req)
    assert res.status == "deadline"
    assert 1 <= res.stats.steps < 400
    assert res.text == drafts[-1]  # the best draft so far, not noise
    assert engine.infill(InfillRequest(prefix="ok = ", steps=2)).status == "ok"  # still usable


def test_a_deadline_already_past_gives_no_noise(engine):
    res = engine.infill(InfillRequest(prefix="x = ", steps=50, deadline=time.monotonic() - 1))
    assert res.status == "deadline" and res.text == "" and res.stats.steps == 0


def test_cancel_wins_over_the_deadline(engine):
    cancel = threading.Event()
    cancel.set()
    res = engine.infill(InfillRequest(prefix="x = ", deadline=time.monotonic() - 1), cancel=cancel)
    assert res.status == "cancelled"


def test_waiting_for_the_engine_lock_stops_at_the_deadline(engine):
    """A request queued behind another on the engine lock answers at its deadline, not after."""
    started = threading.Event()

    def hold(text: str) -> None:
        started.set()
        time.sleep(0.05)

    busy = threading.Thread(target=engine.infill, args=(InfillRequest(prefix="a = ", steps=40, on_draft=hold),))
    busy.start()
    assert started.wait(30)
    t = time.monotonic()
    res = engine.infill(InfillRequest(prefix="b = ", deadline=t + 0.05))
    waited = time.monotonic() - t
    busy.join()
    assert res.status == "deadline" and res.text == ""
    assert waited < 1.5  # generous: the other request holds the lock for ~2 s


def test_pipeline_keeps_a_parsing_draft_or_nothing_and_skips_repairs(engine):
    text = "def f(x):\n    y = \n    return y\n"
    doc = Document("file:///t.py", text, 1, "python")
    plan = pipeline.plan_at(doc, text.index("y = ") + 4, None, Settings())
    snap = pipeline.snapshot(doc, "deadline-doc")
    results: list = []
    calls: list[InfillRequest] = []

    class Recording:  # the real engine, with its requests recorded
        def __getattr__(self, name):
            return getattr(engine, name)

        def infill(self, req, cancel=None):
            calls.append(req)
            return engine.infill(req, cancel=cancel)

    edits = pipeline.run_plans(Recording(), snap, [plan], Settings(), threading.Event(), results=results,
                               deadline=time.monotonic() - 1)
    assert edits == []  # answered, with nothing (not None, which means cancelled)
    assert calls == []  # no engine work once the deadline has passed
    drafts: list[str] = []
    req_deadline = time.monotonic() + 0.3
    slow = Settings(steps=400)
    edits = pipeline.run_plans(Recording(), snap, [plan], slow, threading.Event(), results=results,
                               on_draft=_slow_drafts(drafts), deadline=req_deadline)
    assert edits is not None and results[-1].status == "deadline"
    assert all(c.remask is None and c.seed == pipeline.SEED for c in calls)  # no repair after the deadline
    before = SyntaxTree("python", text).error_count()
    for edit in edits:  # whatever was kept adds no parse error
        new = text[:edit.start] + edit.text + text[edit.end:]
        assert SyntaxTree("python", new).error_count() <= before


def test_a_queued_job_is_dropped_at_its_deadline():
    """A job waiting behind another client's long job is answered at its deadline (backstop)."""
    host = EngineHost(lambda **_: object())
    host.configure(Settings().engine_key)
    scheduler = Scheduler(host)
    release = threading.Event()
    try:
        scheduler.submit("a", ("a", "doc", "command"), lambda engine, cancel: release.wait(30))
        late = scheduler.submit("b", ("b", "doc", "suggest"), lambda engine, cancel: "ran")

        async def wait() -> float:
            t = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                await await_job(late, t + 0.1, scheduler.drop)
            return time.monotonic() - t

        waited = asyncio.run(wait())
        assert waited < 5  # generous; the other job holds the worker for 30 s
        assert late.cancel.is_set()
        release.set()
        with pytest.raises((Superseded, CancelledError)):
            late.future.result(10)  # it never runs
    finally:
        release.set()
        scheduler.close()
        host.close()


def test_settings_choose_the_deadline_by_kind():
    s, _ = Settings().merged({"dgls": {"deadlineMs": 500, "commandDeadlineMs": 9000}})
    assert deadline_for(s, "suggest", now=100.0) == pytest.approx(100.5)
    assert deadline_for(s, "command", now=100.0) == pytest.approx(109.0)
    assert Settings().deadline_ms == 3000 and Settings().command_deadline_ms == 15000
    _, problems = Settings().merged({"dgls": {"deadlineMs": 0}})
    assert problems  # out of range: ignored with a warning


def test_server_answers_at_a_tiny_deadline_and_keeps_serving(tiny_model_dir):
    client = LspClient.spawn("--model", str(tiny_model_dir), env={"OMP_NUM_THREADS": "1"})
    try:
        client.initialize(options={"dgls": {**SLOW, "deadlineMs": 1}})
        client.wait_status("ready", 180)
        uri = client.open("def f(x):\n    y = \n    return y\n")
        params = {"textDocument": {"uri": uri}, "position": pos(1, 8), "context": {"triggerKind": 1}}
        mark = client.mark()
        t = time.monotonic()
        result = client.call("textDocument/inlineCompletion", params, timeout=60)
        assert time.monotonic() - t < 20  # generous: 400 steps without a deadline take far longer here
        assert result is None or isinstance(result, (list, dict))
        said = client.wait_for(lambda m, p: m == "window/logMessage" and "deadline" in p["message"], 10, mark)
        assert "1 ms deadline" in said[2]["message"]
        # the server keeps serving: a normal deadline gives a normal answer
        client.notify("workspace/didChangeConfiguration",
                      {"settings": {"dgls": {"steps": 2, "maxSpanTokens": 8, "deadlineMs": 60000}}})
        result = client.call("textDocument/inlineCompletion", params, timeout=60)
        assert result is None or isinstance(result, (list, dict))
    finally:
        client.close()
