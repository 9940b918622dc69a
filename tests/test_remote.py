"""The remote engine against a real HTTP server on loopback that answers as vLLM does (fake_vllm):
what dgls sends, what it does with each reply and each failure, cancellation, TLS and the URL policy."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import pytest
from dgls.engine import EngineError, InfillRequest
from dgls.engine.infill_prompt import HOLE
from fake_vllm import MODEL, Behaviour, FakeVllm

from dgls.host import EngineHost
from dgls.options import RemoteOptions, Settings
from dgls.remote_engine import RemoteEngine, clean_reply
from dgls.remote_http import Endpoint
from dgls.scheduler import Scheduler

PREFIX = "def add(a, b):\n    return "
SUFFIX = "\n\n\nprint(add(1, 2))\n"


@pytest.fixture()
def server():
    with FakeVllm() as srv:
        yield srv


def engine_for(srv: FakeVllm, **kw) -> RemoteEngine:
    timeout = kw.pop("timeout", 5.0)
    return RemoteEngine(RemoteOptions(srv.url, kw.pop("api_key_env", None), timeout=timeout), **kw)


def request(**kw) -> InfillRequest:
    return InfillRequest(**{"prefix": PREFIX, "suffix": SUFFIX, "single_line": True, "max_tokens": 8, "seed": 0,
                            "language": "python", **kw})


def test_what_dgls_sends(server):
    server.default = Behaviour(reply="a + b")
    result = engine_for(server).infill(request())
    assert result.status == "ok" and result.text == "a + b"
    models, chat = server.requests
    assert (models.method, models.path) == ("GET", "/v1/models")
    assert (chat.method, chat.path) == ("POST", "/v1/chat/completions")
    assert "Authorization" not in chat.headers and "Authorization" not in models.headers
    body = chat.body
    assert body["model"] == MODEL  # the first model /v1/models lists
    (message,) = body["messages"]  # the chat layout: one user turn; the server applies the template
    assert message["role"] == "user"
    assert message["content"].endswith(PREFIX + HOLE + SUFFIX)  # the prefix and the suffix, around the gap
    assert "python" in message["content"] and "single line" in message["content"]
    assert "suffix" not in body and "prompt" not in body  # vLLM rejects suffix
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 8 + 16 and body["top_p"] == 1.0 and body["n"] == 1 and body["seed"] == 0
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert result.stats.prefix_tokens == 100 and result.stats.span_tokens == 5 and result.stats.head == "remote"


def test_a_rewrite_shows_the_old_text_and_a_named_model_skips_discovery(server):
    engine = engine_for(server, model="team-model")
    engine.infill(request(span="a - b", seed_with_span=True, single_line=False))
    (chat,) = server.requests
    assert chat.body["model"] == "team-model"
    assert chat.body["messages"][0]["content"].endswith("replace it:\na - b")


def test_streamed_drafts_grow_to_the_answer(server):
    server.default = Behaviour(reply="first + second + third", chunks=3)
    drafts: list[str] = []
    result = engine_for(server).infill(request(on_draft=drafts.append))
    assert drafts == ["first + ", "first + second +", "first + second + third"]
    assert result.text == drafts[-1]


def test_a_server_that_does_not_stream(server):
    server.default = Behaviour(kind="json", reply="a * b")
    assert engine_for(server).infill(request()).text == "a * b"


def test_api_key_goes_in_the_header_only(server, caplog):
    server.api_key = "sk-team-123"
    engine = engine_for(server, api_key_env="DGLS_TEST_KEY", environ={"DGLS_TEST_KEY": "sk-team-123"})
    assert engine.infill(request()).status == "ok"
    assert {r.headers.get("Authorization") for r in server.requests} == {"Bearer sk-team-123"}
    assert "sk-team" not in repr(engine.endpoint) + repr(engine.options) + str(engine.info())
    wrong = engine_for(server, api_key_env="DGLS_TEST_KEY", environ={"DGLS_TEST_KEY": "sk-wrong"})
    with caplog.at_level("WARNING"):
        assert wrong.infill(request()).status == "error"
    assert "HTTP 401" in caplog.text and "sk-wrong" not in caplog.text
    with pytest.raises(EngineError, match="DGLS_TEST_KEY"):
        engine_for(server, api_key_env="DGLS_TEST_KEY", environ={})


@pytest.mark.parametrize("how,expected", [
    (Behaviour(kind="status", status=500, message="CUDA out of memory"), "failed (HTTP 500: CUDA out of memory)"),
    (Behaviour(kind="status", status=400, message="max_tokens is too large"), "refused the request (HTTP 400"),
    (Behaviour(kind="status", status=429, message="slow down", headers={"Retry-After": "7"}),
     "is busy (HTTP 429: slow down); the server asks to retry after 7 s"),
    (Behaviour(kind="status", status=404, message="The model `x` does not exist."), "base URL"),
    (Behaviour(kind="status", status=502, message="Bad gateway"), "failed (HTTP 502: Bad gateway)"),
    (Behaviour(kind="drop"), "closed the connection before the reply was complete"),
    (Behaviour(kind="truncate", reply="one two three four", chunks=4), "truncated stream"),
    (Behaviour(kind="error_event", message="engine dead"), "failed mid-reply: engine dead"),
    (Behaviour(kind="garbage"), "malformed stream event"),
    (Behaviour(kind="no_choices"), "malformed reply"),
])
def test_each_failure_is_one_line_and_an_empty_answer(server, how, expected):
    server.script = [how]
    problems: list = []
    engine = engine_for(server, model="m")  # the first request on a fresh connection (a reused one is retried)
    engine.on_problem = problems.append
    result = engine.infill(request())
    assert (result.status, result.text) == ("error", "")
    (problem,) = problems
    assert expected in problem and "\n" not in problem and server.url.split("//")[1] in problem
    assert engine.infill(request()).status == "ok"  # the next request works, and says so
    assert problems == [problem, None]
    with pytest.raises(EngineError, match="HTTP|closed|truncated|malformed|mid-reply"):
        server.script = [how]
        engine_for(server, model="m", raise_errors=True).infill(request())  # the command line raises instead


def test_refused_connection_and_timeout_do_not_hang(server):
    port = server.port
    server.stop()
    refused = RemoteEngine(RemoteOptions(f"http://127.0.0.1:{port}", timeout=5.0), model="m", raise_errors=True)
    with pytest.raises(EngineError, match="connection refused"):
        refused.infill(request())
    with FakeVllm() as slow:
        slow.default = Behaviour(delay=30)  # trickles keep-alive comments: only the deadline ends it
        started = time.monotonic()
        with pytest.raises(EngineError, match="did not answer within 0.5 s"):
            engine_for(slow, timeout=0.5, model="m", raise_errors=True).infill(request())
        assert time.monotonic() - started < 10  # a hang guard, not a speed claim


def test_cancel_closes_the_connection(server):
    server.default = Behaviour(delay=30)
    cancel = threading.Event()
    engine = engine_for(server, model="m")
    threading.Timer(0.2, cancel.set).start()
    result = engine.infill(request(), cancel=cancel)
    assert result.status == "cancelled"
    (chat,) = server.chats()
    deadline = time.monotonic() + 10
    while chat.disconnected is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert chat.disconnected is not None  # the server saw the client go (vLLM then aborts the request)


def test_a_repair_is_not_sent(server):
    result = engine_for(server, model="m").infill(request(span="a +", remask=[(2, 3)]))
    assert (result.status, result.text) == ("ok", "") and server.requests == []


def test_remote_jobs_run_concurrently(server):
    """Several editors' requests go out together (the scheduler runs one job at a time for a local engine)."""
    server.default = Behaviour(delay=0.5)
    host = EngineHost()
    host.configure(Settings(engine_url=server.url, model="m").engine_key)
    scheduler = Scheduler(host)
    try:
        jobs = [scheduler.submit(f"client{i}", (f"client{i}", "doc"),
                                 lambda engine, cancel: engine.infill(request(), cancel=cancel).text) for i in range(3)]
        assert [job.future.result(20) for job in jobs] == ["a + b"] * 3
        first_done = min(r.received + r.served_ms / 1000 for r in server.chats())
        assert all(r.received < first_done for r in server.chats())  # all three were in flight at once
    finally:
        scheduler.close()
        host.close()


