"""EngineHost with a real engine on a real checkpoint whose files change under it.

Before: a model damaged on disk was never noticed while serving, and a failed load stayed failed
until the user changed a setting; now the host reloads when the files change, keeps serving the
engine it has when that reload fails, and retries a failed load once the files are fixed.
"""

from __future__ import annotations

import shutil
import threading
import time

import pytest
from dgls.engine import EngineError

from dgls.host import EngineHost


def _wait(host: EngineHost, predicate, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate(host.state):
        assert time.monotonic() < deadline, host.state
        time.sleep(0.05)


def _use(host: EngineHost) -> object:
    engine = host.acquire(threading.Event())
    host.release(engine)
    return engine


@pytest.fixture
def model(tiny_model_dir, tmp_path):
    return shutil.copytree(tiny_model_dir, tmp_path / "m")


def test_changed_files_reload_and_a_failed_reload_keeps_serving(model, tmp_path):
    host = EngineHost()
    pristine = tmp_path / "weights"
    shutil.copy2(model / "model.safetensors", pristine)
    host.configure((str(model), "cpu", None, None, None))
    _wait(host, lambda s: s[0] == "ready")
    first = _use(host)
    (model / "model.safetensors").write_bytes(b"garbage")
    time.sleep(1.1)
    assert _use(host) is first  # the check starts a background reload; the old engine still answers
    _wait(host, lambda s: "still serving" in s[1])
    assert host.state[0] == "ready" and _use(host) is first
    shutil.copy2(pristine, model / "model.safetensors")
    time.sleep(1.1)
    _use(host)
    _wait(host, lambda s: s[1].endswith("s)"))
    assert _use(host) is not first
    host.close()


def test_a_failed_load_is_retried_once_the_files_are_fixed(model, tmp_path):
    pristine = tmp_path / "weights"
    shutil.move(model / "model.safetensors", pristine)
    host = EngineHost()
    host.configure((str(model), "cpu", None, None, None))
    _wait(host, lambda s: s[0] == "error")
    with pytest.raises(EngineError, match="no .safetensors"):
        _use(host)
    shutil.copy2(pristine, model / "model.safetensors")
    time.sleep(1.1)
    assert _use(host) is not None  # acquire saw the change, reloaded and waited for it
    assert host.state[0] == "ready"
    host.close()


def test_repeated_engine_failures_reload_it(model):
    host = EngineHost()
    host.configure((str(model), "cpu", None, None, None))
    _wait(host, lambda s: s[0] == "ready")
    first = _use(host)
    for _ in range(3):
        engine = host.acquire(threading.Event())
        host.failed(engine, RuntimeError("boom"))
        host.release(engine)
    _wait(host, lambda s: s[0] == "ready" and _peek(host) is not first)
    host.close()


def _peek(host: EngineHost) -> object:
    return host.engine


def test_a_connection_that_goes_away_frees_its_documents_caches(tiny_model_dir):
    """Before: an editor that disconnected without didClose left its documents' KV caches in the
    shared engine until LRU eviction (a suspect for the ~1 MB/min RSS growth of a 30-minute soak
    with reconnects)."""
    from dgls.engine import InfillRequest

    from dgls.connection import Shared
    from dgls.handlers import create_server
    from dgls.options import Settings

    shared = Shared(Settings(model=str(tiny_model_dir), device="cpu"))
    try:
        shared.host.configure(shared.defaults.engine_key)
        _wait(shared.host, lambda state: state[0] == "ready")
        engine = _use(shared.host)
        gone, stays = create_server(shared), create_server(shared)
        for ls in (gone, stays):
            ls.docs.open("file:///a.py", "x = 1\n", 1, "python")
            engine.infill(InfillRequest(prefix="x = ", doc_id=ls.doc_id("file:///a.py"), max_tokens=2, steps=1))
        assert {gone.doc_id("file:///a.py"), stays.doc_id("file:///a.py")} <= set(engine.cache.documents())
        gone.dispose()
        assert gone.doc_id("file:///a.py") not in engine.cache.documents()
        assert stays.doc_id("file:///a.py") in engine.cache.documents()
    finally:
        shared.close()