def test_url_policy():
    assert Endpoint.parse("http://127.0.0.1:8000").port == 8000
    assert Endpoint.parse("http://localhost:8000/v1/").base_path == ""  # vLLM's OpenAI base URL works too
    assert Endpoint.parse("https://gpu.example.com/team").base_path == "/team"
    assert Endpoint.parse("https://gpu.example.com").port == 443
    with pytest.raises(EngineError, match="unencrypted"):
        Endpoint.parse("http://gpu.example.com:8000")
    assert Endpoint.parse("http://gpu.example.com:8000", allow_http=True).host == "gpu.example.com"
    with pytest.raises(EngineError, match="user or password"):
        Endpoint.parse("https://me:secret@gpu.example.com")
    for bad in ("gpu.example.com:8000", "ftp://x", "http://[::1", ""):
        with pytest.raises(EngineError):
            Endpoint.parse(bad)
    assert RemoteOptions("https://me:secret@host/x").shown_url == "https://host/x"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    return str(cert), str(key)


def test_tls_is_verified_against_the_system_certificates(certificate, monkeypatch):
    with FakeVllm(tls=certificate, api_key="sk-1") as srv:
        options = RemoteOptions(srv.url, "KEY", timeout=5.0)
        engine = RemoteEngine(options, model="m", raise_errors=True, environ={"KEY": "sk-1"})
        with pytest.raises(EngineError, match="TLS certificate of localhost is not trusted"):
            engine.infill(request())
        assert srv.requests == []  # nothing (no code, no key) went to a server we could not verify
        monkeypatch.setenv("SSL_CERT_FILE", certificate[0])  # the system's trust store, as OpenSSL reads it
        assert engine.infill(request()).text == "a + b"
        assert srv.requests[-1].headers["Authorization"] == "Bearer sk-1"


@pytest.mark.parametrize("reply,prefix,single,expected", [
    ("```python\na + b\n```", PREFIX, True, "a + b"),
    ("return a + b", PREFIX, True, "a + b"),
    ("x = foo(1, 2)", "    x = foo(", True, "1, 2)"),
    ("a + b\nprint('more')", PREFIX, True, "a + b"),
    ("<|channel>thought\nhmm<channel|>a + b", PREFIX, True, "a + b"),
    ("for v in values:\n    total += v", "    ", False, "for v in values:\n    total += v"),
    (f"a{HOLE} + b", PREFIX, True, "a + b"),
])
def test_clean_reply(reply, prefix, single, expected):
    assert clean_reply(reply, prefix, single) == expected


def test_settings_name_the_server():
    settings, problems = Settings().merged({"dgls": {"engineUrl": "https://gpu:8000", "engineApiKeyEnv": "TEAM_KEY",
                                                     "engineAllowHttp": True, "engineTimeout": 12}})
    assert problems == []
    assert settings.remote == RemoteOptions("https://gpu:8000", "TEAM_KEY", True, 12.0)
    assert settings.engine_key[-1] == settings.remote and Settings().remote is None
    _, problems = Settings().merged({"engineAllowHttp": "yes", "engineTimeout": 0})
    assert len(problems) == 2  # wrong type, out of range: ignored with a warning
    back = Settings().with_engine_key(settings.engine_key)
    assert back.remote == settings.remote
    assert settings.merged({"engineUrl": ""})[0].remote is None  # "" clears it: the local model again


def test_connections_are_kept_alive_and_a_dropped_one_is_replaced(server):
    engine = engine_for(server)
    for _ in range(4):
        assert engine.infill(request()).status == "ok"
    assert len({r.peer for r in server.requests}) == 1  # one connection for /v1/models and four infills
    server.drop_idle = True  # the server now closes each connection after its reply
    for _ in range(3):
        assert engine.infill(request()).text == "a + b"  # the stale idle connection is replaced, once
    assert len({r.peer for r in server.requests[5:]}) == 3
    server.drop_idle = False
    server.script = [Behaviour(delay=30)]
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    assert engine.infill(request(), cancel=cancel).status == "cancelled"
    assert engine.infill(request()).status == "ok"  # a cancelled request's connection is not reused
    assert server.requests[-1].peer != server.requests[-2].peer
    engine.close()


def test_a_deadline_closes_the_request_and_keeps_the_text_so_far(server):
    server.script = [Behaviour(kind="stall", reply="a + b", chunks=2, delay=30)]
    engine = engine_for(server, model="m")
    result = engine.infill(request(deadline=time.monotonic() + 0.5))
    assert (result.status, result.text) == ("deadline", "a +")  # the first piece arrived in time
    (chat,) = server.chats()
    wait_for = time.monotonic() + 10
    while chat.disconnected is None and time.monotonic() < wait_for:
        time.sleep(0.01)
    assert chat.disconnected is not None  # the server was told (the connection closed)
